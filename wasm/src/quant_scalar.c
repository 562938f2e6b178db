/* Scalar twin of quant_simd.c: k_dequant one element at a time (int4 through the record's 16-entry table). */
#include "quant.h"

void k_dequant(float *dst, const uint8_t *src, uint32_t stride, int dt, int n, int D) {
  for (int i = 0; i < n; i++, src += stride, dst += D) {
    if ((dt & DUO_DTYPE_MASK) == DUO_INT8) {
      float scale;
      __builtin_memcpy(&scale, src + D, 4);
      for (int d = 0; d < D; d++) dst[d] = (float)(int8_t)src[d] * scale;
      continue;
    }
    float lut[16];
    q_int4_table((uint32_t)src[D / 2] | (uint32_t)src[D / 2 + 1] << 8, (uint32_t)src[D / 2 + 2] | (uint32_t)src[D / 2 + 3] << 8, lut);
    for (int d = 0; d < D; d += 2) {
      dst[d] = lut[src[d / 2] >> 4];
      dst[d + 1] = lut[src[d / 2] & 15];
    }
  }
}
