/* k_quantize: the int8 / int4 codecs of quant.h (and src/quant.ts), the same code in the SIMD and the scalar build. */
#include "quant.h"
#include "kernels.h"

/* C roundf for v >= 0 (round half away from zero) without libm: v - trunc(v) is exact. */
static inline float round_half_up(float v) {
  float t = __builtin_truncf(v);
  return v - t >= 0.5f ? t + 1.0f : t;
}

int k_quantize(uint8_t *dst, const float *src, int dt, int D) {
  if ((dt & DUO_DTYPE_MASK) == DUO_INT8) {
    float amax = 0.0f;
    for (int d = 0; d < D; d++) {
      float a = __builtin_fabsf(src[d]);
      amax = a > amax ? a : amax;
    }
    const float scale = amax / 127.0f;
    for (int d = 0; d < D; d++) {
      float q = scale == 0.0f ? 0.0f : __builtin_rintf(src[d] / scale); /* rint: ties to even (f32.nearest) */
      q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
      dst[d] = (uint8_t)(int8_t)q;
    }
    __builtin_memcpy(dst + D, &scale, 4);
    return !(127.0f * scale < __builtin_inff());
  }
  float mn = src[0], mx = src[0];
  for (int d = 1; d < D; d++) {
    /* Math.min's order (src/quant.ts): -0 is below +0, so a min that is a zero of both signs is stored as -0 */
    mn = src[d] < mn || (src[d] == mn && __builtin_signbit(src[d])) ? src[d] : mn;
    mx = src[d] > mx ? src[d] : mx;
  }
  const float scale = (mx - mn) / 15.0f + 1e-8f; /* the f32 scale codes with; the record keeps its f16 rounding */
  for (int d = 0; d < D; d += 2) {
    float a = round_half_up((src[d] - mn) / scale), b = round_half_up((src[d + 1] - mn) / scale);
    a = a > 15.0f ? 15.0f : a;
    b = b > 15.0f ? 15.0f : b;
    dst[d / 2] = (uint8_t)((int)a << 4 | (int)b);
  }
  float meta[4] = {scale, mn, 0.0f, 0.0f};
  uint8_t bits[8];
  k_convert(bits, meta, DUO_F16, 4); /* f32 -> f16, RNE */
  __builtin_memcpy(dst + D / 2, bits, 4);
  /* the values grow with q: q = 0 and q = 15 bound them all */
  const float s = q_f16_to_f32((uint32_t)bits[0] | (uint32_t)bits[1] << 8), z = q_f16_to_f32((uint32_t)bits[2] | (uint32_t)bits[3] << 8);
  const float top = q_f16_round(q_f16_round(15.0f * s) + z);
  return !(__builtin_fabsf(z) < __builtin_inff() && top < __builtin_inff());
}
