/**
 * The two halves of a Llama-family decoder layer around attention, on a ModelKernels set: the one definition the model
 * runner (llama.ts), the fast identification score (identify/fast-score.ts) and `duo bench model` (cli/bench/
 * model-step.ts) share. Attention itself is the caller's (the engine's split KV cache, or tiled AttendOps).
 */
import type { ModelKernels } from "./kernels.ts";
import type { LayerWeights } from "./weights.ts";

/** Scratch and outputs of attentionInputs, all f32 row-major: h [T, hidden], q [T, Hq, D], k and v [T, Hkv, D]. */
export interface QkvBuffers {
  h: Float32Array;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
}

/** h = rmsnorm(x)·inputNorm; q, k, v = h·Wᵀ (+ bias); RoPE on q and k (cos/sin [T, D/2]). x [T, hidden] is unchanged. */
export function attentionInputs(kn: ModelKernels, L: LayerWeights, x: Float32Array, T: number, eps: number,
                                heads: { Hq: number; Hkv: number; D: number }, cos: Float32Array, sin: Float32Array,
                                out: QkvBuffers): void {
  kn.rmsnorm(out.h, x, L.inputNorm, T, eps);
  kn.matmul(out.q, out.h, L.q, T, L.qBias);
  kn.matmul(out.k, out.h, L.k, T, L.kBias);
  kn.matmul(out.v, out.h, L.v, T, L.vBias);
  kn.rope(out.q, T, heads.Hq, heads.D, cos, sin);
  kn.rope(out.k, T, heads.Hkv, heads.D, cos, sin);
}

/** Scratch of layerOutput: h and o [T, hidden], gate and up [T, I]. */
export interface MlpBuffers {
  h: Float32Array;
  o: Float32Array;
  gate: Float32Array;
  up: Float32Array;
}

/** After attention a [T, Hq·D]: x += a·Woᵀ (+ bias), then x += down(silu(gate(h))·up(h)) with h = rmsnorm(x)·postNorm;
 *  in place on the residual x [T, hidden]. */
export function layerOutput(kn: ModelKernels, L: LayerWeights, x: Float32Array, a: Float32Array, T: number, eps: number,
                            s: MlpBuffers): void {
  kn.matmul(s.o, a, L.o, T, L.oBias);
  for (let i = 0; i < x.length; i++) x[i]! += s.o[i]!;
  kn.rmsnorm(s.h, x, L.postNorm, T, eps);
  kn.matmul(s.gate, s.h, L.gate, T, L.gateBias);
  kn.matmul(s.up, s.h, L.up, T, L.upBias);
  kn.swiglu(s.gate, s.gate, s.up);
  kn.matmul(s.o, s.gate, L.down, T, L.downBias);
  for (let i = 0; i < x.length; i++) x[i]! += s.o[i]!;
}
