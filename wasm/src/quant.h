/*
 * Quantized KV (DUO_INT8, DUO_INT4): the C twin of src/quant.ts, bit for bit. A quantized buffer is token-major
 * (NHD) only, and each head's D values of a row are one record of kv_head_bytes(dt, D) bytes:
 *   int8  [D x int8][scale: f32]               x = q * scale                      (symmetric, RNE codes)
 *   int4  [D/2 bytes][s: f16][z: f16]          x = f16(f16(q * s) + z)            (upstream's KV4: roundf codes,
 *         byte i = q[2i] << 4 | q[2i + 1]: the even element in the high nibble)     f16 arithmetic dequant)
 * Appends quantize each record (k_quantize, quant.c: the same code in every build: append is not on the decode
 * path). Attention reads the packed bytes only (attend.c run_block): in decode, int8 K and V rows go straight into the
 * score and P.V kernels as codes, their scale applied per row to the scores and to the weights; int4 blocks (and
 * prefill's int8 blocks) are dequantized into f32 rows of the workspace right before the f32 kernels use them
 * (k_dequant, the twins quant_simd.c / quant_scalar.c). int4 keeps its per-record table because the codec
 * dequantizes in f16 arithmetic (two roundings per value): scale * sum(q c) + min * sum(q) would differ from it by up
 * to 2^-11 relative, outside the f32 tolerance the conformance tests hold every kernel to.
 * Values must be finite (int4: |x| <= 65504); the engine checks before appending. An int4 record of values close to
 * +-65504 can still decode to Inf (f16(q * s) overflows): k_quantize reports it, like a float append of Inf.
 */
#ifndef DUO_QUANT_H
#define DUO_QUANT_H
#include <stdint.h>
#include "duo.h"
#include "math.h"

/* Bytes of one head's D values of one row in a KV buffer of dtype dt (flags ignored). */
static inline uint32_t kv_head_bytes(int dt, uint32_t D) {
  switch (dt & DUO_DTYPE_MASK) {
    case DUO_F32: return D * 4;
    case DUO_INT8: return D + 4;
    case DUO_INT4: return D / 2 + 4;
    default: return D * 2;
  }
}

static inline int is_quantized(int dt) { return (dt & DUO_DTYPE_MASK) == DUO_INT8 || (dt & DUO_DTYPE_MASK) == DUO_INT4; }

/* f16 bits -> f32, exact (f16 Inf/NaN never occur in a record of finite input, but are widened exactly too). */
static inline float q_f16_to_f32(uint32_t h) {
  if ((h & 0x7c00) == 0x7c00) return f32_from_bits((h & 0x8000) << 16 | 0x7f800000 | (h & 0x3ff) << 13);
  return f32_from_bits((h & 0x8000) << 16 | (h & 0x7fff) << 13) * 0x1p112f;
}

/* x rounded to the nearest f16 value (ties to even), as an f32: subnormals, overflow to Inf, NaN kept. */
static inline float q_f16_round(float x) {
  uint32_t b = f32_bits(x), sign = b & 0x80000000u, a = b & 0x7fffffffu;
  if (a > 0x7f800000u) return x;
  if (a >= 0x477ff000u) return f32_from_bits(sign | 0x7f800000u); /* >= 65520 rounds past 65504 */
  if (a < 0x38800000u) { /* below 2^-14: multiples of 2^-24, which is the ulp of 0.5 + |x| */
    float r = (f32_from_bits(a) + 0.5f) - 0.5f;
    return f32_from_bits(sign | f32_bits(r));
  }
  return f32_from_bits(sign | ((a + 0xfffu + ((a >> 13) & 1u)) & ~0x1fffu));
}

/* The 16 values an int4 record with f16 scale bits s and min bits z holds: lut[q] = f16(f16(q * s) + z). */
static inline void q_int4_table(uint32_t s, uint32_t z, float *lut) {
  const float sf = q_f16_to_f32(s), zf = q_f16_to_f32(z);
  for (int q = 0; q < 16; q++) lut[q] = q_f16_round(q_f16_round((float)q * sf) + zf);
}

/* Quantize D finite floats into the record at dst (dt DUO_INT8 or DUO_INT4; int4 needs D even). Returns 1 when the
 * record decodes to Inf somewhere (int4 rows reaching past +-65504 after f16 rounding, as upstream's codec does),
 * else 0: duo_append then flags the buffer DUO_NONFINITE, so that masked keys' values are skipped exactly. */
int k_quantize(uint8_t *dst, const float *src, int dt, int D);

/* dst[i*D + d] = element d of record i, for i < n: records `stride` bytes apart from src, dequantized exactly as
 * above (dt DUO_INT8 or DUO_INT4, D a multiple of 4). */
void k_dequant(float *dst, const uint8_t *src, uint32_t stride, int dt, int n, int D);

#endif
