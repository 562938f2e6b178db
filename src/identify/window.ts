/**
 * Which keys a streaming head sees while gates are identified (SPEC §3.1), and the "cone" of rows the loss
 * depends on (IDENTIFICATION.md §1.3).
 *
 * Block granular (upstream's `blocksparse`, the default; block size B = 128): query t in block m = ⌊t/B⌋ sees the
 * sink blocks {0 .. sb−1} and the local blocks {m−lb+1 .. m}, causally, with sb = ⌈S/B⌉, lb = ⌈R/B⌉. With S = 128,
 * R = 256: keys {0..127} ∪ {128(m−1) .. t}. Token granular (`sdpa`, blockSize 0): {0..S−1} ∪ {t−R+1 .. t}.
 * Either way the visible set is a sink prefix [0, sinkEnd) plus a contiguous window [windowStart(t), t].
 */
import { checkInt } from "../errors.ts";

export interface StreamingWindow {
  /** sink tokens S (identification value; upstream trains with 128) */
  sink: number;
  /** recent tokens R (upstream trains with 256) */
  recent: number;
  /** mask block size: 128 as upstream; 0 = token granular */
  blockSize: number;
}

export const UPSTREAM_WINDOW: StreamingWindow = { sink: 128, recent: 256, blockSize: 128 };

export function checkWindow(w: StreamingWindow): StreamingWindow {
  checkInt("sink", w.sink, 0);
  checkInt("recent", w.recent, 1);
  checkInt("blockSize", w.blockSize, 0);
  return w;
}

/** Keys below this are sinks (S rounded up to whole blocks). */
export function sinkEnd(w: StreamingWindow): number {
  return w.blockSize === 0 ? w.sink : Math.ceil(w.sink / w.blockSize) * w.blockSize;
}

/** First key of query t's local window. */
export function windowStart(w: StreamingWindow, t: number): number {
  if (w.blockSize === 0) return Math.max(0, t - w.recent + 1);
  const lb = Math.ceil(w.recent / w.blockSize);
  return Math.max(0, (Math.floor(t / w.blockSize) - lb + 1) * w.blockSize);
}

/** Whether a streaming head's query t sees key j. */
export function visible(w: StreamingWindow, t: number, j: number): boolean {
  return j <= t && (j < sinkEnd(w) || j >= windowStart(w, t));
}

/**
 * An ascending set of token positions: the sink prefix [0, min(sinks, start)) and the tail [start, T). Position p
 * of the set sits at index `indexOf(p)`.
 */
export class RowSet {
  readonly head: number;
  readonly length: number;
  constructor(readonly sinks: number, readonly start: number, readonly T: number) {
    this.head = Math.min(sinks, start);
    this.length = this.head + (T - start);
  }
  position(i: number): number {
    return i < this.head ? i : this.start + (i - this.head);
  }
  indexOf(p: number): number {
    return p < this.start ? p : this.head + (p - this.start);
  }
  positions(): Int32Array {
    return Int32Array.from({ length: this.length }, (_, i) => this.position(i));
  }
}

/**
 * The student's rows per layer for a sequence of T tokens whose last nLab are labelled. `queries[l]` are the rows
 * whose layer-l output the loss can depend on; `keys[l]` (= queries[l−1]) are the rows whose layer-l input (and K/V)
 * those queries read. Going down a layer the tail grows by one window: a_{L−1} = T − nLab, a_{l−1} = windowStart(a_l).
 * `cone: false` gives every layer all T rows (the full-sequence student, for the equivalence test).
 */
export function coneRows(w: StreamingWindow, T: number, nLab: number, numLayers: number, cone = true): { queries: RowSet[]; keys: RowSet[] } {
  const s = Math.min(sinkEnd(w), T);
  const queries: RowSet[] = [], keys: RowSet[] = [];
  let a = cone ? T - nLab : 0;
  for (let l = numLayers - 1; l >= 0; l--) {
    queries[l] = new RowSet(s, a, T);
    a = cone ? windowStart(w, a) : 0;
    keys[l] = new RowSet(s, a, T);
  }
  return { queries, keys };
}

/**
 * Per query row i of Q, the key rows of P it sees under `w`, as key indices: [0, out[3i]) (sinks) and
 * [out[3i+1], out[3i+2]) (the local window up to itself), the form the backward kernels take
 * (backward-kernels.ts `attend`). P must hold every visible key, as coneRows' keys[l] does for queries[l].
 */
export function windowKeyRanges(w: StreamingWindow, Q: RowSet, P: RowSet): Int32Array {
  const out = new Int32Array(3 * Q.length);
  for (let i = 0; i < Q.length; i++) {
    const t = Q.position(i), b = windowStart(w, t);
    out[3 * i] = P.indexOf(Math.min(sinkEnd(w), b));
    out[3 * i + 1] = P.indexOf(b);
    out[3 * i + 2] = P.indexOf(t) + 1;
  }
  return out;
}
