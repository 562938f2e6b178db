/*
 * SIMD attention kernels (twins in attend_scalar.c). Each element of K or V is loaded and widened ONCE per group of
 * 4 query vectors and reused by all of them (GQA: the G query heads of a KV head, and for prefill several query rows).
 * Head dims 64 and 128 get their own fully unrolled copies (the `D` argument of the *_impl functions is a constant
 * there); any other multiple of 4 runs the same code with a loop.
 */
#include "duo.h"
#include "kernels.h"
#include "math.h"
#include "simd.h"

/* Elements [d, d+8) of a row of dtype dt -> two f32 vectors (natural order). */
ALWAYS_INLINE void ld8(const uint8_t *row, int d, int dt, VF *lo, VF *hi) {
  if (dt == DUO_F32) {
    *lo = VF_LOAD(row + 4 * d);
    *hi = VF_LOAD(row + 4 * d + 16);
    return;
  }
  VI h = VH_LOAD8(row + 2 * d);
  VI a = VH_LO(h), b = VH_HI(h);
  if (dt == DUO_BF16) { *lo = a; *hi = b; }
  else if (dt == DUO_F16) { *lo = VF_F16_FAST(a); *hi = VF_F16_FAST(b); }
  else { *lo = vf_f16_exact(a); *hi = vf_f16_exact(b); }
}

/* Elements [d, d+4). */
ALWAYS_INLINE VF ld4(const uint8_t *row, int d, int dt) {
  if (dt == DUO_F32) return VF_LOAD(row + 4 * d);
  VI a = VH_LO(VH_LOAD4(row + 2 * d));
  if (dt == DUO_BF16) return a;
  return dt == DUO_F16 ? VF_F16_FAST(a) : vf_f16_exact(a);
}

/* Dispatch a kernel body on (dtype, D) so that the common cases are compiled with constants. */
#define DISPATCH(impl, dt, D, ...)                                                                                   \
  do {                                                                                                               \
    switch (dt) {                                                                                                    \
      case DUO_F32:  if (D == 128) impl(__VA_ARGS__, DUO_F32, 128); else if (D == 64) impl(__VA_ARGS__, DUO_F32, 64); else impl(__VA_ARGS__, DUO_F32, D); break; \
      case DUO_BF16: if (D == 128) impl(__VA_ARGS__, DUO_BF16, 128); else if (D == 64) impl(__VA_ARGS__, DUO_BF16, 64); else impl(__VA_ARGS__, DUO_BF16, D); break; \
      case DUO_F16:  if (D == 128) impl(__VA_ARGS__, DUO_F16, 128); else if (D == 64) impl(__VA_ARGS__, DUO_F16, 64); else impl(__VA_ARGS__, DUO_F16, D); break; \
      default:       impl(__VA_ARGS__, DUO_F16_SPECIAL, D); break;                                                   \
    }                                                                                                                \
  } while (0)

/* 4 query vectors (q0 .. q0 + 3D) against one key row: the 4 dot products as one vector. Two accumulators per query
 * (elements 0-3 and 4-7 of each 8) keep the add chains short enough for the CPU to overlap them. */
ALWAYS_INLINE VF dot4(const float *q0, const uint8_t *kr, int dt, int D) {
  const float *q1 = q0 + D, *q2 = q1 + D, *q3 = q2 + D;
  VF a0 = VF_ZERO, a1 = VF_ZERO, a2 = VF_ZERO, a3 = VF_ZERO, b0 = VF_ZERO, b1 = VF_ZERO, b2 = VF_ZERO, b3 = VF_ZERO;
  int d = 0;
  for (; d + 8 <= D; d += 8) {
    VF lo, hi;
    ld8(kr, d, dt, &lo, &hi);
    a0 = VF_MAD(a0, VF_LOAD(q0 + d), lo); b0 = VF_MAD(b0, VF_LOAD(q0 + d + 4), hi);
    a1 = VF_MAD(a1, VF_LOAD(q1 + d), lo); b1 = VF_MAD(b1, VF_LOAD(q1 + d + 4), hi);
    a2 = VF_MAD(a2, VF_LOAD(q2 + d), lo); b2 = VF_MAD(b2, VF_LOAD(q2 + d + 4), hi);
    a3 = VF_MAD(a3, VF_LOAD(q3 + d), lo); b3 = VF_MAD(b3, VF_LOAD(q3 + d + 4), hi);
  }
  if (d < D) {
    VF x = ld4(kr, d, dt);
    a0 = VF_MAD(a0, VF_LOAD(q0 + d), x); a1 = VF_MAD(a1, VF_LOAD(q1 + d), x);
    a2 = VF_MAD(a2, VF_LOAD(q2 + d), x); a3 = VF_MAD(a3, VF_LOAD(q3 + d), x);
  }
  return vf_sum4(VF_ADD(a0, b0), VF_ADD(a1, b1), VF_ADD(a2, b2), VF_ADD(a3, b3));
}

ALWAYS_INLINE void scores_m4_impl(const float *qp, int M, const uint8_t *k, uint32_t stride, int n, float *s, int dt,
                                  int D) {
  for (int i = 0; i < n; i++) {
    const uint8_t *kr = k + (uint32_t)i * stride;
    for (int m = 0; m < M; m += 4) VF_STORE(s + i * M + m, dot4(qp + m * D, kr, dt, D));
  }
}
void k_scores_m4(const float *qp, int M, int D, const uint8_t *k, uint32_t stride, int dt, int n, float *s) {
  DISPATCH(scores_m4_impl, dt, D, qp, M, k, stride, n, s);
}

/* One query vector against 4 key rows at once (4 accumulators, one per key). */
ALWAYS_INLINE void scores_m1_impl(const float *q, const uint8_t *k, uint32_t stride, int n, float *s, int dt, int D) {
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    const uint8_t *k0 = k + (uint32_t)i * stride, *k1 = k0 + stride, *k2 = k1 + stride, *k3 = k2 + stride;
    VF a0 = VF_ZERO, a1 = VF_ZERO, a2 = VF_ZERO, a3 = VF_ZERO;
    int d = 0;
    for (; d + 8 <= D; d += 8) {
      VF ql = VF_LOAD(q + d), qh = VF_LOAD(q + d + 4), lo, hi;
      ld8(k0, d, dt, &lo, &hi); a0 = VF_MAD(VF_MAD(a0, ql, lo), qh, hi);
      ld8(k1, d, dt, &lo, &hi); a1 = VF_MAD(VF_MAD(a1, ql, lo), qh, hi);
      ld8(k2, d, dt, &lo, &hi); a2 = VF_MAD(VF_MAD(a2, ql, lo), qh, hi);
      ld8(k3, d, dt, &lo, &hi); a3 = VF_MAD(VF_MAD(a3, ql, lo), qh, hi);
    }
    if (d < D) {
      VF ql = VF_LOAD(q + d);
      a0 = VF_MAD(a0, ql, ld4(k0, d, dt)); a1 = VF_MAD(a1, ql, ld4(k1, d, dt));
      a2 = VF_MAD(a2, ql, ld4(k2, d, dt)); a3 = VF_MAD(a3, ql, ld4(k3, d, dt));
    }
    VF_STORE(s + i, vf_sum4(a0, a1, a2, a3));
  }
  for (; i < n; i++) {
    const uint8_t *kr = k + (uint32_t)i * stride;
    VF a = VF_ZERO, b = VF_ZERO;
    int d = 0;
    for (; d + 8 <= D; d += 8) {
      VF lo, hi;
      ld8(kr, d, dt, &lo, &hi);
      a = VF_MAD(a, VF_LOAD(q + d), lo); b = VF_MAD(b, VF_LOAD(q + d + 4), hi);
    }
    if (d < D) a = VF_MAD(a, VF_LOAD(q + d), ld4(kr, d, dt));
    s[i] = vf_hsum(VF_ADD(a, b));
  }
}
void k_scores_m1(const float *q, int D, const uint8_t *k, uint32_t stride, int dt, int n, float *s) {
  DISPATCH(scores_m1_impl, dt, D, q, k, stride, n, s);
}

/* A max that is -Inf for an empty row becomes 0 for the subtraction, so no -Inf - -Inf = NaN appears. */
ALWAYS_INLINE VF finite_or_zero(VF mx) { return VF_SELECT(VF_EQ(mx, VF_SPLAT(-__builtin_inff())), VF_ZERO, mx); }

void k_softmax_m4(float *s, int n, int M, float *mx, float *l, float *alpha) {
  for (int m = 0; m < M; m += 4) {
    VF old = VF_LOAD(mx + m), top = old;
    for (int i = 0; i < n; i++) top = VF_MAX(top, VF_LOAD(s + i * M + m));
    VF sub = finite_or_zero(top), sum = VF_ZERO;
    for (int i = 0; i < n; i++) {
      VF p = vf_exp2(VF_SUB(VF_LOAD(s + i * M + m), sub));
      VF_STORE(s + i * M + m, p);
      sum = VF_ADD(sum, p);
    }
    VF a = vf_exp2(VF_SUB(old, sub));
    VF_STORE(alpha + m, a);
    VF_STORE(l + m, VF_ADD(VF_MUL(VF_LOAD(l + m), a), sum));
    VF_STORE(mx + m, top);
  }
}

void k_softmax_m1(float *s, int n, float *mx, float *l, float *alpha) {
  VF top4 = VF_SPLAT(*mx);
  int i = 0;
  for (; i + 4 <= n; i += 4) top4 = VF_MAX(top4, VF_LOAD(s + i));
  float top = vf_hmax(top4);
  for (; i < n; i++) top = s[i] > top ? s[i] : top;
  float sub = top == -__builtin_inff() ? 0.0f : top;
  VF sub4 = VF_SPLAT(sub), sum4 = VF_ZERO;
  for (i = 0; i + 4 <= n; i += 4) {
    VF p = vf_exp2(VF_SUB(VF_LOAD(s + i), sub4));
    VF_STORE(s + i, p);
    sum4 = VF_ADD(sum4, p);
  }
  float sum = vf_hsum(sum4);
  for (; i < n; i++) { s[i] = exp2_f32(s[i] - sub); sum += s[i]; }
  *alpha = exp2_f32(*mx - sub);
  *l = *l * *alpha + sum;
  *mx = top;
}

/* 4 query vectors x 8 elements of acc stay in registers while the loop runs over the n value rows. */
ALWAYS_INLINE void pv_m4_impl(float *acc, const float *alpha, const float *p, int M, const uint8_t *v, uint32_t stride,
                              int n, int dt, int D) {
  for (int m = 0; m < M; m += 4) {
    VF al0 = VF_LOAD_SPLAT(alpha + m), al1 = VF_LOAD_SPLAT(alpha + m + 1);
    VF al2 = VF_LOAD_SPLAT(alpha + m + 2), al3 = VF_LOAD_SPLAT(alpha + m + 3);
    float *c0 = acc + m * D, *c1 = c0 + D, *c2 = c1 + D, *c3 = c2 + D;
    int d = 0;
    for (; d + 8 <= D; d += 8) {
      VF x0 = VF_MUL(VF_LOAD(c0 + d), al0), y0 = VF_MUL(VF_LOAD(c0 + d + 4), al0);
      VF x1 = VF_MUL(VF_LOAD(c1 + d), al1), y1 = VF_MUL(VF_LOAD(c1 + d + 4), al1);
      VF x2 = VF_MUL(VF_LOAD(c2 + d), al2), y2 = VF_MUL(VF_LOAD(c2 + d + 4), al2);
      VF x3 = VF_MUL(VF_LOAD(c3 + d), al3), y3 = VF_MUL(VF_LOAD(c3 + d + 4), al3);
      const uint8_t *vr = v;
      const float *pi = p + m;
      for (int i = 0; i < n; i++, vr += stride, pi += M) {
        VF lo, hi, w;
        ld8(vr, d, dt, &lo, &hi);
        w = VF_LOAD_SPLAT(pi);     x0 = VF_MAD(x0, w, lo); y0 = VF_MAD(y0, w, hi);
        w = VF_LOAD_SPLAT(pi + 1); x1 = VF_MAD(x1, w, lo); y1 = VF_MAD(y1, w, hi);
        w = VF_LOAD_SPLAT(pi + 2); x2 = VF_MAD(x2, w, lo); y2 = VF_MAD(y2, w, hi);
        w = VF_LOAD_SPLAT(pi + 3); x3 = VF_MAD(x3, w, lo); y3 = VF_MAD(y3, w, hi);
      }
      VF_STORE(c0 + d, x0); VF_STORE(c0 + d + 4, y0); VF_STORE(c1 + d, x1); VF_STORE(c1 + d + 4, y1);
      VF_STORE(c2 + d, x2); VF_STORE(c2 + d + 4, y2); VF_STORE(c3 + d, x3); VF_STORE(c3 + d + 4, y3);
    }
    if (d < D) {
      VF x0 = VF_MUL(VF_LOAD(c0 + d), al0), x1 = VF_MUL(VF_LOAD(c1 + d), al1);
      VF x2 = VF_MUL(VF_LOAD(c2 + d), al2), x3 = VF_MUL(VF_LOAD(c3 + d), al3);
      const uint8_t *vr = v;
      const float *pi = p + m;
      for (int i = 0; i < n; i++, vr += stride, pi += M) {
        VF x = ld4(vr, d, dt);
        x0 = VF_MAD(x0, VF_LOAD_SPLAT(pi), x); x1 = VF_MAD(x1, VF_LOAD_SPLAT(pi + 1), x);
        x2 = VF_MAD(x2, VF_LOAD_SPLAT(pi + 2), x); x3 = VF_MAD(x3, VF_LOAD_SPLAT(pi + 3), x);
      }
      VF_STORE(c0 + d, x0); VF_STORE(c1 + d, x1); VF_STORE(c2 + d, x2); VF_STORE(c3 + d, x3);
    }
  }
}
void k_pv_m4(float *acc, const float *alpha, const float *p, int M, int D, const uint8_t *v, uint32_t stride, int dt,
             int n) {
  DISPATCH(pv_m4_impl, dt, D, acc, alpha, p, M, v, stride, n);
}

/* One query vector: 8 elements of acc in registers, 4 value rows per step summed as a tree before the add. */
ALWAYS_INLINE void pv_m1_impl(float *acc, float alpha, const float *p, const uint8_t *v, uint32_t stride, int n, int dt,
                              int D) {
  VF al = VF_SPLAT(alpha);
  int d = 0;
  for (; d + 8 <= D; d += 8) {
    VF x = VF_MUL(VF_LOAD(acc + d), al), y = VF_MUL(VF_LOAD(acc + d + 4), al);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
      const uint8_t *v0 = v + (uint32_t)i * stride;
      VF l0, h0, l1, h1, l2, h2, l3, h3;
      ld8(v0, d, dt, &l0, &h0); ld8(v0 + stride, d, dt, &l1, &h1);
      ld8(v0 + 2 * stride, d, dt, &l2, &h2); ld8(v0 + 3 * stride, d, dt, &l3, &h3);
      VF w0 = VF_LOAD_SPLAT(p + i), w1 = VF_LOAD_SPLAT(p + i + 1), w2 = VF_LOAD_SPLAT(p + i + 2), w3 = VF_LOAD_SPLAT(p + i + 3);
      x = VF_ADD(x, VF_ADD(VF_MAD(VF_MUL(w0, l0), w1, l1), VF_MAD(VF_MUL(w2, l2), w3, l3)));
      y = VF_ADD(y, VF_ADD(VF_MAD(VF_MUL(w0, h0), w1, h1), VF_MAD(VF_MUL(w2, h2), w3, h3)));
    }
    for (; i < n; i++) {
      VF lo, hi, w = VF_LOAD_SPLAT(p + i);
      ld8(v + (uint32_t)i * stride, d, dt, &lo, &hi);
      x = VF_MAD(x, w, lo); y = VF_MAD(y, w, hi);
    }
    VF_STORE(acc + d, x); VF_STORE(acc + d + 4, y);
  }
  if (d < D) {
    VF x = VF_MUL(VF_LOAD(acc + d), al);
    for (int i = 0; i < n; i++) x = VF_MAD(x, VF_LOAD_SPLAT(p + i), ld4(v + (uint32_t)i * stride, d, dt));
    VF_STORE(acc + d, x);
  }
}
void k_pv_m1(float *acc, float alpha, const float *p, int D, const uint8_t *v, uint32_t stride, int dt, int n) {
  DISPATCH(pv_m1_impl, dt, D, acc, alpha, p, v, stride, n);
}

ALWAYS_INLINE void widen_impl(float *dst, const uint8_t *src, uint32_t stride, int n, int dt, int D) {
  for (int i = 0; i < n; i++, dst += D, src += stride) {
    int d = 0;
    for (; d + 8 <= D; d += 8) {
      VF lo, hi;
      ld8(src, d, dt, &lo, &hi);
      VF_STORE(dst + d, lo); VF_STORE(dst + d + 4, hi);
    }
    if (d < D) VF_STORE(dst + d, ld4(src, d, dt));
  }
}
void k_widen(float *dst, const uint8_t *src, uint32_t stride, int dt, int n, int D) {
  DISPATCH(widen_impl, dt, D, dst, src, stride, n);
}

void k_axpby(float *y, const float *a, float wa, const float *b, float wb, int D) {
  VF va = VF_SPLAT(wa), vb = VF_SPLAT(wb);
  for (int d = 0; d < D; d += 4) VF_STORE(y + d, VF_MAD(VF_MUL(VF_LOAD(a + d), va), VF_LOAD(b + d), vb));
}
