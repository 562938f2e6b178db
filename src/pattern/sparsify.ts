/**
 * From gates to a binary head schedule (SPEC.md §1.3): which KV heads keep a full cache (retrieval) and which
 * stream. Never mutates the pattern (upstream adds its noise in place).
 *
 *  - { sparsity, tieBreak: "numpy-seed42" } (default): upstream's `sparsify_attention_heads` bit for bit —
 *    gates + 1e-6·U[0,1) noise from numpy's legacy MT19937 seeded with 42 (C order over [layer, kvHead]),
 *    threshold = np.quantile(noisy, sparsity) (linear method, global over all layers), retrieval = noisy >= threshold;
 *    sparsity <= 0 -> all retrieval, >= 1 -> none. Keeps retrievalCount(N, s) heads (see there for the one
 *    floating-point corner where numpy keeps one more).
 *  - { sparsity, tieBreak: "stable" }: no noise; the retrievalCount(N, s) heads with the highest gates, ties going
 *    to the lower flat index l·Hkv + h.
 *  - { threshold }: gate >= threshold (upstream's threshold mode raises TypeError, SPEC.md §8.1; this one works).
 *  - { mask }: an explicit boolean mask [layer][kvHead], checked against the pattern's shape.
 */
import { checkOneOf, DuoError } from "../errors.ts";
import { HeadSchedule } from "../schedule/schedule.ts";
import { MT19937 } from "./mt19937.ts";
import { checkPattern, type HeadPattern } from "./pattern.ts";

export const TIE_BREAKS = ["numpy-seed42", "stable"] as const;
export type TieBreak = (typeof TIE_BREAKS)[number];

export type SparsifyOptions =
  | { sparsity: number; tieBreak?: TieBreak }
  | { threshold: number }
  | { mask: readonly (readonly boolean[])[] };

const MODES = ["sparsity", "threshold", "mask"] as const;
const KEYS = [...MODES, "tieBreak"];

/** Upstream's noise seed and scale: np.random.seed(42) (benchmarks, LongBench); np.random.uniform(0, 1e-6). */
const SEED = 42;
const NOISE = 1e-6;

/**
 * How many of `n` heads stay retrieval heads at sparsity `s`: n for s <= 0, 0 for s >= 1, else n − ⌈(n−1)·s⌉ in
 * float64 (the linear quantile sits at virtual index (n−1)·s and `>=` keeps every head above it). The numpy path
 * keeps exactly this many except in one corner: when (n−1)·s lands a few ulps above an integer k
 * (26 heads, s = 0.28: 7.000000000000001), numpy's interpolation moves only ~1e-15 of a gap above element k and may
 * round onto it, keeping one head more — depending on the data. No such corner exists for 256 or 1024 heads at
 * any s = k/100.
 */
export function retrievalCount(n: number, s: number): number {
  if (s <= 0) return n;
  if (s >= 1) return 0;
  return n - Math.ceil((n - 1) * s);
}

/** np.quantile(values, q) with the default "linear" method, including numpy's two-sided lerp. */
function quantileLinear(values: Float64Array, q: number): number {
  const sorted = Float64Array.from(values).sort();
  const n = sorted.length;
  const index = (n - 1) * q;
  if (index >= n - 1) return sorted[n - 1]!;
  const prev = Math.floor(index);
  const gamma = index - prev;
  const a = sorted[prev]!, b = sorted[prev + 1]!;
  const diff = b - a;
  return gamma >= 0.5 ? b - diff * (1 - gamma) : a + diff * gamma;
}

function numpySeed42(gates: Float64Array, s: number): Uint8Array {
  const rng = new MT19937(SEED);
  // np.random.uniform(0, 1e-6) = 0 + (1e-6 - 0)·random_sample(); then x += noise.
  const x = Float64Array.from(gates, (g) => g + NOISE * rng.randomSample());
  const threshold = s >= 1 ? 2 : s <= 0 ? -1 : quantileLinear(x, s);
  return Uint8Array.from(x, (v) => (v >= threshold ? 1 : 0));
}

function stable(gates: Float64Array, s: number): Uint8Array {
  const order = Array.from(gates.keys()).sort((i, j) => gates[j]! - gates[i]! || i - j);
  const out = new Uint8Array(gates.length);
  for (const i of order.slice(0, retrievalCount(gates.length, s))) out[i] = 1;
  return out;
}

function toSchedule(flat: Uint8Array, p: HeadPattern): HeadSchedule {
  return HeadSchedule.fromMask(Array.from({ length: p.numLayers }, (_, l) =>
    Array.from(flat.subarray(l * p.numKvHeads, (l + 1) * p.numKvHeads), (v) => v === 1)));
}

export function sparsify(pattern: HeadPattern, options: SparsifyOptions): HeadSchedule {
  checkPattern(pattern);
  if (options === null || typeof options !== "object") {
    throw new DuoError("INVALID_ARGUMENT", "sparsify options must be { sparsity, tieBreak? }, { threshold } or { mask }");
  }
  const o = options as Record<string, unknown>;
  const unknown = Object.keys(o).find((k) => !KEYS.includes(k));
  if (unknown !== undefined) {
    throw new DuoError("INVALID_ARGUMENT", `unknown sparsify option "${unknown}"; valid options: ${KEYS.join(", ")}`);
  }
  const modes = MODES.filter((k) => o[k] !== undefined);
  if (modes.length !== 1) {
    throw new DuoError("INVALID_ARGUMENT", `sparsify needs exactly one of sparsity, threshold or mask; got ${modes.length ? modes.join(" and ") : "none"}`);
  }
  if (o["tieBreak"] !== undefined && modes[0] !== "sparsity") {
    throw new DuoError("INVALID_ARGUMENT", "tieBreak only applies to { sparsity }");
  }
  if ("mask" in o && o["mask"] !== undefined) {
    const schedule = HeadSchedule.fromMask(o["mask"] as boolean[][]);
    schedule.checkShape(pattern.numLayers, pattern.numKvHeads, "the head mask");
    return schedule;
  }
  if (modes[0] === "threshold") {
    const t = o["threshold"];
    if (typeof t !== "number" || !Number.isFinite(t)) {
      throw new DuoError("INVALID_ARGUMENT", `threshold must be a finite number (gates >= threshold are retrieval heads; gates lie in [0, 1]), got ${String(t)}`);
    }
    return toSchedule(Uint8Array.from(pattern.gates, (g) => (g >= t ? 1 : 0)), pattern);
  }
  const s = o["sparsity"];
  if (typeof s !== "number" || !(s >= 0 && s <= 1)) {
    throw new DuoError("INVALID_ARGUMENT", `sparsity must be a number in [0, 1] (the fraction of KV heads that stream), got ${String(s)}`);
  }
  const tieBreak = checkOneOf("tieBreak", o["tieBreak"] ?? "numpy-seed42", TIE_BREAKS);
  return toSchedule(tieBreak === "stable" ? stable(pattern.gates, s) : numpySeed42(pattern.gates, s), pattern);
}
