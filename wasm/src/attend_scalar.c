/* Scalar twins of attend_simd.c: the same contracts (kernels.h), one element at a time. */
#include "duo.h"
#include "kernels.h"
#include "math.h"

/* Element d of a row, widened exactly (the scalar twin does not need DUO_NONFINITE to be exact); an int8 record's
 * code as an integer (the driver applies the scale). */
static float ld(const uint8_t *row, int d, int dt) {
  dt &= DUO_DTYPE_MASK;
  if (dt == DUO_F32) return ((const float *)row)[d];
  if (dt == DUO_INT8) return (float)(int8_t)row[d];
  uint32_t h = ((const uint16_t *)row)[d];
  if (dt == DUO_BF16) return f32_from_bits(h << 16);
  if ((h & 0x7c00) == 0x7c00) return f32_from_bits((h & 0x8000) << 16 | 0x7f800000 | (h & 0x3ff) << 13); /* Inf/NaN */
  return f32_from_bits((h & 0x8000) << 16 | (h & 0x7fff) << 13) * 0x1p112f; /* normal and subnormal, exact */
}

/* Dot product of a key row with query vector b of the quad at qq (interleaved layout, kernels.h). */
static float dot_quad(const float *qq, int b, const uint8_t *kr, int dt, int D) {
  float a = 0.0f;
  for (int d = 0; d < D; d++) a += qq[((d / 4) * 4 + b) * 4 + d % 4] * ld(kr, d, dt);
  return a;
}

void k_scores_m4(const float *qp, int M, int D, const uint8_t *k, uint32_t stride, int dt, int n, float *s) {
  for (int i = 0; i < n; i++)
    for (int m = 0; m < M; m++) s[i * M + m] = dot_quad(qp + (m / 4) * 4 * D, m % 4, k + (uint32_t)i * stride, dt, D);
}

void k_scores_m1(const float *q, int D, const uint8_t *k, uint32_t stride, int dt, int n, float *s) {
  for (int i = 0; i < n; i++) {
    float a = 0.0f;
    for (int d = 0; d < D; d++) a += q[d] * ld(k + (uint32_t)i * stride, d, dt);
    s[i] = a;
  }
}

void k_softmax_m4(float *s, int n, int M, float *mx, float *l, float *alpha) {
  for (int m = 0; m < M; m++) {
    float top = mx[m];
    for (int i = 0; i < n; i++) top = s[i * M + m] > top ? s[i * M + m] : top;
    float sub = top == -__builtin_inff() ? 0.0f : top, sum = 0.0f;
    for (int i = 0; i < n; i++) {
      s[i * M + m] = exp2_f32(s[i * M + m] - sub);
      sum += s[i * M + m];
    }
    alpha[m] = exp2_f32(mx[m] - sub);
    l[m] = l[m] * alpha[m] + sum;
    mx[m] = top;
  }
}

void k_softmax_m1(float *s, int n, float *mx, float *l, float *alpha) { k_softmax_m4(s, n, 1, mx, l, alpha); }

void k_pv_m4(float *acc, const float *alpha, const float *p, int M, int D, const uint8_t *v, uint32_t stride, int dt,
             int n) {
  for (int m = 0; m < M; m++) {
    float *c = acc + m * D;
    for (int d = 0; d < D; d++) c[d] *= alpha[m];
    for (int i = 0; i < n; i++) {
      const uint8_t *vr = v + (uint32_t)i * stride;
      if (p[i * M + m] == 0.0f && (dt & DUO_NONFINITE)) continue; /* a masked key, maybe with Inf/NaN values */
      for (int d = 0; d < D; d++) c[d] += p[i * M + m] * ld(vr, d, dt);
    }
  }
}

void k_pv_m1(float *acc, float alpha, const float *p, int D, const uint8_t *v, uint32_t stride, int dt, int n) {
  k_pv_m4(acc, &alpha, p, 1, D, v, stride, dt, n);
}

/* Element (i, d) of a 16-bit tile (duo.h), widened exactly. */
static float k64(const uint8_t *kt, int D, int i, int d, int dt) { return ld(kt, ((i / 8) * D + d) * 8 + i % 8, dt); }
static float v64(const uint8_t *vt, int i, int d, int dt) { return ld(vt, ((d / 8) * DUO_TILE + i) * 8 + d % 8, dt); }

void k_scores_k64(const float *q4, int D, const uint8_t *kt, int dt, int n, float *s) {
  for (int i = 0; i < n; i++)
    for (int h = 0; h < 4; h++) {
      float a = 0.0f;
      for (int d = 0; d < D; d++) a += q4[d * 4 + h] * k64(kt, D, i, d, dt);
      s[i * 4 + h] = a;
    }
}

/* Element d of the natural order sits at even_odd(d) in an eo accumulator (kernels.h). */
static int even_odd(int d) { return (d & ~7) + (d & 1) * 4 + (d & 7) / 2; }

void k_pv_v64(float *acc, const float *alpha, const float *p, int D, const uint8_t *vt, int dt, int n) {
  for (int h = 0; h < 4; h++) {
    float *c = acc + h * D;
    for (int d = 0; d < D; d++) c[d] *= alpha[h];
    for (int i = 0; i < n; i++)
      for (int d = 0; d < D; d++) c[even_odd(d)] += p[i * 4 + h] * v64(vt, i, d, dt);
  }
}

void k_widen_k64(float *dst, const uint8_t *kt, int dt, int i0, int n, int D) {
  for (int i = 0; i < n; i++)
    for (int d = 0; d < D; d++) dst[i * D + d] = k64(kt, D, i0 + i, d, dt);
}

void k_widen_v64(float *dst, const uint8_t *vt, int dt, int i0, int n, int D, int eo) {
  for (int i = 0; i < n; i++)
    for (int d = 0; d < D; d++) dst[i * D + (eo ? even_odd(d) : d)] = v64(vt, i0 + i, d, dt);
}

void k_widen(float *dst, const uint8_t *src, uint32_t stride, int dt, int n, int D) {
  for (int i = 0; i < n; i++)
    for (int d = 0; d < D; d++) dst[i * D + d] = ld(src + (uint32_t)i * stride, d, dt);
}

void k_axpby(float *y, const float *a, float wa, const float *b, float wb, int D) {
  for (int d = 0; d < D; d++) y[d] = a[d] * wa + b[d] * wb;
}

void k_scale(float *y, const float *x, float s, int D) {
  for (int d = 0; d < D; d++) y[d] = x[d] * s;
}
