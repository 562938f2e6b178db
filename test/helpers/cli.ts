/** Run the real `duo` CLI as a child process of the runtime the tests run in (node via tsx, bun, deno). */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../..", import.meta.url).href);
// deno-lint-ignore no-explicit-any
const g = globalThis as any;

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[]): Promise<CliResult> {
  return runScript("src/cli/main.ts", args);
}

/** Run a TypeScript program of the repo (path relative to its root) in the runtime the tests run in. */
export function runScript(path: string, args: string[] = []): Promise<CliResult> {
  const [cmd, pre] = g.Deno ? [g.Deno.execPath(), ["run", "-A", path]]
    : g.Bun ? [process.execPath, [path]]
    : [process.execPath, ["--import", "tsx", path]];
  return new Promise((resolve) => {
    execFile(cmd, [...pre, ...args], { cwd: root, env: { ...process.env, NO_COLOR: "1" } }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}
