/**
 * `duo bench capacity`: how many tokens of context fit in one memory budget for full attention and DuoAttention, with
 * a bf16 cache and with an int4 cache (src/quant.ts), at one model shape (default Llama-3-8B with its published
 * pattern). Each of the four is filled for real, all layers, until the backend answers CAPACITY (capacity.ts), on a
 * wasm backend whose memory is limited to the budget. Beside them, the same count as a formula for whole GPUs: the
 * KV bytes left after the weights, divided by the bytes one more token costs — next to the paper's KV-capacity
 * figure (SPEC.md §6.3: 0.52M BF16 full, 1.84M W8A8 + KV4 full, 3.30M with DuoAttention, A100-80GB).
 */
import { createBackend } from "../../backend/registry.ts";
import { MAX_SHARD_BYTES } from "../../backend/wasm.ts";
import type { KvDtype } from "../../dtype.ts";
import { DuoError } from "../../errors.ts";
import { freeMemory, runtime } from "../../runtime.ts";
import type { ModelPreset } from "../../schedule/presets.ts";
import { kvBytes } from "../../schedule/kv.ts";
import { HeadSchedule } from "../../schedule/schedule.ts";
import { capacity, type CapacityResult } from "./capacity.ts";
import type { ShapeCase } from "./cases.ts";
import type { Mode } from "./decode.ts";
import type { Harness } from "./harness.ts";
import { resolveCases } from "./cases.ts";
import type { BenchOptions } from "./options.ts";
import { isTTY, write } from "../io.ts";

/** The four caches compared, in table order. */
export const CAPACITY_CACHES: readonly { mode: Mode; dtype: KvDtype }[] = [
  { mode: "full", dtype: "bf16" }, { mode: "duo", dtype: "bf16" }, { mode: "full", dtype: "int4" }, { mode: "duo", dtype: "int4" },
];
/** What the default budget leaves to the rest of the machine. */
export const FREE_MARGIN = 1 << 30;

export interface BudgetRow {
  mode: Mode;
  dtype: KvDtype;
  result: CapacityResult;
}

/** The budget: `memory` when given, else the OS's available memory minus a margin. */
export async function capacityBudget(memory: number | undefined): Promise<number> {
  if (memory !== undefined) return memory;
  const free = await freeMemory();
  if (free === null) throw new DuoError("INVALID_ARGUMENT", "this runtime cannot tell how much memory is free: give the budget with --memory (e.g. --memory 2G)");
  if (free <= FREE_MARGIN + (64 << 20)) throw new DuoError("CAPACITY", `only ${free} bytes are free, less than the ${FREE_MARGIN}-byte margin plus 64 MiB; give a small --memory`);
  return free - FREE_MARGIN;
}

/**
 * Fill each of the four caches until CAPACITY in `budget` bytes: a wasm backend of ceil(budget / 4 GiB) shards
 * (workers beyond one), each limited to its share.
 */
export async function fillBudget(c: ShapeCase, budget: number, note: (text: string) => void): Promise<BudgetRow[]> {
  const shards = Math.ceil(budget / MAX_SHARD_BYTES);
  const backend = await createBackend("wasm", { threads: shards > 1 ? shards : 0, memoryLimit: Math.floor(budget / shards) });
  const rt = runtime();
  const h: Harness = {
    backend, base: { backend: backend.name, runtime: `${rt.name} ${rt.version}`, threads: backend.shards },
    ceilings: null, budgetMs: 0, records: [], emit: () => {}, note,
  };
  try {
    const rows: BudgetRow[] = [];
    for (const { mode, dtype } of CAPACITY_CACHES) rows.push({ mode, dtype, result: await capacity(h, c, dtype, mode, true) });
    return rows;
  } finally {
    await backend.dispose();
  }
}

/** Parameters of a Llama-family model of this shape (embeddings and LM head untied, norms ignored). */
export function modelParams(p: ModelPreset): number {
  const h = p.hiddenSize, kv = p.numKvHeads * p.headDim, q = p.numHeads * p.headDim;
  return p.numLayers * (h * q * 2 + h * kv * 2 + 3 * h * p.intermediateSize) + 2 * p.vocabSize * h;
}

/** A GPU of the formula rows: its memory in bytes, as the cards report it. */
export const GPUS: readonly { name: string; bytes: number }[] = [
  { name: "80 GB (A100/H100: 81920 MiB)", bytes: 80 * 2 ** 30 },
  { name: "141 GB (H200: 141e9 B)", bytes: 141e9 },
];

export interface FormulaRow {
  gpu: string;
  mode: Mode;
  dtype: KvDtype;
  weightBits: number;
  /** KV bytes per token once the streaming windows are full, and the constant (the rings) */
  perToken: number;
  constant: number;
  tokens: number;
}

/** tokens = (GPU − weights − constant) / perToken, per GPU and cache; weights at 16 bits for bf16 KV (the paper's BF16
 *  row), 8 bits for int4 KV (W8A8 + KV4). Activations and workspace are left out: an upper bound. */
export function formulaRows(c: ShapeCase): FormulaRow[] {
  const params = modelParams(c.shape), window = c.sinkSize + c.recentSize, full = HeadSchedule.fromMask(c.schedule.mask.map((r) => r.map(() => true)));
  const out: FormulaRow[] = [];
  for (const gpu of GPUS) {
    for (const { mode, dtype } of CAPACITY_CACHES) {
      const s = mode === "full" ? full : c.schedule, o = { headDim: c.shape.headDim, sinkSize: c.sinkSize, recentSize: c.recentSize, dtype };
      const perToken = kvBytes(s, { ...o, context: window + 1 }) - kvBytes(s, { ...o, context: window });
      const constant = kvBytes(s, { ...o, context: window }) - perToken * window;
      const weightBits = dtype === "bf16" ? 16 : 8;
      out.push({ gpu: gpu.name, mode, dtype, weightBits, perToken, constant, tokens: Math.max(0, Math.floor((gpu.bytes - (params * weightBits) / 8 - constant) / perToken)) });
    }
  }
  return out;
}

/** The paper's KV-capacity figure (Llama-3-8B, A100-80GB; SPEC.md §6.3), by cache. */
export const PAPER_CAPACITY: Readonly<Record<string, string>> = { "full bf16": "0.52M", "duo bf16": "-", "full int4": "1.84M", "duo int4": "3.30M" };

const M = (n: number) => `${(n / 1e6).toFixed(2)}M`;
const MiB = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

function table(head: string[], rows: string[][]): string {
  const all = [head, ...rows], w = head.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  return all.map((r) => r.map((x, i) => (i === 0 ? x.padEnd(w[i]!) : x.padStart(w[i]!))).join("  ").trimEnd()).join("\n") + "\n";
}

/** The report: filled tokens per cache and × full bf16, the target line, then the formula rows. */
export function budgetReport(c: ShapeCase, budget: number, rows: readonly BudgetRow[], formula: readonly FormulaRow[]): string {
  const base = rows.find((r) => r.mode === "full" && r.dtype === "bf16")?.result.filled ?? null;
  const filled = rows.map((r) => [
    `${r.mode === "full" ? "full" : "Duo"} ${r.dtype}`, `${(r.result.bytesPerToken / 1024).toFixed(1)} KiB`, String(r.result.tokens),
    String(r.result.filled ?? "-"), base && r.result.filled ? `${(r.result.filled / base).toFixed(2)}x` : "-",
  ]);
  const duo4 = rows.find((r) => r.mode === "duo" && r.dtype === "int4")?.result.filled ?? null;
  const retrieval = c.schedule.retrievalHeads / (c.schedule.numLayers * c.schedule.numKvHeads);
  const target = c.shape.name === "llama-2-7b" ? 12 : 7;
  const ratio = base && duo4 ? duo4 / base : null;
  const formulaTable = table(
    ["GPU", "cache", "weights", "KV B/token", "constant", "tokens", "paper (A100-80GB)"],
    formula.map((f) => {
      const key = `${f.mode} ${f.dtype}`;
      return [f.gpu, `${f.mode === "full" ? "full" : "Duo"} ${f.dtype}`, `${f.weightBits}-bit`, String(f.perToken), MiB(f.constant), M(f.tokens), f.gpu.startsWith("80") ? PAPER_CAPACITY[key]! : "-"];
    }),
  );
  return [
    `capacity in ${MiB(budget)} (${c.shape.name}, ${c.source}; retrieval fraction ${retrieval.toFixed(3)}, S = ${c.sinkSize}, R = ${c.recentSize}): every layer filled until the backend answered CAPACITY`,
    table(["cache", "bytes/token", "computed tokens", "filled tokens", "x full bf16"], filled),
    ratio === null ? "" : `target: Duo int4 holds >= ${target}x the tokens of full bf16 in the same memory: ${ratio.toFixed(2)}x, ${ratio >= target ? "met" : "NOT met"}\n`,
    `formula for whole GPUs: tokens = (memory - weights - constant) / (KV bytes per token), weights = ${(modelParams(c.shape) / 1e9).toFixed(2)}B parameters at 16 bits`,
    `(bf16 KV, the paper's BF16 row) or 8 bits (int4 KV, W8A8 + KV4); activations, workspace and upstream's full-cache dequantization buffers`,
    `(~12.6 GiB at 3.3M, SPEC.md §4.5) are left out, so these are upper bounds beside the paper's measured figure:`,
    formulaTable,
  ].join("\n");
}

/** `duo bench capacity`: --memory (default free memory − 1 GiB), --shape (default llama-3-8b), --pattern, --sparsity. */
export async function capacityCommand(o: BenchOptions): Promise<number> {
  const budget = await capacityBudget(o.memory);
  const cases = await resolveCases({ shape: o.shape ?? (o.pattern ? undefined : "llama-3-8b"), pattern: o.pattern, sparsity: o.sparsity });
  const tty = isTTY("stderr");
  for (const c of cases) {
    const rows = await fillBudget(c, budget, (text) => write(tty ? `\r\x1b[K  ${text}` : `  ${text}\n`, "stderr"));
    if (tty) write("\r\x1b[K", "stderr");
    const formula = formulaRows(c);
    if (o.json) {
      for (const r of rows) write(JSON.stringify({ kind: "capacity-budget", shape: c.shape.name, budget, mode: r.mode, kvDtype: r.dtype, bytesPerToken: r.result.bytesPerToken, computed: r.result.tokens, filled: r.result.filled }) + "\n");
      for (const f of formula) write(JSON.stringify({ kind: "capacity-formula", shape: c.shape.name, ...f }) + "\n");
    } else write(budgetReport(c, budget, rows, formula) + "\n");
  }
  return 0;
}
