/**
 * `duo bench accuracy`: how far the attention output of an int8 or int4 cache (src/quant.ts) is from a bf16 cache (the
 * upstream models' dtype) and from f32, for retrieval heads (all `context` tokens) and streaming heads (sinks + recent
 * window) of one layer. Two kinds of data:
 *  - "random": K, V and q i.i.d. standard normal;
 *  - "outliers": keys as real post-RoPE keys look to per-token quantizers — heavy tails (Student t, 3 degrees of
 *    freedom) and a few outlier channels with a large scale and offset (the same channels in every token), which
 *    stretch each token's range and so cost the other channels their resolution (int4's per-token min/max groups).
 * Each cache gets the same tokens (fill of `context` tokens, then `steps` decode steps, whose outputs are compared).
 * Errors: relative L2 error ||o - o_ref|| / ||o_ref|| over all compared outputs, and the cosine of each query head's
 * output vector with its reference (mean and minimum).
 */
import { createBackend } from "../../backend/registry.ts";
import type { Backend } from "../../backend/types.ts";
import type { KvDtype } from "../../dtype.ts";
import { DuoAttention } from "../../engine/duo.ts";
import { getPreset } from "../../schedule/presets.ts";
import type { ModelShape } from "../../shape.ts";
import { write } from "../io.ts";
import type { BenchOptions } from "./options.ts";

export const ACCURACY_DTYPES: readonly KvDtype[] = ["bf16", "int8", "int4"];
export const DATA_KINDS = ["random", "outliers"] as const;
export type DataKind = (typeof DATA_KINDS)[number];
export type HeadKind = "retrieval" | "streaming";

export interface AccuracyRow {
  data: DataKind;
  dtype: KvDtype;
  heads: HeadKind;
  /** against the bf16 cache */
  relErr: number;
  cosMean: number;
  cosMin: number;
  /** against the f32 cache */
  relErrF32: number;
}

export interface AccuracyOptions {
  shape: ModelShape;
  context: number;
  steps: number;
  sinkSize: number;
  recentSize: number;
  seed?: number;
}

/** Outlier channels of the "outliers" keys: every 16th channel, scale 10 and offset 5 (a few of D, as observed). */
const OUTLIER_EVERY = 16, OUTLIER_SCALE = 10, OUTLIER_OFFSET = 5, T_DOF = 3;

/** Seeded standard normals (mulberry32 + Box-Muller). */
function normals(seed: number): () => number {
  let a = seed >>> 0;
  const u = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

/** [tokens, heads, D] of one kind: q and V are always normal; K follows `kind`. */
export function makeTensor(kind: DataKind | "normal", tokens: number, heads: number, D: number, seed: number): Float32Array {
  const n = normals(seed), x = new Float32Array(tokens * heads * D);
  for (let i = 0; i < x.length; i++) {
    if (kind !== "outliers") { x[i] = n(); continue; }
    let chi2 = 0;
    for (let j = 0; j < T_DOF; j++) chi2 += n() ** 2;
    const t = n() / Math.sqrt(chi2 / T_DOF), d = i % D;
    x[i] = d % OUTLIER_EVERY === 0 ? OUTLIER_OFFSET + OUTLIER_SCALE * t : t;
  }
  return x;
}

/** The decode outputs [steps][Hq·D] of one cache dtype over the same tokens. */
async function outputs(backend: Backend, o: AccuracyOptions, dtype: KvDtype, mask: boolean[], data: DataKind, seed: number): Promise<Float32Array[]> {
  const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = o.shape;
  const shape = { numLayers: 1, numHeads: Hq, numKvHeads: Hkv, headDim: D };
  const duo = await DuoAttention.create({ shape, heads: [mask], sinkSize: o.sinkSize, recentSize: o.recentSize, kvDtype: dtype, backend, maxContext: o.context + o.steps });
  const seq = duo.sequence();
  try {
    for (let t0 = 0, chunk = 1024; t0 < o.context; t0 += chunk) {
      const n = Math.min(chunk, o.context - t0);
      await seq.fill(0, makeTensor(data, n, Hkv, D, seed + t0), makeTensor("normal", n, Hkv, D, seed + 7919 + t0));
    }
    const out: Float32Array[] = [];
    for (let s = 0; s < o.steps; s++) {
      const p = o.context + s;
      out.push(await seq.attend(0, makeTensor("normal", 1, Hq, D, seed + 31 * p + 1), makeTensor(data, 1, Hkv, D, seed + p), makeTensor("normal", 1, Hkv, D, seed + 7919 + p)));
    }
    return out;
  } finally {
    seq.dispose();
    await duo.dispose();
  }
}

/** relErr, mean and min cosine of `got` against `want` over the query heads in `qHeads`. */
export function compare(got: Float32Array[], want: Float32Array[], qHeads: number[], D: number): { relErr: number; cosMean: number; cosMin: number } {
  let e2 = 0, r2 = 0, cosSum = 0, cosMin = Infinity, n = 0;
  got.forEach((g, s) => {
    const w = want[s]!;
    for (const h of qHeads) {
      let dot = 0, gg = 0, ww = 0;
      for (let d = h * D; d < (h + 1) * D; d++) {
        e2 += (g[d]! - w[d]!) ** 2;
        r2 += w[d]! ** 2;
        dot += g[d]! * w[d]!;
        gg += g[d]! ** 2;
        ww += w[d]! ** 2;
      }
      const cos = gg > 0 && ww > 0 ? dot / Math.sqrt(gg * ww) : gg === ww ? 1 : 0;
      cosSum += cos;
      cosMin = Math.min(cosMin, cos);
      n++;
    }
  });
  return { relErr: Math.sqrt(e2 / r2), cosMean: cosSum / n, cosMin };
}

/** Every (data, dtype, head kind) row: half the KV heads are retrieval heads, half streaming. */
export async function accuracy(backend: Backend, o: AccuracyOptions): Promise<AccuracyRow[]> {
  const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = o.shape, G = Hq / Hkv;
  const mask = Array.from({ length: Hkv }, (_, h) => h < Math.ceil(Hkv / 2));
  const qHeads = (kind: HeadKind) => Array.from({ length: Hq }, (_, q) => q).filter((q) => mask[Math.floor(q / G)] === (kind === "retrieval"));
  const rows: AccuracyRow[] = [];
  for (const [i, data] of DATA_KINDS.entries()) {
    const seed = (o.seed ?? 1) * 1000003 + i * 100003;
    const f32 = await outputs(backend, o, "f32", mask, data, seed), bf16 = await outputs(backend, o, "bf16", mask, data, seed);
    for (const dtype of ACCURACY_DTYPES) {
      const got = dtype === "bf16" ? bf16 : await outputs(backend, o, dtype, mask, data, seed);
      for (const heads of ["retrieval", "streaming"] as const) {
        const vsBf16 = compare(got, bf16, qHeads(heads), D);
        rows.push({ data, dtype, heads, ...vsBf16, relErrF32: compare(got, f32, qHeads(heads), D).relErr });
      }
    }
  }
  return rows;
}

/** The table: one row per (data, dtype, heads). */
export function accuracyReport(o: AccuracyOptions, rows: readonly AccuracyRow[]): string {
  const head = ["data", "KV", "heads", "rel. err vs bf16", "cos mean", "cos min", "rel. err vs f32"];
  const body = rows.map((r) => [r.data, r.dtype, r.heads, r.relErr.toExponential(2), r.cosMean.toFixed(6), r.cosMin.toFixed(6), r.relErrF32.toExponential(2)]);
  const all = [head, ...body], w = head.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  return `attention-output error of quantized caches: one layer of ${o.shape.numHeads} query / ${o.shape.numKvHeads} KV heads, D = ${o.shape.headDim}, half of them retrieval heads; ` +
    `${o.context} tokens filled, ${o.steps} decode steps compared; S = ${o.sinkSize}, R = ${o.recentSize}\n` +
    `("outliers": Student-t(${T_DOF}) keys with every ${OUTLIER_EVERY}th channel x${OUTLIER_SCALE} + ${OUTLIER_OFFSET}; bf16 against itself is 0 by construction)\n` +
    all.map((r) => r.map((x, i) => (i < 3 ? x.padEnd(w[i]!) : x.padStart(w[i]!))).join("  ").trimEnd()).join("\n") + "\n";
}

/** `duo bench accuracy`: --shape (default llama-3-8b), --contexts (the first; default 4096), --backend (default wasm). */
export async function accuracyCommand(o: BenchOptions): Promise<number> {
  const shape = getPreset(o.shape ?? "llama-3-8b");
  const backend = await createBackend(o.backend === "auto" ? "wasm" : o.backend, { threads: o.threads ?? 0 });
  try {
    const opts: AccuracyOptions = { shape, context: o.contexts?.[0] ?? 4096, steps: 8, sinkSize: 64, recentSize: 256 };
    const rows = await accuracy(backend, opts);
    write(o.json ? rows.map((r) => JSON.stringify({ kind: "accuracy", backend: backend.name, shape: shape.name, context: opts.context, ...r })).join("\n") + "\n" : accuracyReport(opts, rows));
    return 0;
  } finally {
    await backend.dispose();
  }
}
