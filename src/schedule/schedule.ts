import { DuoError } from "../errors.ts";

/**
 * The binary decision per [layer][kvHead]: retrieval (full KV cache) or streaming (sink + recent ring).
 * Head indices are in the model's original order. Per layer, `permutation` is the stable partition that puts the
 * retrieval heads first (each class keeps its relative order, SPEC.md §2); `inverse[h]` is where head h goes.
 * A GQA group of query heads moves with its KV head (query head q reads KV head ⌊q/G⌋).
 */
export class HeadSchedule {
  readonly numLayers: number;
  readonly numKvHeads: number;
  /** [layer][kvHead] true = retrieval */
  readonly mask: readonly (readonly boolean[])[];
  /** per layer: retrieval KV heads, ascending */
  readonly retrieval: readonly Int32Array[];
  /** per layer: streaming KV heads, ascending */
  readonly streaming: readonly Int32Array[];
  /** per layer: retrieval heads then streaming heads (new position -> original head) */
  readonly permutation: readonly Int32Array[];
  /** per layer: original head -> new position */
  readonly inverse: readonly Int32Array[];

  private constructor(mask: boolean[][]) {
    this.numLayers = mask.length;
    this.numKvHeads = mask[0]!.length;
    this.mask = mask.map((row) => Object.freeze(row.slice()));
    const ret: Int32Array[] = [], str: Int32Array[] = [], perm: Int32Array[] = [], inv: Int32Array[] = [];
    for (const row of mask) {
      const r: number[] = [], s: number[] = [];
      row.forEach((isRet, h) => (isRet ? r : s).push(h));
      const p = Int32Array.from([...r, ...s]);
      const q = new Int32Array(p.length);
      p.forEach((h, i) => (q[h] = i));
      ret.push(Int32Array.from(r));
      str.push(Int32Array.from(s));
      perm.push(p);
      inv.push(q);
    }
    this.retrieval = ret;
    this.streaming = str;
    this.permutation = perm;
    this.inverse = inv;
  }

  /** From a boolean mask [layer][kvHead] (true = retrieval). Validates that it is rectangular and boolean. */
  static fromMask(mask: readonly (readonly boolean[])[]): HeadSchedule {
    if (!Array.isArray(mask) || mask.length === 0) {
      throw new DuoError("SHAPE_MISMATCH", "a head mask must be a non-empty array of layers, each an array of booleans per KV head");
    }
    const width = Array.isArray(mask[0]) ? mask[0].length : -1;
    mask.forEach((row, l) => {
      if (!Array.isArray(row) || row.length !== width || width === 0) {
        throw new DuoError("SHAPE_MISMATCH", `head mask row ${l} has ${Array.isArray(row) ? row.length : "no"} entries; every layer needs ${width > 0 ? width : "the same non-zero number of"} KV-head entries`);
      }
      row.forEach((v, h) => {
        if (typeof v !== "boolean") throw new DuoError("INVALID_ARGUMENT", `head mask [${l}][${h}] is ${JSON.stringify(v)}; use true (retrieval) or false (streaming)`);
      });
    });
    return new HeadSchedule(mask.map((r) => r.slice()));
  }

  /** Every head a retrieval head: plain full attention. */
  static full(numLayers: number, numKvHeads: number): HeadSchedule {
    return new HeadSchedule(Array.from({ length: numLayers }, () => new Array<boolean>(numKvHeads).fill(true)));
  }

  /** Retrieval heads per layer. */
  counts(): number[] {
    return this.retrieval.map((r) => r.length);
  }

  /** Total retrieval KV heads over all layers. */
  get retrievalHeads(): number {
    return this.retrieval.reduce((a, r) => a + r.length, 0);
  }

  /** Fraction of KV heads that are streaming heads (upstream's "sparsity"). */
  get sparsity(): number {
    return 1 - this.retrievalHeads / (this.numLayers * this.numKvHeads);
  }

  /** Throws SHAPE_MISMATCH unless this schedule has `numLayers` rows of `numKvHeads` heads. */
  checkShape(numLayers: number, numKvHeads: number, what = "head schedule"): void {
    if (this.numLayers !== numLayers || this.numKvHeads !== numKvHeads) {
      throw new DuoError(
        "SHAPE_MISMATCH",
        `${what} is ${this.numLayers} layers x ${this.numKvHeads} KV heads, but the model has ${numLayers} layers x ${numKvHeads} KV heads`,
      );
    }
  }
}
