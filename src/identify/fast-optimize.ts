/**
 * One `--method optimize` objective evaluation on the fast kernels: the float64 objective.ts + forward.ts +
 * backward.ts (the reference twin; test/identify-fast-optimize.test.ts holds them together) with f32 activations,
 *  - the teacher: the plain model forward over all T rows, the model math on a ModelKernels set (src/model/layer.ts)
 *    and full causal attention on an attention backend (tiled AttendOps, as fast-score.ts), recording A_full on the
 *    student's query rows of each layer and the final normed hidden state on the labelled rows;
 *  - the student on the cone rows only (window.ts coneRows): the ModelKernels set's matmul / rmsnorm / RoPE / SwiGLU
 *    on host arrays (host-ops.ts: as they are on native, through the set's activations on wasm),
 *    and its streaming attention on the backward kernels' own `attend` (BackwardKernels: it keeps the lse the
 *    backward needs; the engine's AttendOp returns none), the mix in TS loops;
 *  - the activation-only backward on BackwardKernels, from dL/dH down to dL/dα with the fused dα reduction.
 * Every activation the backward needs is kept (no recomputation): f32, [cone rows, width] per layer.
 */
import { DuoError } from "../errors.ts";
import type { Backend, Handle, Op, Segment } from "../backend/types.ts";
import type { Vector } from "../model/kernels.ts";
import { hostOps } from "../model/host-ops.ts";
import { attentionInputs, hostQkv, layerOutput } from "../model/layer.ts";
import { Workspace } from "../model/workspace.ts";
import { ropeTables } from "../model/rope.ts";
import { openWeights, readTensorF32 } from "../model/safetensors.ts";
import type { BackwardKernels } from "./backward-kernels.ts";
import type { FastModel } from "./fast-model.ts";
import { loadFastModel } from "./fast-model.ts";
import type { Rows, Sample } from "./forward.ts";
import type { GateModel } from "./model.ts";
import { distillation, finishGateGradient, gateRegularizer, UPSTREAM_REG } from "./objective.ts";
import { coneRows, RowSet, type StreamingWindow, windowKeyRanges } from "./window.ts";

/** A FastModel plus the norm weights as host f32 arrays (the backward reads them) and the final norm. */
export interface OptimizeModel {
  fast: FastModel;
  inputNorms: Float32Array[]; // per layer [hidden]
  postNorms: Float32Array[]; // per layer [hidden]
  finalNorm: Float32Array; // [hidden]
  finalNormVector: Vector;
}

export function optimizeModelFromGate(m: GateModel, fast: FastModel): OptimizeModel {
  const finalNorm = Float32Array.from(m.norm);
  return {
    fast, finalNorm, finalNormVector: fast.kernels.vector(finalNorm),
    inputNorms: m.layers.map((L) => Float32Array.from(L.inputNorm)), postNorms: m.layers.map((L) => Float32Array.from(L.postNorm)),
  };
}

/** A model directory on `kernels` (its weights in the file's dtype) and its norms read again as f32. */
export async function loadOptimizeModel(dir: string, kernels: FastModel["kernels"]): Promise<OptimizeModel> {
  const fast = await loadFastModel(dir, kernels);
  const tensors = await openWeights(dir.replace(/[/\\]+$/, ""));
  const read = async (name: string) => await readTensorF32(tensors.get(name)!);
  const inputNorms: Float32Array[] = [], postNorms: Float32Array[] = [];
  for (let l = 0; l < fast.config.numLayers; l++) {
    inputNorms.push(await read(`model.layers.${l}.input_layernorm.weight`));
    postNorms.push(await read(`model.layers.${l}.post_attention_layernorm.weight`));
  }
  const finalNorm = await read("model.norm.weight");
  return { fast, inputNorms, postNorms, finalNorm, finalNormVector: kernels.vector(finalNorm) };
}

export interface FastObjectiveResult {
  loss: number;
  distill: number;
  reg: number;
  /** dL/dgate [layers·Hkv] (empty without gradient) */
  grad: Float64Array;
  /** seconds of the teacher (the plain forward) */
  teacherSeconds: number;
}

interface Teacher {
  attn: Float32Array[]; // per layer [|queries[l]|, Hq·D]
  hidden: Float32Array; // [nLab, hidden]
}

interface StudentLayer {
  x: Float32Array; // [nk, hidden]
  r1: Float32Array; // [nk] 1/rms
  q: Float32Array; // [nq, Hq, D] after RoPE
  k: Float32Array; // [nk, Hkv, D] after RoPE
  v: Float32Array; // [nk, Hkv, D]
  str: Float32Array; // [nq, Hq, D]
  lse: Float32Array; // [nq, Hq]
  ranges: Int32Array; // [nq, 3]
  x1: Float32Array; // [nq, hidden]
  r2: Float32Array; // [nq]
  a: Float32Array; // [nq, I]
  u: Float32Array; // [nq, I]
  cosQ: Float32Array; sinQ: Float32Array; cosK: Float32Array; sinK: Float32Array; // [rows, D/2]
}

/** Rows of a [T, width] array, or of an array over `from`'s rows, gathered into a new array. */
function gather(src: Float32Array, width: number, rows: RowSet, from?: RowSet): Float32Array {
  const out = new Float32Array(rows.length * width);
  for (let i = 0; i < rows.length; i++) {
    const p = rows.position(i), at = from ? from.indexOf(p) : p;
    out.set(src.subarray(at * width, (at + 1) * width), i * width);
  }
  return out;
}

/** The KV heads each shard of `backend` attends: round-robin. */
function shardHeads(Hkv: number, shards: number): number[][] {
  const out: number[][] = Array.from({ length: Math.min(shards, Hkv) }, () => []);
  for (let g = 0; g < Hkv; g++) out[g % out.length]!.push(g);
  return out;
}

export class FastObjective {
  private readonly heads: number[][];

  constructor(private readonly m: OptimizeModel, private readonly bk: BackwardKernels, private readonly backend: Backend, private readonly window: StreamingWindow) {
    const { numHeads, numKvHeads, headDim } = m.fast.config;
    if (headDim % 4 || headDim > 256) throw new DuoError("UNSUPPORTED", `optimize on the fast kernels needs a head dim that is a multiple of 4 up to 256, got ${headDim}; use --kernels reference`);
    if (numHeads % numKvHeads) throw new DuoError("UNSUPPORTED", `numHeads ${numHeads} is not a multiple of numKvHeads ${numKvHeads}`);
    this.heads = shardHeads(numKvHeads, backend.shards);
  }

  /** Loss and dL/dgate of upstream's objective (objective.ts) for one sample, gates [layers·Hkv] raw. */
  async evaluate(s: Sample, gates: Float64Array, o: { reg?: number; cone?: boolean; gradient?: boolean } = {}): Promise<FastObjectiveResult> {
    const c = this.m.fast.config, H = c.hiddenSize, N = gates.length, lambda = o.reg ?? UPSTREAM_REG;
    if (N !== c.numLayers * c.numKvHeads) throw new DuoError("SHAPE_MISMATCH", `gates has ${N} entries; the model has ${c.numLayers}·${c.numKvHeads} KV heads`);
    const T = s.ids.length, nLab = T - s.labelStart;
    const rows = coneRows(this.window, T, nLab, c.numLayers, o.cone ?? true);
    const t0 = performance.now();
    const teacher = await this.teacher(s, rows);
    const teacherSeconds = (performance.now() - t0) / 1000;
    const alpha = Float32Array.from(gates, (g) => Math.min(1, Math.max(0, g)));
    const { layers, xL, rf, hidden } = this.student(s, alpha, teacher, rows);
    const dH = new Float32Array(nLab * H);
    const distill = distillation(hidden, teacher.hidden, nLab, H, dH), reg = gateRegularizer(gates, lambda);
    if (o.gradient === false) return { loss: distill + reg, distill, reg, grad: new Float64Array(0), teacherSeconds };
    const grad = finishGateGradient(this.backward(s, alpha, dH, teacher, layers, xL, rf, rows), gates, lambda);
    return { loss: distill + reg, distill, reg, grad, teacherSeconds };
  }

  /** The plain model forward over all rows (the plain forward a step is measured against). */
  async teacher(s: Sample, rows: Rows | null): Promise<Teacher> {
    const { hiddenSize: H, numHeads: Hq, numKvHeads: Hkv, headDim: D, rmsNormEps: eps } = this.m.fast.config;
    const kn = this.m.fast.kernels, T = s.ids.length, W = Hq * D, ls = s.labelStart, nLab = T - ls;
    const o = new Float32Array(T * W); // [T, Hq, D] host: full attention
    const { cos, sin } = ropeTables(this.m.fast.invFreq, 0, T);
    const attn: Float32Array[] = [];
    const ws = new Workspace(kn, this.m.fast.config, T), a = ws.pass(T), normed = kn.activations(nLab * H);
    const bufs = this.heads.map((hs, shard) => ({ k: this.backend.alloc(shard, T * hs.length * D * 4), v: this.backend.alloc(shard, T * hs.length * D * 4) }));
    const hidden = new Float32Array(nLab * H);
    try {
      kn.embed(a.x, s.ids, this.m.fast.embed);
      for (let l = 0; l < this.m.fast.layers.length; l++) {
        const L = this.m.fast.layers[l]!;
        attentionInputs(kn, L, a, T, eps, { Hq, Hkv, D }, cos, sin);
        const { q, k, v } = hostQkv(kn, ws, a, T);
        await this.fullAttention(bufs, q, k, v, o, T);
        if (rows) attn.push(gather(o, W, rows.queries[l]!));
        kn.upload(a.a, o);
        layerOutput(kn, L, a, T, eps);
      }
      kn.rmsnorm(normed, kn.view(a.x, ls * H, nLab * H), this.m.finalNormVector, nLab, eps);
      kn.download(normed, hidden);
    } finally {
      bufs.forEach((b, shard) => (this.backend.free(shard, b.k), this.backend.free(shard, b.v)));
      kn.release(normed);
      ws.release();
    }
    return { attn, hidden };
  }

  /** o [T, Hq, D] = full causal attention of every row, on the backend (KV heads spread over its shards). */
  private async fullAttention(bufs: { k: Handle; v: Handle }[], q: Float32Array, k: Float32Array, v: Float32Array, o: Float32Array, T: number): Promise<void> {
    const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = this.m.fast.config, G = Hq / Hkv;
    const rows = Int32Array.from({ length: T }, (_, t) => t);
    await Promise.all(this.heads.map(async (hs, shard) => {
      const { k: K, v: V } = bufs[shard]!, n = hs.length, heads = Int32Array.from(hs);
      const seg: Segment = { k: K, v: V, dtype: "f32", rowHeads: n, rowStart: 0, rowCount: T, positions: 0 };
      const ops: Op[] = [
        { kind: "append", dst: K, dtype: "f32", rowHeads: n, headDim: D, src: k, srcHeads: Hkv, heads, rows },
        { kind: "append", dst: V, dtype: "f32", rowHeads: n, headDim: D, src: v, srcHeads: Hkv, heads, rows },
        { kind: "attend", q, T, numHeads: Hq, headDim: D, group: G, qHeads: heads, kvSlots: Int32Array.from(hs, (_, j) => j), segments: [seg], qPos0: 0, window: null, out: o },
      ];
      await this.backend.run(shard, ops);
    }));
  }

  /** The student on the cone rows with gates α [layers·Hkv] in [0, 1]. */
  private student(s: Sample, alpha: Float32Array, teacher: Teacher, rows: Rows): { layers: StudentLayer[]; xL: Float32Array; rf: Float32Array; hidden: Float32Array } {
    const c = this.m.fast.config, kn = hostOps(this.m.fast.kernels), bk = this.bk;
    const { hiddenSize: H, intermediateSize: I, numHeads: Hq, numKvHeads: Hkv, headDim: D, rmsNormEps: eps } = c, G = Hq / Hkv, W = Hq * D;
    const T = s.ids.length, full = ropeTables(this.m.fast.invFreq, 0, T), half = D / 2;
    const layers: StudentLayer[] = [];
    let x = new Float32Array(0);
    this.m.fast.layers.forEach((L, l) => {
      const P = rows.keys[l]!, Q = rows.queries[l]!, nk = P.length, nq = Q.length;
      if (l === 0) {
        x = new Float32Array(nk * H);
        kn.embed(x, Int32Array.from(P.positions(), (p) => s.ids[p]!), this.m.fast.embed);
      }
      const h1 = new Float32Array(nk * H), r1 = new Float32Array(nk);
      kn.rmsnorm(h1, x, L.inputNorm, nk, eps);
      bk.rmsInv(r1, x, nk, H, eps);
      const k = new Float32Array(nk * Hkv * D), v = new Float32Array(nk * Hkv * D), q = new Float32Array(nq * W);
      kn.matmul(k, h1, L.k, nk, L.kBias);
      kn.matmul(v, h1, L.v, nk, L.vBias);
      kn.matmul(q, gather(h1, H, Q, P), L.q, nq, L.qBias);
      const cosK = gather(full.cos, half, P), sinK = gather(full.sin, half, P), cosQ = gather(full.cos, half, Q), sinQ = gather(full.sin, half, Q);
      kn.rope(k, nk, Hkv, D, cosK, sinK);
      kn.rope(q, nq, Hq, D, cosQ, sinQ);
      const str = new Float32Array(nq * W), lse = new Float32Array(nq * Hq), ranges = windowKeyRanges(this.window, Q, P);
      bk.attend(str, lse, q, k, v, ranges, { nq, nk, Hq, Hkv, D });
      const At = teacher.attn[l]!, mix = new Float32Array(nq * W);
      for (let i = 0; i < nq; i++) {
        for (let hh = 0; hh < Hq; hh++) {
          const al = alpha[l * Hkv + Math.floor(hh / G)]!, o = (i * Hq + hh) * D;
          for (let d = 0; d < D; d++) mix[o + d] = (1 - al) * str[o + d]! + al * At[o + d]!;
        }
      }
      const x1 = gather(x, H, Q, P), y = new Float32Array(nq * H);
      kn.matmul(y, mix, L.o, nq, L.oBias);
      for (let i = 0; i < x1.length; i++) x1[i]! += y[i]!;
      const h2 = new Float32Array(nq * H), r2 = new Float32Array(nq);
      kn.rmsnorm(h2, x1, L.postNorm, nq, eps);
      bk.rmsInv(r2, x1, nq, H, eps);
      const a = new Float32Array(nq * I), u = new Float32Array(nq * I), act = new Float32Array(nq * I);
      kn.matmul(a, h2, L.gate, nq, L.gateBias);
      kn.matmul(u, h2, L.up, nq, L.upBias);
      kn.swiglu(act, a, u);
      kn.matmul(y, act, L.down, nq, L.downBias);
      const x2 = x1.slice();
      for (let i = 0; i < x2.length; i++) x2[i]! += y[i]!;
      layers.push({ x, r1, q, k, v, str, lse, ranges, x1, r2, a, u, cosQ, sinQ, cosK, sinK });
      x = x2;
    });
    const Qlast = rows.queries[c.numLayers - 1]!, nLab = T - s.labelStart;
    const rf = new Float32Array(Qlast.length), normed = new Float32Array(Qlast.length * H);
    kn.rmsnorm(normed, x, this.m.finalNormVector, Qlast.length, eps);
    bk.rmsInv(rf, x, Qlast.length, H, eps);
    const hidden = new Float32Array(nLab * H);
    for (let t = s.labelStart; t < T; t++) {
      const i = Qlast.indexOf(t);
      hidden.set(normed.subarray(i * H, (i + 1) * H), (t - s.labelStart) * H);
    }
    return { layers, xL: x, rf, hidden };
  }

  /** dL/dα [layers·Hkv] of the distillation term from dL/dH [nLab, hidden] (backward.ts, on BackwardKernels). */
  private backward(s: Sample, alpha: Float32Array, dHidden: Float32Array, teacher: Teacher, layers: StudentLayer[], xL: Float32Array, rf: Float32Array, rows: Rows): Float64Array {
    const c = this.m.fast.config, bk = this.bk, fl = this.m.fast.layers;
    const { hiddenSize: H, intermediateSize: I, numHeads: Hq, numKvHeads: Hkv, headDim: D, numLayers: nL } = c, W = Hq * D;
    const T = s.ids.length, grad = new Float64Array(nL * Hkv);
    const Qlast = rows.queries[nL - 1]!, dNormed = new Float32Array(Qlast.length * H), k = gradientScale(dHidden), up = 2 ** k;
    for (let t = s.labelStart; t < T; t++) {
      const at = Qlast.indexOf(t) * H, from = (t - s.labelStart) * H;
      for (let d = 0; d < H; d++) dNormed[at + d] = dHidden[from + d]! * up;
    }
    let dx = new Float32Array(Qlast.length * H);
    bk.rmsnormBackward(dx, dNormed, xL, this.m.finalNorm, rf, Qlast.length);
    for (let l = nL - 1; l >= 0; l--) {
      const L = fl[l]!, S = layers[l]!, P = rows.keys[l]!, Q = rows.queries[l]!, nq = Q.length, nk = P.length;
      // MLP
      const dm = new Float32Array(nq * I), da = new Float32Array(nq * I), du = new Float32Array(nq * I);
      bk.linearBackward(dm, dx, L.down, nq, false);
      bk.swigluBackward(da, du, dm, S.a, S.u);
      const dh2 = new Float32Array(nq * H);
      bk.linearBackward(dh2, da, L.gate, nq, false);
      bk.linearBackward(dh2, du, L.up, nq, true);
      const dx1 = dx.slice();
      bk.rmsnormBackward(dx1, dh2, S.x1, this.m.postNorms[l]!, S.r2, nq);
      // o-proj, the mix and the fused dα reduction
      const dmix = new Float32Array(nq * W), dstr = new Float32Array(nq * W), dalpha = new Float64Array(Hkv);
      bk.linearBackward(dmix, dx1, L.o, nq, false);
      bk.mixBackward(dstr, dalpha, dmix, teacher.attn[l]!, S.str, alpha.subarray(l * Hkv, (l + 1) * Hkv), nq, { Hq, Hkv, D });
      grad.set(dalpha, l * Hkv);
      if (l === 0) break; // nothing below layer 0's mix has a gate: its attention and q/k/v backward are not needed
      // streaming attention, RoPE⁻¹, q/k/v projections, input norm
      const dq = new Float32Array(nq * W), dk = new Float32Array(nk * Hkv * D), dv = new Float32Array(nk * Hkv * D);
      bk.attendBackward(dq, dk, dv, dstr, S.str, S.lse, S.q, S.k, S.v, S.ranges, { nq, nk, Hq, Hkv, D });
      bk.ropeInverse(dq, nq, Hq, D, S.cosQ, S.sinQ);
      bk.ropeInverse(dk, nk, Hkv, D, S.cosK, S.sinK);
      const dhq = new Float32Array(nq * H), dh1 = new Float32Array(nk * H);
      bk.linearBackward(dhq, dq, L.q, nq, false);
      bk.linearBackward(dh1, dk, L.k, nk, false);
      bk.linearBackward(dh1, dv, L.v, nk, true);
      const dxin = new Float32Array(nk * H);
      for (let i = 0; i < nq; i++) {
        const at = P.indexOf(Q.position(i)) * H;
        for (let d = 0; d < H; d++) {
          dh1[at + d]! += dhq[i * H + d]!;
          dxin[at + d] = dx1[i * H + d]!;
        }
      }
      bk.rmsnormBackward(dxin, dh1, S.x, this.m.inputNorms[l]!, S.r1, nk);
      dx = dxin;
    }
    for (let i = 0; i < grad.length; i++) grad[i]! *= 2 ** -k;
    return grad;
  }
}

/**
 * The backward runs on dL/dH·2^k, with k chosen so that max|dL/dH·2^k| is about 1, and dα is scaled back by 2^-k
 * (loss scaling, as in mixed-precision training; 0 when dL/dH is all zero). Why: a step's activation gradients are
 * tiny (the distillation gradient is divided by every labelled element) and shrink layer by layer; a 0.5B model at
 * 4K tokens passed half a million subnormal elements per layer into the backward ops by its 20th layer from the top,
 * and on x86 an operation on a subnormal takes a microcode assist: wasm, which has no FTZ / DAZ, ran such a
 * transposed matmul 130x slower (native flushes them, native/src/backward.c, at the cost of their value). Exact:
 * every op of the backward is linear in its seed, and a power of two changes no rounding while values stay normal;
 * it only keeps normal what would have underflowed.
 */
export function gradientScale(dH: Float32Array): number {
  let m = 0;
  for (let i = 0; i < dH.length; i++) m = Math.max(m, Math.abs(dH[i]!));
  return m > 0 && Number.isFinite(m) ? -Math.floor(Math.log2(m)) : 0;
}
