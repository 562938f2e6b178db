/* Scalar twins of convert_simd.c (same three f16 cases, same bf16 rounding), one element at a time. */
#include "duo.h"
#include "kernels.h"
#include "math.h"

static uint16_t bf16_bits(uint32_t b) {
  if ((b & 0x7fffffff) > 0x7f800000) return (uint16_t)((b >> 16) | 0x40);
  return (uint16_t)((b + 0x7fff + ((b >> 16) & 1)) >> 16);
}

static uint16_t f16_bits(uint32_t b) {
  uint32_t sign = (b >> 16) & 0x8000, a = b & 0x7fffffff, h;
  if (a > 0x477fffff) h = a > 0x7f800000 ? 0x7e00 : 0x7c00;
  else if (a < 0x38800000) h = f32_bits(f32_from_bits(a) + 0.5f) - 0x3f000000;
  else h = (a + 0xc8000fff + ((a >> 13) & 1)) >> 13;
  return (uint16_t)(h | sign);
}

int k_convert(uint8_t *dst, const float *src, int dt, int n) {
  uint16_t *out = (uint16_t *)dst;
  const uint16_t e = dt == DUO_BF16 ? 0x7f80 : 0x7c00;
  int count = 0;
  for (int i = 0; i < n; i++) {
    uint32_t b = f32_bits(src[i]);
    out[i] = dt == DUO_BF16 ? bf16_bits(b) : f16_bits(b);
    count += (out[i] & e) == e;
  }
  return count;
}

int k_nonfinite(const float *src, int n) {
  int count = 0;
  for (int i = 0; i < n; i++) count += (f32_bits(src[i]) & 0x7f800000) == 0x7f800000;
  return count;
}
