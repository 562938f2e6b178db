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

/* Scores over int4 records: each record's values from its table, then the dot product with each query vector of the
 * quads (interleaved layout, kernels.h), in element order like k_scores_m4. */
void k_scores_int4_m4(const float *qp, int M, int D, const uint8_t *k, uint32_t stride, int n, float *s) {
  for (int i = 0; i < n; i++, k += stride) {
    float lut[16];
    q_int4_table((uint32_t)k[D / 2] | (uint32_t)k[D / 2 + 1] << 8, (uint32_t)k[D / 2 + 2] | (uint32_t)k[D / 2 + 3] << 8, lut);
    for (int m = 0; m < M; m++) {
      const float *qq = qp + (m / 4) * 4 * D;
      float a = 0.0f;
      for (int d = 0; d < D; d++) a += qq[((d / 4) * 4 + m % 4) * 4 + d % 4] * lut[d % 2 ? k[d / 2] & 15 : k[d / 2] >> 4];
      s[i * M + m] = a;
    }
  }
}
