#!/usr/bin/env -S deno run -A
/**
 * `duo <command>`: the command-line entry. Each command lives in its own module, loaded on demand.
 * Errors print as one line ("duo <cmd>: <message>") and exit with status 1; usage errors exit with 2.
 */
import { DuoError } from "../errors.ts";
import { enableRelaxedSimd } from "../runtime.ts";
import { exit, write } from "./io.ts";

type CommandMain = (argv: string[]) => Promise<number | void>;

const COMMANDS: Record<string, { summary: string; load: () => Promise<CommandMain> }> = {
  bench: { summary: "attention benchmarks: full vs DuoAttention, machine ceilings, peers; --suite paper writes a report with plots", load: async () => (await import("./bench.ts")).main },
  demo: { summary: "DuoAttention vs full attention on a Llama-3-8B-shaped stack: prefill, decode, memory, correctness", load: async () => (await import("./demo.ts")).main },
  generate: { summary: "generate text with a Llama/Mistral/Qwen2 model (full attention or DuoAttention)", load: async () => (await import("./generate.ts")).main },
  identify: { summary: "find a model's retrieval heads (gate optimisation or a forward-only score); writes a head pattern", load: async () => (await import("./identify.ts")).main },
  info: { summary: "runtime, capabilities and which backends are usable here", load: async () => (await import("./info.ts")).main },
  niah: { summary: "needle-in-a-haystack: full attention vs DuoAttention over lengths x depths (JSON + SVG heatmap)", load: async () => (await import("./niah.ts")).main },
  pattern: { summary: "load a head pattern, choose retrieval heads, show the schedule and its KV memory", load: async () => (await import("./pattern.ts")).main },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  return [
    "usage: duo <command> [options]   (duo <command> --help for its options)",
    "",
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
  ].join("\n");
}

export async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === "--help" || cmd === "-h" || cmd === "help") {
    write(usage() + "\n");
    return cmd ? 0 : 2;
  }
  const entry = COMMANDS[cmd];
  if (!entry) {
    write(`duo: unknown command "${cmd}"\n${usage()}\n`, "stderr");
    return 2;
  }
  await enableRelaxedSimd(); // before any wasm is compiled: the FMA kernels on Node 20 too (runtime.ts)
  try {
    return (await (await entry.load())(rest)) ?? 0;
  } catch (e) {
    if (e instanceof DuoError) {
      write(`duo ${cmd}: ${e.message}\n`, "stderr");
      return e.code === "INVALID_ARGUMENT" ? 2 : 1;
    }
    throw e;
  }
}

// deno-lint-ignore no-explicit-any
const g = globalThis as any;
const isMain = (import.meta as { main?: boolean }).main ?? (g.process?.argv?.[1] && import.meta.url.endsWith(g.process.argv[1].replace(/\\/g, "/")));
if (isMain) exit(await run(g.Deno ? g.Deno.args : g.process.argv.slice(2)));
