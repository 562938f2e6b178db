/** Terminal output for the CLI, the same in every runtime. */
// deno-lint-ignore no-explicit-any
const g = globalThis as any;
const encoder = new TextEncoder();

export function write(text: string, stream: "stdout" | "stderr" = "stdout"): void {
  if (g.Deno) (stream === "stdout" ? g.Deno.stdout : g.Deno.stderr).writeSync(encoder.encode(text));
  else if (g.process) g.process[stream].write(text);
  else (stream === "stdout" ? console.log : console.error)(text.replace(/\n$/, ""));
}

export function isTTY(stream: "stdout" | "stderr" = "stderr"): boolean {
  if (g.Deno) return (stream === "stdout" ? g.Deno.stdout : g.Deno.stderr).isTerminal?.() ?? false;
  return Boolean(g.process?.[stream]?.isTTY);
}

export function exit(code: number): never {
  if (g.Deno) g.Deno.exit(code);
  g.process.exitCode = code;
  // Let pending writes flush; workers are unref'd by their owners, so the process ends by itself.
  g.process.exit(code);
  throw new Error("unreachable");
}
