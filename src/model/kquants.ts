/**
 * llama.cpp's K-quants (ggml-common.h, super-blocks of 256 weights along a row) used by its most common files
 * (Q4_K_M: Q4_K, with Q6_K for some tensors), decoded as ggml's dequantize_row_q4_K / _q6_K do, in f32 step by step
 * (the wasm kernels perform the same operations, so both give the same bits):
 *   Q4_K  144 bytes: f16 d, f16 dmin, 12 bytes of 6-bit (scale, min) pairs for 8 sub-blocks of 32, 128 bytes of
 *         nibbles (sub-blocks 2i and 2i+1: low and high nibbles of qs[32i .. 32i+31]);
 *         weight = (d·scale)·q − dmin·min
 *   Q6_K  210 bytes: 128 bytes low nibbles ql, 64 bytes of 2-bit highs qh, 16 int8 scales (one per 16 weights),
 *         f16 d at the end; q = (low | high << 4) − 32; weight = (d·scale)·q
 * There is no quantizer here: the model writer draws random blocks (any bytes with a finite d are a valid block).
 */
import { f16BitsToF32 } from "../dtype.ts";

const f = Math.fround;

/** Sub-block j's 6-bit (scale, min) of a Q4_K block's 12 scale bytes at `s` (ggml's get_scale_min_k4). */
function scaleMinK4(b: Uint8Array, s: number, j: number): [number, number] {
  if (j < 4) return [b[s + j]! & 63, b[s + j + 4]! & 63];
  return [(b[s + j + 4]! & 0xf) | ((b[s + j - 4]! >> 6) << 4), (b[s + j + 4]! >> 4) | ((b[s + j]! >> 6) << 4)];
}

export function dequantizeQ4_K(bytes: Uint8Array): Float32Array {
  const blocks = bytes.length / 144, out = new Float32Array(blocks * 256);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < blocks; b++) {
    const o = b * 144, d = f16BitsToF32(view.getUint16(o, true)), dmin = f16BitsToF32(view.getUint16(o + 2, true));
    for (let j = 0; j < 8; j++) {
      const [sc, m] = scaleMinK4(bytes, o + 4, j);
      const d1 = f(d * sc), m1 = f(dmin * m), qs = o + 16 + 32 * (j >> 1), shift = (j & 1) * 4;
      for (let l = 0; l < 32; l++) out[b * 256 + 32 * j + l] = f(f(d1 * ((bytes[qs + l]! >> shift) & 15)) - m1);
    }
  }
  return out;
}

export function dequantizeQ6_K(bytes: Uint8Array): Float32Array {
  const blocks = bytes.length / 210, out = new Float32Array(blocks * 256);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < blocks; b++) {
    const o = b * 210, d = f16BitsToF32(view.getUint16(o + 208, true));
    for (let half = 0; half < 2; half++) {
      const ql = o + 64 * half, qh = o + 128 + 32 * half, sc = o + 192 + 8 * half;
      for (let l = 0; l < 32; l++) {
        const is = l >> 4, h = bytes[qh + l]!;
        const q = [
          ((bytes[ql + l]! & 15) | ((h & 3) << 4)) - 32,
          ((bytes[ql + l + 32]! & 15) | (((h >> 2) & 3) << 4)) - 32,
          ((bytes[ql + l]! >> 4) | (((h >> 4) & 3) << 4)) - 32,
          ((bytes[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4)) - 32,
        ];
        for (let g = 0; g < 4; g++) out[b * 256 + 128 * half + 32 * g + l] = f(f(d * view.getInt8(sc + is + 2 * g)) * q[g]!);
      }
    }
  }
  return out;
}
