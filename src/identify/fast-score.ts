/**
 * `--method score` on the fast kernels: the same value-aware deviation as score.ts (its float64 reference twin,
 * test/identify-fast.test.ts holds the two together), with the model math on a ModelKernels set (f32 activations,
 * weights in the model's dtype) and attention on an attention backend (src/backend: wasm workers, cuda, reference)
 * through its tiled AttendOp, so no [T, T] matrix is ever formed.
 *
 * Per layer: K and V of all T rows are appended to per-shard f32 buffers (KV heads spread over the backend's
 * shards); one full causal AttendOp gives A_full on every row (it feeds the next layer, as in the plain model); the
 * labelled rows are attended again under the Λ mask for A_str:
 *  - block granular: one op per 128-row query block, over two segments, the sink blocks [0, a) and the local blocks
 *    [windowStart, blockEnd) — within a block every query sees the same keys up to causality;
 *  - token granular: one op with the backend's own window (sink S, recent R − 1: keys p ≥ t − R + 1).
 * Then dev[l, g] += mean over labelled rows of ‖(A_full − A_str)[:, group g] · W_oᵀ‖₂, one matmul per KV head.
 */
import type { Backend, Handle, Op, Segment } from "../backend/types.ts";
import type { Activations } from "../model/kernels.ts";
import { attentionInputs, hostQkv, layerOutput } from "../model/layer.ts";
import { Workspace } from "../model/workspace.ts";
import { ropeTables } from "../model/rope.ts";
import type { Sample } from "./forward.ts";
import type { FastModel } from "./fast-model.ts";
import { sinkEnd, type StreamingWindow, windowStart } from "./window.ts";

/** The KV heads each shard of `backend` attends: round-robin, so 2 KV heads on 2 workers run at once. */
function shardHeads(Hkv: number, shards: number): number[][] {
  const out: number[][] = Array.from({ length: Math.min(shards, Hkv) }, () => []);
  for (let g = 0; g < Hkv; g++) out[g % out.length]!.push(g);
  return out;
}

export class FastDeviationScore {
  private readonly sum: Float64Array;
  private samples = 0;
  private readonly heads: number[][];

  constructor(private readonly m: FastModel, private readonly backend: Backend, private readonly window: StreamingWindow) {
    this.sum = new Float64Array(m.config.numLayers * m.config.numKvHeads);
    this.heads = shardHeads(m.config.numKvHeads, backend.shards);
  }

  async add(s: Sample): Promise<void> {
    const { hiddenSize: H, numHeads: Hq, numKvHeads: Hkv, headDim: D, rmsNormEps: eps } = this.m.config;
    const kn = this.m.kernels, T = s.ids.length, ls = s.labelStart, nLab = T - ls, W = Hq * D;
    const o = new Float32Array(T * W); // [T, Hq, D] host: full attention
    const str = new Float32Array(nLab * W), delta = new Float32Array(nLab * W); // [nLab, Hq, D] host
    const { cos, sin } = ropeTables(this.m.invFreq, 0, T);
    const heads = { Hq, Hkv, D };
    const ws = new Workspace(kn, this.m.config, T), a = ws.pass(T);
    const masked = kn.activations(nLab * W), dy = kn.activations(nLab * H); // [nLab, Hq, D], [nLab, hidden]
    // per shard: K and V buffers [T, its heads, D] f32, reused by every layer
    const bufs = this.heads.map((hs, shard) => ({ k: this.backend.alloc(shard, T * hs.length * D * 4), v: this.backend.alloc(shard, T * hs.length * D * 4) }));
    try {
      kn.embed(a.x, s.ids, this.m.embed);
      for (let l = 0; l < this.m.layers.length; l++) {
        const L = this.m.layers[l]!;
        attentionInputs(kn, L, a, T, eps, heads, cos, sin);
        const { q, k, v } = hostQkv(kn, ws, a, T);
        await this.attend(bufs, q, k, v, o, str, T, ls);
        for (let i = 0; i < nLab * W; i++) delta[i] = o[ls * W + i]! - str[i]!;
        this.deviation(l, delta, masked, dy, nLab);
        if (l === this.m.layers.length - 1) break; // the score reads attention only: the last MLP is not needed
        kn.upload(a.a, o);
        layerOutput(kn, L, a, T, eps);
      }
    } finally {
      bufs.forEach((b, shard) => (this.backend.free(shard, b.k), this.backend.free(shard, b.v)));
      kn.release(dy);
      kn.release(masked);
      ws.release();
    }
    this.samples++;
  }

  /** o [T, Hq, D] = full causal attention on every row; str [nLab, Hq, D] = the Λ-masked attention of rows ls.. */
  private async attend(bufs: { k: Handle; v: Handle }[], q: Float32Array, k: Float32Array, v: Float32Array, o: Float32Array, str: Float32Array, T: number, ls: number): Promise<void> {
    const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = this.m.config, G = Hq / Hkv, W = Hq * D, w = this.window;
    const rows = Int32Array.from({ length: T }, (_, t) => t);
    await Promise.all(this.heads.map(async (hs, shard) => {
      const { k: K, v: V } = bufs[shard]!, n = hs.length, heads = Int32Array.from(hs);
      const seg = (rowStart: number, rowCount: number): Segment => ({ k: K, v: V, dtype: "f32", rowHeads: n, rowStart, rowCount, positions: rowStart });
      const attend = (t0: number, t1: number, segments: Segment[], window: { sink: number; recent: number } | null, out: Float32Array): Op => ({
        kind: "attend", q: q.subarray(t0 * W, t1 * W), T: t1 - t0, numHeads: Hq, headDim: D, group: G, qHeads: heads,
        kvSlots: Int32Array.from(hs, (_, j) => j), segments, qPos0: t0, window, out,
      });
      const ops: Op[] = [
        { kind: "append", dst: K, dtype: "f32", rowHeads: n, headDim: D, src: k, srcHeads: Hkv, heads, rows },
        { kind: "append", dst: V, dtype: "f32", rowHeads: n, headDim: D, src: v, srcHeads: Hkv, heads, rows },
        attend(0, T, [seg(0, T)], null, o),
      ];
      const lab = (t0: number, t1: number) => str.subarray((t0 - ls) * W, (t1 - ls) * W);
      if (w.blockSize === 0) ops.push(attend(ls, T, [seg(0, T)], { sink: w.sink, recent: w.recent - 1 }, lab(ls, T)));
      else {
        for (let t0 = ls; t0 < T;) {
          const t1 = Math.min(T, (Math.floor(t0 / w.blockSize) + 1) * w.blockSize), b = windowStart(w, t0), a = Math.min(sinkEnd(w), b);
          ops.push(attend(t0, t1, a > 0 ? [seg(0, a), seg(b, t1 - b)] : [seg(b, t1 - b)], null, lab(t0, t1)));
          t0 = t1;
        }
      }
      await this.backend.run(shard, ops);
    }));
  }

  /** sum[l, g] += mean_t ‖W_o[:, group g] · delta[t, group g]‖₂, delta [nLab, Hq, D] host; masked [nLab, Hq, D] and
   *  dy [nLab, hidden] activations of the kernel set */
  private deviation(l: number, delta: Float32Array, masked: Activations, dy: Activations, nLab: number): void {
    const { hiddenSize: H, numHeads: Hq, numKvHeads: Hkv, headDim: D } = this.m.config, GD = (Hq / Hkv) * D, W = Hq * D;
    const kn = this.m.kernels, host = new Float32Array(nLab * W), out = new Float32Array(nLab * H);
    for (let g = 0; g < Hkv; g++) {
      host.fill(0);
      for (let t = 0; t < nLab; t++) host.set(delta.subarray(t * W + g * GD, t * W + (g + 1) * GD), t * W + g * GD);
      kn.upload(masked, host);
      kn.matmul(dy, masked, this.m.layers[l]!.o, nLab);
      kn.download(dy, out);
      let acc = 0;
      for (let t = 0; t < nLab; t++) {
        let n2 = 0;
        for (let i = t * H; i < (t + 1) * H; i++) n2 += out[i]! * out[i]!;
        acc += Math.sqrt(n2);
      }
      this.sum[l * Hkv + g]! += acc / nLab;
    }
  }

  scores(): Float64Array {
    return this.sum.map((x) => x / Math.max(1, this.samples));
  }
}
