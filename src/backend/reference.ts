/**
 * The reference backend: plain TypeScript, float64 accumulation. It is the specification in code — every fast
 * kernel (wasm, cuda) is tested against it. Clarity over speed.
 *
 * Quantized KV (int8, int4; always NHD): an append quantizes each head row into its record (src/quant.ts), and
 * attention reads each record back through the codec's dequantization before the float64 arithmetic.
 */
import type { ModelKernels } from "../model/kernels.ts";
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, type FloatDtype, headBytes, isQuantized, type KvDtype, KV_DTYPES } from "../dtype.ts";
import { DuoError } from "../errors.ts";
import { dequantizeRecord, quantizeRecord } from "../quant.ts";
import { type BufferLayout, kvBufferRows, kvIndex, type KvLayout, segmentLayouts, tileable } from "./layout.ts";
import type { AppendOp, AttendOp, Backend, BackendCapabilities, BackendMemory, Handle, Op, Segment } from "./types.ts";
import { checkOps } from "./validate.ts";

/** Read element `i` of a KV buffer of a float dtype. */
function load(view: DataView, dtype: FloatDtype, i: number): number {
  if (dtype === "f32") return view.getFloat32(i * 4, true);
  const bits = view.getUint16(i * 2, true);
  return dtype === "f16" ? f16BitsToF32(bits) : bf16BitsToF32(bits);
}

function store(view: DataView, dtype: FloatDtype, i: number, x: number): void {
  if (dtype === "f32") view.setFloat32(i * 4, x, true);
  else view.setUint16(i * 2, dtype === "f16" ? f32ToF16Bits(x) : f32ToBf16Bits(x), true);
}

/** Head `j` of row `r` of a KV buffer (`rows` rows of `heads` heads, `layout`) as D numbers in `out`. */
function loadRow(view: DataView, dtype: KvDtype, layout: BufferLayout, heads: number, rows: number, D: number, r: number, j: number, out: Float64Array): void {
  if (isQuantized(dtype)) {
    const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
    const row = new Float32Array(D);
    dequantizeRecord(dtype, bytes, (r * heads + j) * headBytes(dtype, D), D, row);
    out.set(row);
    return;
  }
  for (let d = 0; d < D; d++) out[d] = load(view, dtype, kvIndex(layout, heads, rows, D, r, j, d));
}

/**
 * Merge two partial attention results over disjoint key sets (log-sum-exp), FlashInfer's merge_state:
 *   lse = log(e^lseA + e^lseB),  o = o_A·e^(lseA−lse) + o_B·e^(lseB−lse).
 * An empty segment has lse = −Infinity and contributes nothing; two empty segments give o = 0, lse = −Infinity.
 * oA/oB: [n, D]; lseA/lseB: [n]. Returns new arrays.
 */
export function mergeState(
  oA: Float32Array, lseA: Float32Array, oB: Float32Array, lseB: Float32Array, headDim: number,
): { o: Float32Array; lse: Float32Array } {
  const n = lseA.length;
  const o = new Float32Array(n * headDim), lse = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const a = lseA[i]!, b = lseB[i]!;
    const m = Math.max(a, b);
    if (m === -Infinity) { lse[i] = -Infinity; continue; }
    const wa = Math.exp(a - m), wb = Math.exp(b - m);
    const s = wa + wb;
    lse[i] = m + Math.log(s);
    for (let d = 0; d < headDim; d++) {
      o[i * headDim + d] = (oA[i * headDim + d]! * wa + oB[i * headDim + d]! * wb) / s;
    }
  }
  return { o, lse };
}

/** Absolute position of row r of a segment. */
export function segmentPosition(s: Segment, r: number): number {
  return typeof s.positions === "number" ? s.positions + r : s.positions[r]!;
}

/** The visibility rule of AttendOp (types.ts), shared by every backend's reference twin. */
export function visible(p: number, t: number, window: AttendOp["window"]): boolean {
  if (p > t) return false;
  return window === null || p < window.sink || p >= t - window.recent;
}

export class ReferenceBackend implements Backend {
  readonly name = "reference" as const;
  readonly shards: number;
  /** Any head dim; both page layouts (it reads whatever the fast backends write). */
  readonly capabilities: BackendCapabilities = { dtypes: KV_DTYPES, headDims: { multipleOf: 1 }, layouts: ["NHD", "T64"] };
  private buffers = new Map<Handle, DataView>();
  private next = 1;
  private bytes: number[];

  /** `shards` > 1 only to exercise the cache's head sharding in tests; all shards share this heap. `pages`: the page
   *  layout to ask the cache for (tests of the T64 layout; the reference reads both). */
  constructor(shards = 1, private readonly pages: KvLayout = "NHD") {
    this.shards = shards;
    this.bytes = new Array<number>(shards).fill(0);
  }

  /** The reference model kernels (float64 accumulation), the specification the fast sets are checked against. */
  async modelKernels(): Promise<ModelKernels> {
    return new (await import("../model/kernels-reference.ts")).ReferenceKernels();
  }

  pageLayout(dtype: KvDtype, headDim: number, pageRows: number, _group: number): KvLayout {
    return this.pages === "T64" && !isQuantized(dtype) && tileable(pageRows, headDim) ? "T64" : "NHD";
  }

  alloc(shard: number, bytes: number): Handle {
    const h = this.next++;
    this.buffers.set(h, new DataView(new ArrayBuffer(bytes)));
    this.bytes[shard]! += bytes;
    return h;
  }

  free(shard: number, h: Handle): void {
    const b = this.buffers.get(h);
    if (!b) return;
    this.bytes[shard]! -= b.byteLength;
    this.buffers.delete(h);
  }

  memory(shard: number): BackendMemory {
    return { allocated: this.bytes[shard]!, capacity: Infinity };
  }

  async read(_shard: number, h: Handle, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    const b = this.view(h);
    return new Uint8Array(b.buffer.slice(byteOffset, byteOffset + byteLength));
  }

  async run(_shard: number, ops: Op[]): Promise<void> {
    checkOps(ops, this.capabilities, (h) => this.view(h).byteLength);
    for (const op of ops) {
      if (op.kind === "append") this.append(op);
      else this.attend(op);
    }
  }

  async dispose(): Promise<void> {
    this.buffers.clear();
  }

  private view(h: Handle): DataView {
    const b = this.buffers.get(h);
    if (!b) throw new DuoError("INVALID_ARGUMENT", `reference backend: unknown buffer handle ${h}`);
    return b;
  }

  private append(op: AppendOp): void {
    const dst = this.view(op.dst);
    const D = op.headDim, layout = op.layout ?? "NHD", dtype = op.dtype;
    const capacityRows = kvBufferRows(layout, dst.byteLength, op.rowHeads, D, dtype);
    const bytes = new Uint8Array(dst.buffer);
    for (let t = 0; t < op.rows.length; t++) {
      const row = op.rows[t]!;
      if (row < 0) continue;
      for (let j = 0; j < op.rowHeads; j++) {
        const src = (t * op.srcHeads + op.heads[j]!) * D;
        if (isQuantized(dtype)) quantizeRecord(dtype, op.src.subarray(src, src + D), D, bytes, (row * op.rowHeads + j) * headBytes(dtype, D));
        else for (let d = 0; d < D; d++) store(dst, dtype, kvIndex(layout, op.rowHeads, capacityRows, D, row, j, d), op.src[src + d]!);
      }
    }
  }

  private attend(op: AttendOp): void {
    const { T, numHeads: Hq, headDim: D, group: G } = op;
    const scale = 1 / Math.sqrt(D);
    const keys = op.segments.map((s) => {
      const k = this.view(s.k), v = this.view(s.v), lay = segmentLayouts(s.layout);
      const rows = kvBufferRows(s.layout ?? "NHD", k.byteLength, s.rowHeads, D, s.dtype);
      return { s, k, v, lay, rows };
    });
    const scores: number[] = [];
    const acc = new Float64Array(D), x = new Float64Array(D);
    for (let j = 0; j < op.qHeads.length; j++) {
      const slot = op.kvSlots[j]!;
      for (let g = 0; g < G; g++) {
        const qh = op.qHeads[j]! * G + g;
        for (let t = 0; t < T; t++) {
          const qBase = (t * Hq + qh) * D;
          const qt = op.qPos0 + t;
          // Pass 1: scores of visible keys and their max.
          scores.length = 0;
          let m = -Infinity;
          for (const { s, k, lay, rows } of keys) {
            for (let r = 0; r < s.rowCount; r++) {
              if (!visible(segmentPosition(s, r), qt, op.window)) continue;
              loadRow(k, s.dtype, lay.k, s.rowHeads, rows, D, s.rowStart + r, slot, x);
              let dot = 0;
              for (let d = 0; d < D; d++) dot += op.q[qBase + d]! * x[d]!;
              dot *= scale;
              scores.push(dot);
              if (dot > m) m = dot;
            }
          }
          // Pass 2: softmax-weighted sum of V in the same key order.
          acc.fill(0);
          let sum = 0, i = 0;
          for (const { s, v, lay, rows } of keys) {
            for (let r = 0; r < s.rowCount; r++) {
              if (!visible(segmentPosition(s, r), qt, op.window)) continue;
              const w = Math.exp(scores[i++]! - m);
              sum += w;
              loadRow(v, s.dtype, lay.v, s.rowHeads, rows, D, s.rowStart + r, slot, x);
              for (let d = 0; d < D; d++) acc[d]! += w * x[d]!;
            }
          }
          for (let d = 0; d < D; d++) op.out[qBase + d] = sum > 0 ? acc[d]! / sum : 0;
          if (op.lse) op.lse[t * Hq + qh] = sum > 0 ? m + Math.log(sum) : -Infinity;
        }
      }
    }
  }
}
