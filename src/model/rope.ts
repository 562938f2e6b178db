/**
 * Rotary position embedding frequencies, as HF transformers computes them (`modeling_rope_utils.py`), in float64:
 *   default  invFreq[i] = θ^(−2i/D), i = 0 .. D/2−1
 *   linear   invFreq[i] / factor                      (position interpolation)
 *   llama3   per frequency, by wavelength λ = 2π / invFreq[i]:
 *              λ < L/high_freq_factor  → unchanged
 *              λ > L/low_freq_factor   → invFreq / factor
 *              otherwise                → (1 − s)·invFreq/factor + s·invFreq,  s = (L/λ − low) / (high − low)
 *            with L = original_max_position_embeddings.
 * Angles are position · invFreq at absolute positions (SPEC §4.1); the rotation itself (rotate-half / NeoX layout)
 * is a kernel (kernels.ts).
 */
import type { RopeScaling } from "./config.ts";

/** [D/2] inverse frequencies. */
export function inverseFrequencies(headDim: number, theta: number, scaling: RopeScaling): Float64Array {
  const half = headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / theta ** ((2 * i) / headDim);
  if (scaling.type === "linear") for (let i = 0; i < half; i++) inv[i]! /= scaling.factor;
  if (scaling.type === "llama3") {
    const { factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: L } = scaling;
    const lowFreqWavelen = L / low, highFreqWavelen = L / high;
    for (let i = 0; i < half; i++) {
      const f = inv[i]!, wavelen = (2 * Math.PI) / f;
      if (wavelen < highFreqWavelen) continue;
      if (wavelen > lowFreqWavelen) inv[i] = f / factor;
      else {
        const s = (L / wavelen - low) / (high - low);
        inv[i] = ((1 - s) * f) / factor + s * f;
      }
    }
  }
  return inv;
}

/** cos and sin tables [T, D/2] for positions pos0 .. pos0 + T − 1. */
export function ropeTables(invFreq: Float64Array, pos0: number, T: number): { cos: Float32Array; sin: Float32Array } {
  const half = invFreq.length;
  const cos = new Float32Array(T * half), sin = new Float32Array(T * half);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const a = (pos0 + t) * invFreq[i]!;
      cos[t * half + i] = Math.cos(a);
      sin[t * half + i] = Math.sin(a);
    }
  }
  return { cos, sin };
}
