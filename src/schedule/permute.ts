/**
 * Head reordering of a layer's attention weights (SPEC.md §2), done once at load time so that retrieval heads are
 * a contiguous slice [0, nRet) of the head axis: permute q_proj rows in blocks of G·D, k_proj / v_proj rows in
 * blocks of D, o_proj columns in blocks of G·D, and the q/k/v biases like their rows. The o_proj bias lives in the
 * output (hidden) space and is never permuted (upstream permutes it too, a bug: SPEC.md §2, §8.10).
 * Attention is per head and o_proj sums over heads, so the layer computes the same function afterwards.
 * Weights are row-major Float32Array [out, in] (PyTorch nn.Linear layout). Inputs are never modified.
 */
import { DuoError } from "../errors.ts";
import { checkShape, type ModelShape } from "../shape.ts";

/** One layer's attention projections, row-major [out, in]; hidden = the model's hidden size. */
export interface AttentionWeights {
  /** q_proj [Hq·D, hidden] */
  q: Float32Array;
  /** k_proj [Hkv·D, hidden] */
  k: Float32Array;
  /** v_proj [Hkv·D, hidden] */
  v: Float32Array;
  /** o_proj [hidden, Hq·D] */
  o: Float32Array;
  /** [Hq·D] (Qwen-style models) */
  qBias?: Float32Array;
  /** [Hkv·D] */
  kBias?: Float32Array;
  /** [Hkv·D] */
  vBias?: Float32Array;
  /** [hidden]; passed through unchanged */
  oBias?: Float32Array;
}

/** Throws unless `perm` holds each of 0..n−1 exactly once. */
export function checkPermutation(perm: ArrayLike<number>, n: number): void {
  const seen = new Uint8Array(n);
  let ok = perm.length === n;
  for (let i = 0; ok && i < n; i++) {
    const h = perm[i]!;
    ok = Number.isInteger(h) && h >= 0 && h < n && seen[h] === 0;
    seen[h] = 1;
  }
  if (!ok) {
    throw new DuoError("INVALID_ARGUMENT", `a head permutation must list each of the ${n} KV heads 0..${n - 1} exactly once, got [${Array.from(perm).join(", ")}]`);
  }
}

/** The inverse permutation: if perm maps new position → original head, the result maps original head → new position. */
export function invertPermutation(perm: ArrayLike<number>): Int32Array {
  checkPermutation(perm, perm.length);
  const inv = new Int32Array(perm.length);
  for (let i = 0; i < perm.length; i++) inv[perm[i]!] = i;
  return inv;
}

/** Rows of a row-major [rows, cols] matrix in blocks of `block` rows: output block i = input block perm[i]. */
export function permuteRowBlocks(w: Float32Array, cols: number, perm: ArrayLike<number>, block: number): Float32Array {
  const size = block * cols;
  checkLength("matrix", w.length, perm.length * size, `${perm.length} blocks of ${block} rows x ${cols} columns`);
  const out = new Float32Array(w.length);
  for (let i = 0; i < perm.length; i++) out.set(w.subarray(perm[i]! * size, (perm[i]! + 1) * size), i * size);
  return out;
}

/** Columns of a row-major [rows, cols] matrix in blocks of `block` columns: output block i = input block perm[i]. */
export function permuteColumnBlocks(w: Float32Array, cols: number, perm: ArrayLike<number>, block: number): Float32Array {
  checkLength("matrix columns", cols, perm.length * block, `${perm.length} blocks of ${block} columns`);
  if (w.length % cols !== 0) throw new DuoError("SHAPE_MISMATCH", `matrix has ${w.length} elements, not a multiple of ${cols} columns`);
  const out = new Float32Array(w.length);
  for (let r = 0; r < w.length; r += cols) {
    for (let i = 0; i < perm.length; i++) {
      const from = r + perm[i]! * block;
      out.set(w.subarray(from, from + block), r + i * block);
    }
  }
  return out;
}

function checkLength(what: string, got: number, want: number, form: string): void {
  if (got !== want) throw new DuoError("SHAPE_MISMATCH", `${what} has ${got} elements; expected ${want} (${form})`);
}

/**
 * Reorder one layer's weights by `perm` (new position → original KV head, e.g. HeadSchedule.permutation[layer]).
 * Returns new arrays (oBias is the same array: it is not permuted).
 */
export function permuteAttentionWeights(w: AttentionWeights, perm: ArrayLike<number>, shape: ModelShape): AttentionWeights {
  const G = checkShape(shape);
  const { numKvHeads: Hkv, headDim: D } = shape;
  checkPermutation(perm, Hkv);
  const qRows = shape.numHeads * D, kvRows = Hkv * D;
  if (!(w?.q instanceof Float32Array) || w.q.length % qRows !== 0 || w.q.length === 0) {
    throw new DuoError("SHAPE_MISMATCH", `q_proj must be a Float32Array [numHeads·headDim = ${qRows}, hidden]`);
  }
  const hidden = w.q.length / qRows;
  for (const [name, a, n] of [["k_proj", w.k, kvRows * hidden], ["v_proj", w.v, kvRows * hidden], ["o_proj", w.o, hidden * qRows],
    ["q bias", w.qBias, qRows], ["k bias", w.kBias, kvRows], ["v bias", w.vBias, kvRows], ["o bias", w.oBias, hidden]] as const) {
    const optional = name.endsWith("bias");
    if ((a === undefined && !optional) || (a !== undefined && !(a instanceof Float32Array))) {
      throw new DuoError("SHAPE_MISMATCH", `${name} must be a Float32Array of ${n} elements`);
    }
    if (a) checkLength(name, a.length, n, `hidden = ${hidden}, numHeads = ${shape.numHeads}, numKvHeads = ${Hkv}, headDim = ${D}`);
  }
  const out: AttentionWeights = {
    q: permuteRowBlocks(w.q, hidden, perm, G * D),
    k: permuteRowBlocks(w.k, hidden, perm, D),
    v: permuteRowBlocks(w.v, hidden, perm, D),
    o: permuteColumnBlocks(w.o, qRows, perm, G * D),
  };
  if (w.qBias) out.qBias = permuteRowBlocks(w.qBias, 1, perm, G * D);
  if (w.kBias) out.kBias = permuteRowBlocks(w.kBias, 1, perm, D);
  if (w.vBias) out.vBias = permuteRowBlocks(w.vBias, 1, perm, D);
  if (w.oBias) out.oBias = w.oBias;
  return out;
}

/** Undo permuteAttentionWeights(·, perm, shape). */
export function unpermuteAttentionWeights(w: AttentionWeights, perm: ArrayLike<number>, shape: ModelShape): AttentionWeights {
  return permuteAttentionWeights(w, invertPermutation(perm), shape);
}
