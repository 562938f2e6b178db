/**
 * The two-way forward of upstream's gate training (SPEC §5.2), float64:
 *  - teacher: the plain model, full causal attention over all T rows; records its attention output A_full on the
 *    rows the student will query, and its final normed hidden state on the labelled rows;
 *  - student, per layer, only on the cone rows (window.ts `coneRows`):
 *      A_str = streaming attention (Λ mask), A_mix[h] = (1 − α[h/G])·A_str[h] + α[h/G]·A_full_teacher[h]
 *    with everything else as the model. Every activation the backward needs is kept (no recomputation).
 */
import type { GateModel } from "./model.ts";
import { attend, type Heads } from "./attention.ts";
import { linear, rmsnorm, rope, ropeTables, swiglu } from "./ops.ts";
import { coneRows, RowSet, type StreamingWindow } from "./window.ts";

/** One training sequence: token ids and the first labelled row (rows [labelStart, T) carry the loss). */
export interface Sample {
  ids: Int32Array;
  labelStart: number;
}

export interface TeacherRun {
  /** per layer: A_full [|queries[l]|, Hq·D] on the student's query rows */
  attn: Float64Array[];
  /** final normed hidden state on the labelled rows [nLab, hidden] */
  hidden: Float64Array;
}

/** What a teacher layer exposes to a score (score.ts): rows are all T positions. */
export interface TeacherLayerView {
  layer: number;
  q: Float64Array; // [T, Hq, D] after RoPE
  k: Float64Array; // [T, Hkv, D] after RoPE
  v: Float64Array; // [T, Hkv, D]
  attn: Float64Array; // [T, Hq, D] full attention output
}

export interface StudentLayer {
  x: Float64Array; // [nk, hidden] layer input on the key rows
  r1: Float64Array; // [nk]
  q: Float64Array; // [nq, Hq, D] after RoPE
  k: Float64Array; // [nk, Hkv, D] after RoPE
  v: Float64Array; // [nk, Hkv, D]
  str: Float64Array; // [nq, Hq, D] A_str
  lse: Float64Array; // [nq, Hq]
  x1: Float64Array; // [nq, hidden] after attention
  r2: Float64Array; // [nq]
  a: Float64Array; // [nq, I] gate projection
  u: Float64Array; // [nq, I] up projection
  cosQ: Float64Array;
  sinQ: Float64Array;
  cosK: Float64Array;
  sinK: Float64Array;
}

export interface StudentRun {
  layers: StudentLayer[];
  xL: Float64Array; // [nq, hidden] last layer output on its query rows
  rf: Float64Array; // [nq]
  hidden: Float64Array; // [nLab, hidden] final normed student state on the labelled rows
}

export interface Rows {
  queries: RowSet[];
  keys: RowSet[];
}

export function headsOf(m: GateModel): Heads {
  return { Hq: m.config.numHeads, Hkv: m.config.numKvHeads, D: m.config.headDim };
}

export function sampleRows(m: GateModel, s: Sample, window: StreamingWindow, cone: boolean): Rows {
  return coneRows(window, s.ids.length, s.ids.length - s.labelStart, m.config.numLayers, cone);
}

/** Rows `rows` of a [T, width] array (or of an array over `from`'s rows), gathered into a new array. */
export function gather(src: Float64Array, width: number, rows: RowSet, from?: RowSet): Float64Array {
  const out = new Float64Array(rows.length * width);
  for (let i = 0; i < rows.length; i++) {
    const p = rows.position(i), at = from ? from.indexOf(p) : p;
    out.set(src.subarray(at * width, (at + 1) * width), i * width);
  }
  return out;
}

function allRows(T: number): RowSet {
  return new RowSet(0, 0, T);
}

/** A deployed mask: KV heads with retrieval[l·Hkv + g] = false attend through `window` instead of fully. */
export interface Deployment {
  retrieval: ArrayLike<boolean>;
  window: StreamingWindow;
}

/**
 * The plain model forward (full attention) over all rows; `rows` decides what is recorded for the student. With
 * `deploy`, streaming heads see only their window: the model as DuoAttention runs it under the identification mask.
 */
export function teacherForward(m: GateModel, s: Sample, rows: Rows | null, hook?: (view: TeacherLayerView) => void, deploy?: Deployment): TeacherRun {
  const c = m.config, T = s.ids.length, H = c.hiddenSize, I = c.intermediateSize, heads = headsOf(m);
  const { Hq, Hkv, D } = heads, all = allRows(T);
  const x = new Float64Array(T * H), h = new Float64Array(T * H), r = new Float64Array(T);
  for (let t = 0; t < T; t++) x.set(m.embed.subarray(s.ids[t]! * H, (s.ids[t]! + 1) * H), t * H);
  const { cos, sin } = ropeTables(m.invFreq, all.positions());
  const q = new Float64Array(T * Hq * D), k = new Float64Array(T * Hkv * D), v = new Float64Array(T * Hkv * D);
  const o = new Float64Array(T * Hq * D), lse = new Float64Array(T * Hq), y = new Float64Array(T * H);
  const a = new Float64Array(T * I), u = new Float64Array(T * I);
  const recorded: Float64Array[] = [];
  m.layers.forEach((L, l) => {
    rmsnorm(h, r, x, L.inputNorm, T, c.rmsNormEps);
    linear(q, h, L.q, T, Hq * D, H, L.qBias);
    linear(k, h, L.k, T, Hkv * D, H, L.kBias);
    linear(v, h, L.v, T, Hkv * D, H, L.vBias);
    rope(q, T, Hq, D, cos, sin);
    rope(k, T, Hkv, D, cos, sin);
    attend(o, lse, q, all, k, v, all, heads, null);
    if (deploy) streamHeads(o, q, k, v, all, heads, l, deploy);
    if (rows) recorded.push(gather(o, Hq * D, rows.queries[l]!));
    hook?.({ layer: l, q, k, v, attn: o });
    linear(y, o, L.o, T, H, Hq * D, L.oBias);
    for (let i = 0; i < x.length; i++) x[i]! += y[i]!;
    rmsnorm(h, r, x, L.postNorm, T, c.rmsNormEps);
    linear(a, h, L.gate, T, I, H, L.gateBias);
    linear(u, h, L.up, T, I, H, L.upBias);
    swiglu(a, a, u);
    linear(y, a, L.down, T, H, I, L.downBias);
    for (let i = 0; i < x.length; i++) x[i]! += y[i]!;
  });
  const nLab = T - s.labelStart, hidden = new Float64Array(nLab * H), rf = new Float64Array(nLab);
  rmsnorm(hidden, rf, x.subarray(s.labelStart * H), m.norm, nLab, c.rmsNormEps);
  return { attn: recorded, hidden };
}

/** Overwrite the streaming heads' rows of `o` [T, Hq, D] with their windowed attention. */
function streamHeads(o: Float64Array, q: Float64Array, k: Float64Array, v: Float64Array, all: RowSet, heads: Heads, l: number, deploy: Deployment): void {
  const { Hq, Hkv, D } = heads, G = Hq / Hkv;
  const streaming = Array.from({ length: Hkv }, (_, g) => !deploy.retrieval[l * Hkv + g]);
  if (!streaming.some(Boolean)) return;
  const os = new Float64Array(o.length), lse = new Float64Array(all.length * Hq);
  attend(os, lse, q, all, k, v, all, heads, deploy.window);
  for (let t = 0; t < all.length; t++) {
    for (let h = 0; h < Hq; h++) if (streaming[Math.floor(h / G)]) o.set(os.subarray((t * Hq + h) * D, (t * Hq + h + 1) * D), (t * Hq + h) * D);
  }
}

/** The student on the cone rows with gates α [layers·Hkv] (already clamped to [0, 1]). */
export function studentForward(m: GateModel, s: Sample, alpha: Float64Array, teacher: TeacherRun, rows: Rows, window: StreamingWindow): StudentRun {
  const c = m.config, H = c.hiddenSize, I = c.intermediateSize, heads = headsOf(m), { Hq, Hkv, D } = heads, G = Hq / Hkv;
  const T = s.ids.length, full = ropeTables(m.invFreq, allRows(T).positions()), half = D / 2;
  const layers: StudentLayer[] = [];
  let x = new Float64Array(0);
  m.layers.forEach((L, l) => {
    const P = rows.keys[l]!, Q = rows.queries[l]!, nk = P.length, nq = Q.length;
    if (l === 0) {
      x = new Float64Array(nk * H);
      for (let i = 0; i < nk; i++) {
        const id = s.ids[P.position(i)]!;
        x.set(m.embed.subarray(id * H, (id + 1) * H), i * H);
      }
    }
    const h1 = new Float64Array(nk * H), r1 = new Float64Array(nk);
    rmsnorm(h1, r1, x, L.inputNorm, nk, c.rmsNormEps);
    const k = new Float64Array(nk * Hkv * D), v = new Float64Array(nk * Hkv * D), q = new Float64Array(nq * Hq * D);
    linear(k, h1, L.k, nk, Hkv * D, H, L.kBias);
    linear(v, h1, L.v, nk, Hkv * D, H, L.vBias);
    linear(q, gather(h1, H, Q, P), L.q, nq, Hq * D, H, L.qBias);
    const cosK = gather(full.cos, half, P), sinK = gather(full.sin, half, P);
    const cosQ = gather(full.cos, half, Q), sinQ = gather(full.sin, half, Q);
    rope(k, nk, Hkv, D, cosK, sinK);
    rope(q, nq, Hq, D, cosQ, sinQ);
    const str = new Float64Array(nq * Hq * D), lse = new Float64Array(nq * Hq);
    attend(str, lse, q, Q, k, v, P, heads, window);
    const At = teacher.attn[l]!, mix = new Float64Array(nq * Hq * D);
    for (let i = 0; i < nq; i++) {
      for (let hh = 0; hh < Hq; hh++) {
        const al = alpha[l * Hkv + Math.floor(hh / G)]!, o = (i * Hq + hh) * D;
        for (let d = 0; d < D; d++) mix[o + d] = (1 - al) * str[o + d]! + al * At[o + d]!;
      }
    }
    const x1 = gather(x, H, Q, P), y = new Float64Array(nq * H);
    linear(y, mix, L.o, nq, H, Hq * D, L.oBias);
    for (let i = 0; i < x1.length; i++) x1[i]! += y[i]!;
    const h2 = new Float64Array(nq * H), r2 = new Float64Array(nq);
    rmsnorm(h2, r2, x1, L.postNorm, nq, c.rmsNormEps);
    const a = new Float64Array(nq * I), u = new Float64Array(nq * I), act = new Float64Array(nq * I);
    linear(a, h2, L.gate, nq, I, H, L.gateBias);
    linear(u, h2, L.up, nq, I, H, L.upBias);
    swiglu(act, a, u);
    linear(y, act, L.down, nq, H, I, L.downBias);
    const x2 = x1.slice();
    for (let i = 0; i < x2.length; i++) x2[i]! += y[i]!;
    layers.push({ x, r1, q, k, v, str, lse, x1, r2, a, u, cosQ, sinQ, cosK, sinK });
    x = x2;
  });
  const Qlast = rows.queries[c.numLayers - 1]!, nLab = T - s.labelStart;
  const rf = new Float64Array(Qlast.length), normed = new Float64Array(Qlast.length * H);
  rmsnorm(normed, rf, x, m.norm, Qlast.length, c.rmsNormEps);
  const hidden = new Float64Array(nLab * H);
  for (let t = s.labelStart; t < T; t++) {
    const i = Qlast.indexOf(t);
    hidden.set(normed.subarray(i * H, (i + 1) * H), (t - s.labelStart) * H);
  }
  return { layers, xL: x, rf, hidden };
}
