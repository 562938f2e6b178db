/**
 * A Llama-family decoder layer on a ModelKernels set, around attention: the one definition the model runner
 * (llama.ts), the fast identification score (identify/fast-score.ts) and `duo bench model` (cli/bench/model-step.ts)
 * share. Activations stay in the kernel set (workspace.ts). Where the set's activations live where the engine's
 * backend attends (ModelKernels.attendsIn: cuda kernels on the cuda backend), the engine reads q, k, v and writes the
 * attention output in place (Sequence.attendInto on device tensors); elsewhere q, k, v go down to the engine as host
 * arrays, and its output comes back up.
 */
import type { DeviceTensor } from "../backend/types.ts";
import { isDeviceTensor } from "../backend/validate.ts";
import type { Sequence } from "../engine/sequence.ts";
import { DuoError } from "../errors.ts";
import type { Activations, Matrix, ModelKernels, Vector } from "./kernels.ts";
import type { LayerWeights } from "./weights.ts";
import type { PassActivations, Workspace } from "./workspace.ts";

export interface Heads {
  Hq: number;
  Hkv: number;
  D: number;
}

/** h = rmsnorm(x)·inputNorm; q, k, v = h·Wᵀ (+ bias); RoPE on q and k (host cos/sin [T, D/2]). x is unchanged. */
export function attentionInputs(kn: ModelKernels, L: LayerWeights, s: PassActivations, T: number, eps: number, heads: Heads,
                                cos: Float32Array, sin: Float32Array): void {
  kn.rmsnorm(s.h, s.x, L.inputNorm, T, eps);
  kn.matmul(s.q, s.h, L.q, T, L.qBias);
  kn.matmul(s.k, s.h, L.k, T, L.kBias);
  kn.matmul(s.v, s.h, L.v, T, L.vBias);
  kn.rope(s.q, T, heads.Hq, heads.D, cos, sin);
  kn.rope(s.k, T, heads.Hkv, heads.D, cos, sin);
}

/** After attention s.a [T, Hq·D]: x += a·Woᵀ (+ bias), then x += down(silu(gate(h))·up(h)) with h = rmsnorm(x)·postNorm;
 *  in place on the residual s.x [T, hidden]. */
export function layerOutput(kn: ModelKernels, L: LayerWeights, s: PassActivations, T: number, eps: number): void {
  kn.matmul(s.o, s.a, L.o, T, L.oBias);
  kn.add(s.x, s.o);
  kn.rmsnorm(s.h, s.x, L.postNorm, T, eps);
  kn.matmul(s.gate, s.h, L.gate, T, L.gateBias);
  kn.matmul(s.up, s.h, L.up, T, L.upBias);
  kn.swiglu(s.gate, s.gate, s.up);
  kn.matmul(s.o, s.gate, L.down, T, L.downBias);
  kn.add(s.x, s.o);
}

/** q [T, Hq·D], k and v [T, Hkv·D] of the pass as host arrays (views of the workspace's mirrors). */
export function hostQkv(kn: ModelKernels, ws: Workspace, s: PassActivations, T: number): { q: Float32Array; k: Float32Array; v: Float32Array } {
  const m = ws.hostMirrors();
  const q = m.q.subarray(0, s.q.length), k = m.k.subarray(0, s.k.length), v = m.v.subarray(0, s.v.length);
  kn.download(s.q, q);
  kn.download(s.k, k);
  kn.download(s.v, v);
  return { q, k, v };
}

/** One whole layer for T rows: attention inputs, attention of layer `layer` of `seq` (in place on the activations
 *  where the kernel set attendsIn the engine's backend, else on host q, k, v with the output uploaded), then the
 *  output half. */
export async function decoderLayer(kn: ModelKernels, L: LayerWeights, ws: Workspace, s: PassActivations, T: number, eps: number,
                                   heads: Heads, cos: Float32Array, sin: Float32Array, seq: Sequence, layer: number): Promise<void> {
  attentionInputs(kn, L, s, T, eps, heads, cos, sin);
  if (kn.attendsIn?.(seq.backend)) {
    await seq.attendInto(layer, device(s.q), device(s.k), device(s.v), device(s.a));
  } else {
    const { q, k, v } = hostQkv(kn, ws, s, T);
    kn.upload(s.a, await seq.attend(layer, q, k, v));
  }
  layerOutput(kn, L, s, T, eps);
}

/** Activations of a set that attendsIn the backend: device tensors (CudaActivations), as that promise says. */
function device(a: Activations): DeviceTensor {
  if (!isDeviceTensor(a)) throw new DuoError("INVALID_ARGUMENT", `the model kernels' activations are not device tensors, though the kernel set says it attends in the engine's backend`);
  return a;
}

/** The logits [vocab] of row `row` of the residual s.x: lm_head(rmsnorm(x[row])·norm), downloaded into `out`. */
export function logitsOf(kn: ModelKernels, ws: Workspace, s: PassActivations, row: number, norm: Vector, lmHead: Matrix, eps: number, out: Float32Array): Float32Array {
  kn.download(logitsOn(kn, ws, s, row, norm, lmHead, eps), out);
  return out;
}

/** The same logits, left in the kernel set (ws.logits [vocab]): for its argmax. */
export function logitsOn(kn: ModelKernels, ws: Workspace, s: PassActivations, row: number, norm: Vector, lmHead: Matrix, eps: number): Activations {
  const H = ws.dims.hiddenSize;
  kn.rmsnorm(ws.last, kn.view(s.x, row * H, H), norm, 1, eps);
  kn.matmul(ws.logits, ws.last, lmHead, 1);
  return ws.logits;
}
