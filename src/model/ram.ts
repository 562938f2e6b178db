/**
 * Host RAM for a model on the native kernels: weights and the KV cache share one budget (LoadOptions.memory, default
 * the RAM available now). A model is checked against it before any tensor is read, so a 16 GB checkpoint that cannot
 * fit is refused in milliseconds rather than after minutes of reading and a swap storm.
 */
import { DuoError } from "../errors.ts";
import { exists, readText } from "../runtime.ts";
import { formatBytes } from "../report/table.ts";

/** Bytes of RAM the kernel says a new allocation can take: /proc/meminfo MemAvailable (page cache it may drop
 *  counts as available), else os.freemem() (through process.getBuiltinModule: no node: import, so the browser
 *  bundle stays free of them), else unbounded. */
export async function availableMemory(): Promise<{ bytes: number; source: string }> {
  if (await exists("/proc/meminfo")) {
    const m = /^MemAvailable:\s+(\d+)\s*kB/m.exec(await readText("/proc/meminfo"));
    if (m) return { bytes: Number(m[1]) * 1024, source: "MemAvailable in /proc/meminfo" };
  }
  // deno-lint-ignore no-explicit-any
  const os = (globalThis as any).process?.getBuiltinModule?.("node:os") as { freemem(): number } | undefined;
  if (os) return { bytes: os.freemem(), source: "os.freemem()" };
  return { bytes: Infinity, source: "unknown: no /proc/meminfo or os.freemem() in this runtime" };
}

export interface MemoryNeed {
  /** what is being loaded (a model directory or file), named in the refusal */
  what: string;
  weights: number;
  /** the KV cache the model must be able to hold (at maxContext, or one prefill chunk) */
  kv: number;
  /** the largest tensor and its file, named in the refusal */
  largest?: { name: string; file: string; bytes: number };
}

/** Throw CAPACITY unless weights + KV fit in `budget` bytes; `source` says where the budget came from. */
export function checkFits(need: MemoryNeed, budget: number, source: string): void {
  const total = need.weights + need.kv;
  if (total <= budget) return;
  const largest = need.largest ? ` (largest tensor "${need.largest.name}" in ${need.largest.file}: ${formatBytes(need.largest.bytes)})` : "";
  throw new DuoError("CAPACITY", `${need.what}: the model needs ${total} bytes (${formatBytes(total)}: weights ${formatBytes(need.weights)}${largest} + KV budget ${formatBytes(need.kv)}), but ${budget} bytes (${formatBytes(budget)}) are available (${source}); nothing was read. Free memory, lower maxContext, or load smaller weights`);
}
