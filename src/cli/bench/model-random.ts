/**
 * A Llama-shaped model with random weights, made in memory in the kernel set (no file): `duo bench model` times
 * decode on it. Values do not change the time of a matmul, so one buffer of random elements (uniform in ±0.05,
 * rounded to the weight dtype) is written over and over into every matrix; norms are ones. Biases: none (Llama).
 */
import { f32ToBf16Bits, f32ToF16Bits } from "../../dtype.ts";
import type { Matrix, ModelKernels } from "../../model/kernels.ts";
import type { LayerWeights, ModelWeights } from "../../model/weights.ts";

export interface RandomShape {
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  hiddenSize: number;
  intermediateSize: number;
  vocabSize: number;
}

/** The element dtypes a random model is made in (quantized blocks would need a quantizer per dtype). */
export type RandomDtype = "f32" | "f16" | "bf16";
const ELEMENT_BYTES: Record<RandomDtype, number> = { f32: 4, f16: 2, bf16: 2 };

/** Elements in the shared random buffer (16 MiB of bf16). */
const PIECE = 8 << 20;

/** Bytes the weights take (matrices in `dtype`, vectors f32), and the bytes one decode token reads (all but the
 *  embedding, of which it reads one row). */
export function randomWeightBytes(s: RandomShape, dtype: RandomDtype): { held: number; readPerToken: number } {
  const { hiddenSize: H, intermediateSize: I, numHeads: Hq, numKvHeads: Hkv, headDim: D, vocabSize: V } = s;
  const eb = ELEMENT_BYTES[dtype];
  const layer = eb * (2 * Hq * D * H + 2 * Hkv * D * H + 3 * I * H) + 4 * 2 * H;
  const embed = eb * V * H, lmHead = eb * V * H;
  return { held: s.numLayers * layer + embed + lmHead + 4 * H, readPerToken: s.numLayers * layer + lmHead + 4 * H };
}

function randomPiece(dtype: RandomDtype, seed: number): Uint8Array {
  const f = new Float32Array(PIECE);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < PIECE; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    f[i] = ((x >>> 0) / 2 ** 32 - 0.5) * 0.1;
  }
  if (dtype === "f32") return new Uint8Array(f.buffer);
  const narrow = dtype === "bf16" ? f32ToBf16Bits : f32ToF16Bits;
  return new Uint8Array(Uint16Array.from(f, narrow).buffer);
}

/** Random weights for `s` in `k`; `progress(bytes)` after each matrix. */
export function randomWeights(k: ModelKernels, s: RandomShape, dtype: RandomDtype, progress?: (bytes: number) => void): ModelWeights {
  const { hiddenSize: H, intermediateSize: I, numHeads: Hq, numKvHeads: Hkv, headDim: D, vocabSize: V } = s;
  const piece = randomPiece(dtype, 42), eb = ELEMENT_BYTES[dtype];
  const matrix = (rows: number, cols: number): Matrix => {
    const m = k.matrix(rows, cols, dtype), bytes = rows * cols * eb;
    for (let off = 0; off < bytes; off += piece.length) k.write(m, off, piece.subarray(0, Math.min(piece.length, bytes - off)));
    progress?.(bytes);
    return m;
  };
  const ones = () => k.vector(new Float32Array(H).fill(1));
  const embed = matrix(V, H);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < s.numLayers; l++) {
    layers.push({
      inputNorm: ones(), postNorm: ones(),
      q: matrix(Hq * D, H), k: matrix(Hkv * D, H), v: matrix(Hkv * D, H), o: matrix(H, Hq * D),
      gate: matrix(I, H), up: matrix(I, H), down: matrix(H, I),
    });
  }
  return { embed, layers, norm: ones(), lmHead: matrix(V, H) };
}
