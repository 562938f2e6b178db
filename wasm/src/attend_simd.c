/*
 * SIMD attention kernels (twins in attend_scalar.c). Shapes chosen for how V8 and JSC compile wasm SIMD:
 *  - loops stay rolled, 4 elements per step (any head dim that is a multiple of 4, no tails), and no step keeps more
 *    than ~14 vectors alive: the engines have 15 XMM registers and spill the rest to the stack on every iteration;
 *  - every K/V element is loaded and widened once per group of 4 query vectors and reused by all four (GQA: the G
 *    query heads of a KV head, and for prefill several query rows); the 4 queries of a group are interleaved in
 *    memory so that one pointer reaches all of them (constant offsets fold into the loads);
 *  - mul then add in independent accumulators, so the add latency never limits the loop.
 * K/V rows are f32 or bf16 here; f16 blocks are widened to f32 first (k_widen), as are bf16 blocks shared by many
 * query vectors.
 */
#include "duo.h"
#include "kernels.h"
#include "math.h"
#include "simd.h"
#include "quant.h"

/* Elements [d, d+4) of a row; an int8 record's codes as integers (the 8-byte load stays inside the record: its 4
 * scale bytes follow the last code). */
ALWAYS_INLINE VF ld4(const uint8_t *row, int d, int dt) {
  if (dt == DUO_INT8) return VF_FROM_I32(VI32_LO16(VI16_LOAD8(row + d)));
  return dt == DUO_F32 ? VF_LOAD(row + 4 * d) : VF_BF16(row + 2 * d);
}

/* Elements [d, d+8) of a row as two vectors (an int8 row: one load for both). */
ALWAYS_INLINE void ld8(const uint8_t *row, int d, int dt, VF *lo, VF *hi) {
  if (dt == DUO_INT8) {
    VI c = VI16_LOAD8(row + d);
    *lo = VF_FROM_I32(VI32_LO16(c));
    *hi = VF_FROM_I32(VI32_HI16(c));
  } else {
    *lo = ld4(row, d, dt);
    *hi = ld4(row, d + 4, dt);
  }
}

/* acc + w * x; with `guard`, a zero weight adds exactly 0 even when x is Inf or NaN (the key was masked). */
ALWAYS_INLINE VF mad_w(VF acc, VF w, VF x, int guard) {
  return guard ? VF_ADD(acc, VF_SELECT(VF_EQ(w, VF_ZERO), VF_ZERO, VF_MUL(w, x))) : VF_MAD(acc, w, x);
}

/* Two rows against one quad of interleaved queries: s[0..3] (row a) and s[M..M+3] (row b). */
ALWAYS_INLINE void dot_2x4(const float *qq, const uint8_t *ka, const uint8_t *kb, int D, int dt, float *s, int M) {
  VF a0 = VF_ZERO, a1 = VF_ZERO, a2 = VF_ZERO, a3 = VF_ZERO, b0 = VF_ZERO, b1 = VF_ZERO, b2 = VF_ZERO, b3 = VF_ZERO;
  for (int d = 0; d < D; d += 4, qq += 16) {
    VF x = ld4(ka, d, dt), y = ld4(kb, d, dt), w;
    w = VF_LOAD(qq);      a0 = VF_MAD(a0, w, x); b0 = VF_MAD(b0, w, y);
    w = VF_LOAD(qq + 4);  a1 = VF_MAD(a1, w, x); b1 = VF_MAD(b1, w, y);
    w = VF_LOAD(qq + 8);  a2 = VF_MAD(a2, w, x); b2 = VF_MAD(b2, w, y);
    w = VF_LOAD(qq + 12); a3 = VF_MAD(a3, w, x); b3 = VF_MAD(b3, w, y);
  }
  VF_STORE(s, vf_sum4(a0, a1, a2, a3));
  VF_STORE(s + M, vf_sum4(b0, b1, b2, b3));
}

/* One row against one quad. */
ALWAYS_INLINE VF dot_1x4(const float *qq, const uint8_t *k, int D, int dt) {
  VF a0 = VF_ZERO, a1 = VF_ZERO, a2 = VF_ZERO, a3 = VF_ZERO;
  for (int d = 0; d < D; d += 4, qq += 16) {
    VF x = ld4(k, d, dt);
    a0 = VF_MAD(a0, VF_LOAD(qq), x); a1 = VF_MAD(a1, VF_LOAD(qq + 4), x);
    a2 = VF_MAD(a2, VF_LOAD(qq + 8), x); a3 = VF_MAD(a3, VF_LOAD(qq + 12), x);
  }
  return vf_sum4(a0, a1, a2, a3);
}

ALWAYS_INLINE void scores_m4_impl(const float *qp, int M, int D, const uint8_t *k, uint32_t stride, int n, float *s,
                                  int dt) {
  int i = 0;
  for (; i + 2 <= n; i += 2) {
    const uint8_t *ka = k + (uint32_t)i * stride;
    for (int m = 0; m < M; m += 4) dot_2x4(qp + m * D, ka, ka + stride, D, dt, s + i * M + m, M);
  }
  if (i < n)
    for (int m = 0; m < M; m += 4) VF_STORE(s + i * M + m, dot_1x4(qp + m * D, k + (uint32_t)i * stride, D, dt));
}
#ifdef VZ_QUAD
/*
 * Prefill tiles (M >= 16 query vectors) over f32 rows in 16-lane vectors (AVX-512): a 16-float run of qp's layout is
 * one quad's 4 queries x 4 elements, which meets the row's same 4 elements repeated in each 128-bit lane, so 4 rows x
 * 4 quads take 16 multiply-adds per 4 elements where the 4-lane kernel takes 64; each 128-bit lane of a sum then holds
 * one query's 4 partial sums, which VZ_QUAD folds across 4 rows and one permute puts in s's row order. Each lane
 * accumulates dot_2x4's products in dot_2x4's order and VZ_QUAD folds a lane's 4 as vf_sum4 does: the same sums, bit
 * for bit. Rows left over (n % 4) take dot_1x4.
 */
ALWAYS_INLINE void scores_z_rows(const float *qp, int D, const uint8_t *k, uint32_t stride, float *s, int M, int m,
                                 const int NQ) {
  const float *k0 = (const float *)k, *k1 = (const float *)(k + stride), *k2 = (const float *)(k + 2 * stride),
              *k3 = (const float *)(k + 3 * stride);
  const float *q = qp + m * D; /* quad u of this pass at q + 4 * u * D, elements d..d+3 of its 4 queries at + 4 * d */
  VZ a[4][4];                  /* [row][quad] */
  for (int r = 0; r < 4; r++)
    for (int u = 0; u < NQ; u++) a[r][u] = VZ_ZERO;
  for (int d = 0; d < D; d += 4) {
    const VZ x0 = VZ_REP128(VF_LOAD(k0 + d)), x1 = VZ_REP128(VF_LOAD(k1 + d)), x2 = VZ_REP128(VF_LOAD(k2 + d)),
             x3 = VZ_REP128(VF_LOAD(k3 + d));
    for (int u = 0; u < NQ; u++) {
      const VZ w = VZ_LOAD(q + 4 * u * D + 4 * d);
      a[0][u] = VZ_MAD(a[0][u], w, x0); a[1][u] = VZ_MAD(a[1][u], w, x1);
      a[2][u] = VZ_MAD(a[2][u], w, x2); a[3][u] = VZ_MAD(a[3][u], w, x3);
    }
  }
  /* VZ_QUAD: 128-bit lane j = [row 0 . query j, row 1 ., row 2 ., row 3 .]; the permute makes lane r = row r's 4 */
  const VZI rows = VZ_IDX(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  for (int u = 0; u < NQ; u++) {
    const VZ t = VZ_PERM(rows, VZ_QUAD(a[0][u], a[1][u], a[2][u], a[3][u]));
    VF_STORE(s + m + 4 * u, VZ_LANE128(t, 0)); VF_STORE(s + M + m + 4 * u, VZ_LANE128(t, 1));
    VF_STORE(s + 2 * M + m + 4 * u, VZ_LANE128(t, 2)); VF_STORE(s + 3 * M + m + 4 * u, VZ_LANE128(t, 3));
  }
}

static void scores_m4_wide(const float *qp, int M, int D, const uint8_t *k, uint32_t stride, int n, float *s) {
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    const uint8_t *kr = k + (uint32_t)i * stride;
    int m = 0;
    for (; m + 16 <= M; m += 16) scores_z_rows(qp, D, kr, stride, s + i * M, M, m, 4);
    for (; m < M; m += 4) scores_z_rows(qp, D, kr, stride, s + i * M, M, m, 1);
  }
  for (; i < n; i++)
    for (int m = 0; m < M; m += 4) VF_STORE(s + i * M + m, dot_1x4(qp + m * D, k + (uint32_t)i * stride, D, DUO_F32));
}
#elif defined(VW_LOAD_REP128)
/* The same in 8-lane vectors (AVX2, 16 registers): an 8-float run of qp's layout is 2 queries x 4 elements, so a quad
 * takes two vectors; 4 rows x 1 quad per pass, 8 multiply-adds per 4 elements where the 4-lane kernel takes 16, and
 * each row's quad folded by vf_sum4 over the 4 halves, as dot_2x4 folds its 4 accumulators: the same sums. */
static void scores_m4_wide(const float *qp, int M, int D, const uint8_t *k, uint32_t stride, int n, float *s) {
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    const float *k0 = (const float *)(k + (uint32_t)i * stride), *k1 = (const float *)(k + (uint32_t)(i + 1) * stride),
                *k2 = (const float *)(k + (uint32_t)(i + 2) * stride), *k3 = (const float *)(k + (uint32_t)(i + 3) * stride);
    for (int m = 0; m < M; m += 4) {
      const float *q = qp + m * D;
      VW a[4][2]; /* [row][queries 0-1, 2-3] */
      for (int r = 0; r < 4; r++) a[r][0] = a[r][1] = VW_ZERO;
      for (int d = 0; d < D; d += 4) {
        const VW w0 = VW_LOAD(q + 4 * d), w1 = VW_LOAD(q + 4 * d + 8);
        const VW x0 = VW_LOAD_REP128(k0 + d), x1 = VW_LOAD_REP128(k1 + d), x2 = VW_LOAD_REP128(k2 + d),
                 x3 = VW_LOAD_REP128(k3 + d);
        a[0][0] = VW_MAD(a[0][0], w0, x0); a[0][1] = VW_MAD(a[0][1], w1, x0);
        a[1][0] = VW_MAD(a[1][0], w0, x1); a[1][1] = VW_MAD(a[1][1], w1, x1);
        a[2][0] = VW_MAD(a[2][0], w0, x2); a[2][1] = VW_MAD(a[2][1], w1, x2);
        a[3][0] = VW_MAD(a[3][0], w0, x3); a[3][1] = VW_MAD(a[3][1], w1, x3);
      }
      for (int r = 0; r < 4; r++)
        VF_STORE(s + (i + r) * M + m, vf_sum4(VW_LO128(a[r][0]), VW_HI128(a[r][0]), VW_LO128(a[r][1]), VW_HI128(a[r][1])));
    }
  }
  for (; i < n; i++)
    for (int m = 0; m < M; m += 4) VF_STORE(s + i * M + m, dot_1x4(qp + m * D, k + (uint32_t)i * stride, D, DUO_F32));
}
#endif

void k_scores_m4(const float *qp, int M, int D, const uint8_t *k, uint32_t stride, int dt, int n, float *s) {
#if defined(VZ_QUAD) || defined(VW_LOAD_REP128)
  if ((dt & DUO_DTYPE_MASK) == DUO_F32 && M >= 16) { scores_m4_wide(qp, M, D, k, stride, n, s); return; }
#endif
  if ((dt & DUO_DTYPE_MASK) == DUO_F32) scores_m4_impl(qp, M, D, k, stride, n, s, DUO_F32);
  else if ((dt & DUO_DTYPE_MASK) == DUO_INT8) scores_m4_impl(qp, M, D, k, stride, n, s, DUO_INT8);
  else scores_m4_impl(qp, M, D, k, stride, n, s, DUO_BF16);
}

/* One query vector against 4 rows at once (one accumulator per row). */
ALWAYS_INLINE void scores_m1_impl(const float *q, int D, const uint8_t *k, uint32_t stride, int n, float *s, int dt) {
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    const uint8_t *k0 = k + (uint32_t)i * stride, *k1 = k0 + stride, *k2 = k1 + stride, *k3 = k2 + stride;
    VF a0 = VF_ZERO, a1 = VF_ZERO, a2 = VF_ZERO, a3 = VF_ZERO;
    for (int d = 0; d < D; d += 4) {
      VF w = VF_LOAD(q + d);
      a0 = VF_MAD(a0, w, ld4(k0, d, dt)); a1 = VF_MAD(a1, w, ld4(k1, d, dt));
      a2 = VF_MAD(a2, w, ld4(k2, d, dt)); a3 = VF_MAD(a3, w, ld4(k3, d, dt));
    }
    VF_STORE(s + i, vf_sum4(a0, a1, a2, a3));
  }
  for (; i < n; i++) {
    const uint8_t *kr = k + (uint32_t)i * stride;
    VF a = VF_ZERO;
    for (int d = 0; d < D; d += 4) a = VF_MAD(a, VF_LOAD(q + d), ld4(kr, d, dt));
    s[i] = vf_hsum(a);
  }
}
void k_scores_m1(const float *q, int D, const uint8_t *k, uint32_t stride, int dt, int n, float *s) {
  if ((dt & DUO_DTYPE_MASK) == DUO_F32) scores_m1_impl(q, D, k, stride, n, s, DUO_F32);
  else if ((dt & DUO_DTYPE_MASK) == DUO_INT8) scores_m1_impl(q, D, k, stride, n, s, DUO_INT8);
  else scores_m1_impl(q, D, k, stride, n, s, DUO_BF16);
}

/* A max that is -Inf for an empty row becomes 0 for the subtraction, so no -Inf - -Inf = NaN appears. */
ALWAYS_INLINE VF finite_or_zero(VF mx) { return VF_SELECT(VF_EQ(mx, VF_SPLAT(-__builtin_inff())), VF_ZERO, mx); }

#ifdef VZ_EXP2_READY
/* One quad (M = 4, decode) in 16-lane vectors, 4 rows per vector (AVX-512: the kernels around it went 16-lane and this
 * step became a tenth of a quantized decode): the same maxima, exp2 polynomial and sums as below, the 4 row groups of
 * a vector folded at the end. Rows past n are read as -Inf (masked loads) and written back unchanged. */
static void softmax_quad_z(float *s, int n, float *mx, float *l, float *alpha) {
  const VZ ninf = VZ_SPLAT(-__builtin_inff());
  VZ t = ninf;
  for (int i = 0; i < n; i += 4) t = VZ_MAX(t, VZ_LOAD_OR(ninf, n - i >= 4 ? 0xffffu : (1u << (4 * (n - i))) - 1, s + 4 * i));
  const VF old = VF_LOAD(mx), top = VF_MAX(old, VZ_FOLD_MAX4(t)), sub = finite_or_zero(top);
  const VZ subz = VZ_REP128(sub);
  VZ sum = VZ_ZERO;
  for (int i = 0; i < n; i += 4) {
    const unsigned m = n - i >= 4 ? 0xffffu : (1u << (4 * (n - i))) - 1;
    const VZ p = vz_exp2(VZ_SUB(VZ_LOAD_OR(ninf, m, s + 4 * i), subz));
    VZ_STORE_MASKED(s + 4 * i, m, p);
    sum = VZ_ADD(sum, p);
  }
  const VF a = vf_exp2(VF_SUB(old, sub));
  VF_STORE(alpha, a);
  VF_STORE(l, VF_ADD(VF_MUL(VF_LOAD(l), a), VZ_FOLD_ADD4(sum)));
  VF_STORE(mx, top);
}
#endif

#ifdef VZ_EXP2_READY
/* 16 consecutive query vectors of M (the wide m1 and the fused quantized decode put every vector of the call in a row
 * of s, M = 32 for Llama-2-7B or Llama-3-8B) in 16 lanes: per lane the steps of the 4-lane loop below (two running
 * maxes and sums, the same exp2), so the same bits, at a quarter of the instructions: the 4-lane loop had been ~3 ns
 * per token and head of G = 4 int4 decode (bench ~24 ns against ~21 in a harness without it). */
static void softmax_z16(float *s, int n, int M, float *mx, float *l, float *alpha) {
  const VZ old = VZ_LOAD(mx);
  VZ t0 = old, t1 = old;
  int i = 0;
  for (; i + 2 <= n; i += 2) { t0 = VZ_MAX(t0, VZ_LOAD(s + i * M)); t1 = VZ_MAX(t1, VZ_LOAD(s + (i + 1) * M)); }
  if (i < n) t0 = VZ_MAX(t0, VZ_LOAD(s + i * M));
  const VZ top = VZ_MAX(t0, t1), sub = VZ_ZERO_IF_EQ(top, VZ_SPLAT(-__builtin_inff()));
  VZ s0 = VZ_ZERO, s1 = VZ_ZERO;
  for (i = 0; i + 2 <= n; i += 2) {
    const VZ p = vz_exp2(VZ_SUB(VZ_LOAD(s + i * M), sub)), q = vz_exp2(VZ_SUB(VZ_LOAD(s + (i + 1) * M), sub));
    VZ_STORE(s + i * M, p); VZ_STORE(s + (i + 1) * M, q);
    s0 = VZ_ADD(s0, p); s1 = VZ_ADD(s1, q);
  }
  if (i < n) {
    const VZ p = vz_exp2(VZ_SUB(VZ_LOAD(s + i * M), sub));
    VZ_STORE(s + i * M, p);
    s0 = VZ_ADD(s0, p);
  }
  const VZ a = vz_exp2(VZ_SUB(old, sub));
  VZ_STORE(alpha, a);
  VZ_STORE(l, VZ_ADD(VZ_MUL(VZ_LOAD(l), a), VZ_ADD(s0, s1)));
  VZ_STORE(mx, top);
}
#endif

/* Two running maxes and two running sums per quad halve the dependency chains of the reductions. */
void k_softmax_m4(float *s, int n, int M, float *mx, float *l, float *alpha) {
  int m = 0;
#ifdef VZ_EXP2_READY
  if (M == 4) { softmax_quad_z(s, n, mx, l, alpha); return; }
  for (; m + 16 <= M; m += 16) softmax_z16(s + m, n, M, mx + m, l + m, alpha + m);
#endif
  for (; m < M; m += 4) {
    VF old = VF_LOAD(mx + m), t0 = old, t1 = old;
    int i = 0;
    for (; i + 2 <= n; i += 2) { t0 = VF_MAX(t0, VF_LOAD(s + i * M + m)); t1 = VF_MAX(t1, VF_LOAD(s + (i + 1) * M + m)); }
    if (i < n) t0 = VF_MAX(t0, VF_LOAD(s + i * M + m));
    VF top = VF_MAX(t0, t1), sub = finite_or_zero(top), s0 = VF_ZERO, s1 = VF_ZERO;
    for (i = 0; i + 2 <= n; i += 2) {
      VF p = vf_exp2(VF_SUB(VF_LOAD(s + i * M + m), sub)), q = vf_exp2(VF_SUB(VF_LOAD(s + (i + 1) * M + m), sub));
      VF_STORE(s + i * M + m, p); VF_STORE(s + (i + 1) * M + m, q);
      s0 = VF_ADD(s0, p); s1 = VF_ADD(s1, q);
    }
    if (i < n) {
      VF p = vf_exp2(VF_SUB(VF_LOAD(s + i * M + m), sub));
      VF_STORE(s + i * M + m, p);
      s0 = VF_ADD(s0, p);
    }
    VF a = vf_exp2(VF_SUB(old, sub));
    VF_STORE(alpha + m, a);
    VF_STORE(l + m, VF_ADD(VF_MUL(VF_LOAD(l + m), a), VF_ADD(s0, s1)));
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

/* 4 query vectors x 8 elements of acc stay in registers while the loop runs down the n value rows; a head dim that is
 * not a multiple of 8 ends with one 4-element column. */
ALWAYS_INLINE void pv_m4_impl(float *acc, const float *alpha, const float *p, int M, int D, const uint8_t *v,
                              uint32_t stride, int n, int dt, int guard) {
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
        w = VF_LOAD_SPLAT(pi);     x0 = mad_w(x0, w, lo, guard); y0 = mad_w(y0, w, hi, guard);
        w = VF_LOAD_SPLAT(pi + 1); x1 = mad_w(x1, w, lo, guard); y1 = mad_w(y1, w, hi, guard);
        w = VF_LOAD_SPLAT(pi + 2); x2 = mad_w(x2, w, lo, guard); y2 = mad_w(y2, w, hi, guard);
        w = VF_LOAD_SPLAT(pi + 3); x3 = mad_w(x3, w, lo, guard); y3 = mad_w(y3, w, hi, guard);
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
        x0 = mad_w(x0, VF_LOAD_SPLAT(pi), x, guard); x1 = mad_w(x1, VF_LOAD_SPLAT(pi + 1), x, guard);
        x2 = mad_w(x2, VF_LOAD_SPLAT(pi + 2), x, guard); x3 = mad_w(x3, VF_LOAD_SPLAT(pi + 3), x, guard);
      }
      VF_STORE(c0 + d, x0); VF_STORE(c1 + d, x1); VF_STORE(c2 + d, x2); VF_STORE(c3 + d, x3);
    }
  }
}
#ifdef VQ_LANES
/*
 * Prefill tiles (M >= 16) over finite f32 rows in VQ vectors (AVX-512: 16 lanes, AVX2: 8): for each quad, NV *
 * VQ_LANES elements of its 4 accumulators stay in registers down the block's rows (NV = PV_NV, then 1 for the last
 * chunks: 64 + 16s on AVX-512, 16 + 8s on AVX2, whose 16 registers hold 4 x 2), each row's NV vectors met by the
 * quad's 4 weights broadcast from p: 4 * NV multiply-adds of VQ_LANES per row, where pv_m4_impl takes 4 of 4 lanes per
 * 4 elements. The same products and order of rows as pv_m4_impl, so the same sums.
 */
#define PV_NV (VQ_LANES == 16 ? 4 : 2)
ALWAYS_INLINE void pv_q_cols(float *acc, const float *alpha, const float *p, int M, int D, const uint8_t *v,
                             uint32_t stride, int n, int m, int d, const int NV) {
  VQ e[4][PV_NV]; /* [query][vector] */
  for (int j = 0; j < 4; j++) {
    const VQ al = VQ_SPLAT(alpha + m + j);
    for (int u = 0; u < NV; u++) e[j][u] = VQ_MUL(VQ_LOAD(acc + (m + j) * D + d + VQ_LANES * u), al);
  }
  const uint8_t *vr = v;
  const float *pi = p + m;
  for (int i = 0; i < n; i++, vr += stride, pi += M) {
    VQ x[PV_NV];
    for (int u = 0; u < NV; u++) x[u] = VQ_LOAD((const float *)vr + d + VQ_LANES * u);
    for (int j = 0; j < 4; j++) {
      const VQ w = VQ_SPLAT(pi + j);
      for (int u = 0; u < NV; u++) e[j][u] = VQ_MAD(e[j][u], w, x[u]);
    }
  }
  for (int j = 0; j < 4; j++)
    for (int u = 0; u < NV; u++) VQ_STORE(acc + (m + j) * D + d + VQ_LANES * u, e[j][u]);
}

static void pv_m4_q(float *acc, const float *alpha, const float *p, int M, int D, const uint8_t *v, uint32_t stride,
                    int n) {
  for (int m = 0; m < M; m += 4) {
    int d = 0;
    for (; d + PV_NV * VQ_LANES <= D; d += PV_NV * VQ_LANES) pv_q_cols(acc, alpha, p, M, D, v, stride, n, m, d, PV_NV);
    for (; d < D; d += VQ_LANES) pv_q_cols(acc, alpha, p, M, D, v, stride, n, m, d, 1);
  }
}
#undef PV_NV
#endif

void k_pv_m4(float *acc, const float *alpha, const float *p, int M, int D, const uint8_t *v, uint32_t stride, int dt,
             int n) {
#ifdef VQ_LANES
  if (dt == DUO_F32 && M >= 16 && D % VQ_LANES == 0) { pv_m4_q(acc, alpha, p, M, D, v, stride, n); return; }
#endif
  switch (dt) {
    case DUO_F32: pv_m4_impl(acc, alpha, p, M, D, v, stride, n, DUO_F32, 0); break;
    case DUO_BF16: pv_m4_impl(acc, alpha, p, M, D, v, stride, n, DUO_BF16, 0); break;
    case DUO_INT8: pv_m4_impl(acc, alpha, p, M, D, v, stride, n, DUO_INT8, 0); break;
    case DUO_F32 | DUO_NONFINITE: pv_m4_impl(acc, alpha, p, M, D, v, stride, n, DUO_F32, 1); break;
    default: pv_m4_impl(acc, alpha, p, M, D, v, stride, n, DUO_BF16, 1); break;
  }
}

/* One query vector: 16 elements of acc in registers down the value rows, then 4-element columns for the rest. */
ALWAYS_INLINE void pv_m1_impl(float *acc, float alpha, const float *p, int D, const uint8_t *v, uint32_t stride, int n,
                              int dt, int guard) {
  VF al = VF_SPLAT(alpha);
  int d = 0;
  for (; d + 16 <= D; d += 16) {
    VF x0 = VF_MUL(VF_LOAD(acc + d), al), x1 = VF_MUL(VF_LOAD(acc + d + 4), al);
    VF x2 = VF_MUL(VF_LOAD(acc + d + 8), al), x3 = VF_MUL(VF_LOAD(acc + d + 12), al);
    const uint8_t *vr = v;
    for (int i = 0; i < n; i++, vr += stride) {
      VF w = VF_LOAD_SPLAT(p + i);
      x0 = mad_w(x0, w, ld4(vr, d, dt), guard); x1 = mad_w(x1, w, ld4(vr, d + 4, dt), guard);
      x2 = mad_w(x2, w, ld4(vr, d + 8, dt), guard); x3 = mad_w(x3, w, ld4(vr, d + 12, dt), guard);
    }
    VF_STORE(acc + d, x0); VF_STORE(acc + d + 4, x1); VF_STORE(acc + d + 8, x2); VF_STORE(acc + d + 12, x3);
  }
  for (; d < D; d += 4) {
    VF x = VF_MUL(VF_LOAD(acc + d), al);
    for (int i = 0; i < n; i++) x = mad_w(x, VF_LOAD_SPLAT(p + i), ld4(v + (uint32_t)i * stride, d, dt), guard);
    VF_STORE(acc + d, x);
  }
}
void k_pv_m1(float *acc, float alpha, const float *p, int D, const uint8_t *v, uint32_t stride, int dt, int n) {
  switch (dt) {
    case DUO_F32: pv_m1_impl(acc, alpha, p, D, v, stride, n, DUO_F32, 0); break;
    case DUO_BF16: pv_m1_impl(acc, alpha, p, D, v, stride, n, DUO_BF16, 0); break;
    case DUO_INT8: pv_m1_impl(acc, alpha, p, D, v, stride, n, DUO_INT8, 0); break;
    case DUO_F32 | DUO_NONFINITE: pv_m1_impl(acc, alpha, p, D, v, stride, n, DUO_F32, 1); break;
    default: pv_m1_impl(acc, alpha, p, D, v, stride, n, DUO_BF16, 1); break;
  }
}

#ifdef VW_EO16
/* The tiled kernels in 8-lane vectors (VW: the AVX2 and AVX-512 sets, simd_x86.h), the 4-lane ones after #else
 * (and bf16 in 16 lanes on AVX-512, below). From DRAM the one-thread decode was the sum of its compute and its memory
 * time, not the larger: the 4-lane kernels ran at 11.5 GB/s over KV in cache, about the read bandwidth of one core,
 * and nothing asked for lines ahead of them. The 8-lane kernels run at ~21 GB/s from cache (bf16 in 16 lanes ~26), and
 * each asks for the line PREFETCH_AHEAD bytes ahead of its read position (the walk is one front-to-back stream: K
 * tile, V tile, next head's K tile, ...). Measured in one process (2-vCPU Xeon VM, shared): one layer of Llama-3-8B,
 * bf16, 64K tokens, 0.46-0.53x the time of the 4-lane kernels; 1 KiB or 4 KiB ahead instead of 2 KiB: 1.12x and 1.06x
 * the time at 64K tokens (huge pages, a quiet spell), 4 KiB 0.95x at 16K (KV in L3). */
#define PREFETCH_AHEAD 2048

/* One column of a group's 8 rows is one vector (rows in even/odd order), of a group's 8 rows is one vector (rows in even/odd order),
 * times each query's element d broadcast; two sets of 4 sums (even and odd columns) keep 8 multiply-adds in flight.
 * The 4 sums of 8 rows then transpose, in each 128-bit half, into the rows' 4 scores: s[i*4 + h]. */
ALWAYS_INLINE void scores_k64_impl(const float *q4, int D, const uint8_t *kt, int n, float *s, int dt) {
  const int f16 = dt == DUO_F16;
  for (int r = 0; r < n; r += 8, kt += 16 * D, s += 32) {
    VW a0 = VW_ZERO, a1 = VW_ZERO, a2 = VW_ZERO, a3 = VW_ZERO, b0 = VW_ZERO, b1 = VW_ZERO, b2 = VW_ZERO, b3 = VW_ZERO;
    const uint8_t *kr = kt;
    const float *qq = q4;
    for (int d = 0; d < D; d += 4, kr += 64, qq += 16) { /* D % 8 == 0 on the tiled path */
      VW_PREFETCH(kr + PREFETCH_AHEAD);
      VW x = VW_EO16(kr, f16), y = VW_EO16(kr + 16, f16);
      a0 = VW_MAD(a0, VW_LOAD_SPLAT(qq), x);     a1 = VW_MAD(a1, VW_LOAD_SPLAT(qq + 1), x);
      a2 = VW_MAD(a2, VW_LOAD_SPLAT(qq + 2), x); a3 = VW_MAD(a3, VW_LOAD_SPLAT(qq + 3), x);
      b0 = VW_MAD(b0, VW_LOAD_SPLAT(qq + 4), y); b1 = VW_MAD(b1, VW_LOAD_SPLAT(qq + 5), y);
      b2 = VW_MAD(b2, VW_LOAD_SPLAT(qq + 6), y); b3 = VW_MAD(b3, VW_LOAD_SPLAT(qq + 7), y);
      x = VW_EO16(kr + 32, f16), y = VW_EO16(kr + 48, f16);
      a0 = VW_MAD(a0, VW_LOAD_SPLAT(qq + 8), x);  a1 = VW_MAD(a1, VW_LOAD_SPLAT(qq + 9), x);
      a2 = VW_MAD(a2, VW_LOAD_SPLAT(qq + 10), x); a3 = VW_MAD(a3, VW_LOAD_SPLAT(qq + 11), x);
      b0 = VW_MAD(b0, VW_LOAD_SPLAT(qq + 12), y); b1 = VW_MAD(b1, VW_LOAD_SPLAT(qq + 13), y);
      b2 = VW_MAD(b2, VW_LOAD_SPLAT(qq + 14), y); b3 = VW_MAD(b3, VW_LOAD_SPLAT(qq + 15), y);
    }
    a0 = VW_ADD(a0, b0); a1 = VW_ADD(a1, b1); a2 = VW_ADD(a2, b2); a3 = VW_ADD(a3, b3);
    VW t0 = VW_ZIP_LO32(a0, a1), t1 = VW_ZIP_HI32(a0, a1), t2 = VW_ZIP_LO32(a2, a3), t3 = VW_ZIP_HI32(a2, a3);
    /* low halves: rows 0, 2, 4, 6; high halves: rows 1, 3, 5, 7 */
    VW_STORE(s, VW_CAT_LO64(t0, t2));      /* rows 0, 1 */
    VW_STORE(s + 8, VW_CAT_HI64(t0, t2));  /* rows 2, 3 */
    VW_STORE(s + 16, VW_CAT_LO64(t1, t3)); /* rows 4, 5 */
    VW_STORE(s + 24, VW_CAT_HI64(t1, t3)); /* rows 6, 7 */
  }
}

/* A row of an 8-column group is one vector, already in the accumulators' even/odd order; two groups at a time (8 sums
 * in flight) share each broadcast weight. Each sum runs over the rows in order, as in the 4-lane kernel. */
ALWAYS_INLINE void pv_v64_impl(float *acc, const float *alpha, const float *p, int D, const uint8_t *vt, int n, int dt) {
  const int f16 = dt == DUO_F16;
  const VW al0 = VW_LOAD_SPLAT(alpha), al1 = VW_LOAD_SPLAT(alpha + 1);
  const VW al2 = VW_LOAD_SPLAT(alpha + 2), al3 = VW_LOAD_SPLAT(alpha + 3);
  float *c0 = acc, *c1 = c0 + D, *c2 = c1 + D, *c3 = c2 + D;
  int d = 0;
  for (; d + 16 <= D; d += 16, vt += 32 * DUO_TILE) {
    VW x0 = VW_MUL(VW_LOAD(c0 + d), al0), x1 = VW_MUL(VW_LOAD(c1 + d), al1);
    VW x2 = VW_MUL(VW_LOAD(c2 + d), al2), x3 = VW_MUL(VW_LOAD(c3 + d), al3);
    VW y0 = VW_MUL(VW_LOAD(c0 + d + 8), al0), y1 = VW_MUL(VW_LOAD(c1 + d + 8), al1);
    VW y2 = VW_MUL(VW_LOAD(c2 + d + 8), al2), y3 = VW_MUL(VW_LOAD(c3 + d + 8), al3);
    const uint8_t *vr = vt;
    const float *pi = p;
    for (int i = 0; i < n; i++, vr += 16, pi += 4) {
      if (!(i & 3)) { VW_PREFETCH(vr + PREFETCH_AHEAD); VW_PREFETCH(vr + 16 * DUO_TILE + PREFETCH_AHEAD); }
      VW u = VW_EO16(vr, f16), v = VW_EO16(vr + 16 * DUO_TILE, f16), w;
      w = VW_LOAD_SPLAT(pi);     x0 = VW_MAD(x0, w, u); y0 = VW_MAD(y0, w, v);
      w = VW_LOAD_SPLAT(pi + 1); x1 = VW_MAD(x1, w, u); y1 = VW_MAD(y1, w, v);
      w = VW_LOAD_SPLAT(pi + 2); x2 = VW_MAD(x2, w, u); y2 = VW_MAD(y2, w, v);
      w = VW_LOAD_SPLAT(pi + 3); x3 = VW_MAD(x3, w, u); y3 = VW_MAD(y3, w, v);
    }
    VW_STORE(c0 + d, x0); VW_STORE(c1 + d, x1); VW_STORE(c2 + d, x2); VW_STORE(c3 + d, x3);
    VW_STORE(c0 + d + 8, y0); VW_STORE(c1 + d + 8, y1); VW_STORE(c2 + d + 8, y2); VW_STORE(c3 + d + 8, y3);
  }
  if (d < D) { /* a head dim that is an odd multiple of 8 ends with one group */
    VW x0 = VW_MUL(VW_LOAD(c0 + d), al0), x1 = VW_MUL(VW_LOAD(c1 + d), al1);
    VW x2 = VW_MUL(VW_LOAD(c2 + d), al2), x3 = VW_MUL(VW_LOAD(c3 + d), al3);
    const uint8_t *vr = vt;
    const float *pi = p;
    for (int i = 0; i < n; i++, vr += 16, pi += 4) {
      VW u = VW_EO16(vr, f16);
      x0 = VW_MAD(x0, VW_LOAD_SPLAT(pi), u); x1 = VW_MAD(x1, VW_LOAD_SPLAT(pi + 1), u);
      x2 = VW_MAD(x2, VW_LOAD_SPLAT(pi + 2), u); x3 = VW_MAD(x3, VW_LOAD_SPLAT(pi + 3), u);
    }
    VW_STORE(c0 + d, x0); VW_STORE(c1 + d, x1); VW_STORE(c2 + d, x2); VW_STORE(c3 + d, x3);
  }
}
#else
/* 4 vectors -> their transpose: out[k] = [a[k] b[k] c[k] d[k]]. */
ALWAYS_INLINE void transpose4(VF a, VF b, VF c, VF d, VF *out) {
  VF t0 = VF_ZIP_LO32(a, b), t1 = VF_ZIP_HI32(a, b);
  VF t2 = VF_ZIP_LO32(c, d), t3 = VF_ZIP_HI32(c, d);
  out[0] = VF_CAT_LO64(t0, t2); out[1] = VF_CAT_HI64(t0, t2);
  out[2] = VF_CAT_LO64(t1, t3); out[3] = VF_CAT_HI64(t1, t3);
}

/* 4 query vectors x 2 halves: the running sums of the tiled kernels, 8 registers (V8 keeps 15 XMM registers). */
typedef struct { VF e0, e1, e2, e3, o0, o1, o2, o3; } sums8;

/* The even and odd elements of 8 16-bit values (4 u32 lanes, even element in the low half) as f32x4 each.
 * bf16: a shift and a mask. f16 (finite values only: Inf/NaN segments take the exact path): the half moved to the
 * top, arithmetic-shifted right by 3 (exponent and mantissa land where an f32 keeps them, the sign stays at bit 31),
 * the sign copies in bits 28-30 masked off, and the exponent bias 15 -> 127 restored by a multiply by 2^112 (exact,
 * subnormals included). */
typedef struct { VF e, o; } halves;
ALWAYS_INLINE halves split16(VI x, int dt) {
  const VI top = VI_SPLAT((int32_t)0xffff0000);
  if (dt == DUO_BF16) return (halves){VI_SHL(x, 16), VI_AND(x, top)};
  const VI keep = VI_SPLAT((int32_t)0x8fffffff);
  const VF bias = VF_SPLAT(0x1p112f);
  return (halves){VF_MUL(VI_AND(VI_SRA(VI_SHL(x, 16), 3), keep), bias), VF_MUL(VI_AND(VI_SRA(VI_AND(x, top), 3), keep), bias)};
}

/* One 16-byte load of 8 elements split into even and odd halves, each multiplied by the 4 scalars at w (one per
 * query vector, broadcast by the load: vbroadcastss on x64) and added into the even and odd sums of those vectors.
 * What bounds it (V8, Zen 4): per 8 FMAs, 5 loads, a shift and a mask, and 4-6 integer ops (addresses, loop), some
 * 19-22 instructions in the 4 cycles the FMAs need, against a 6-wide dispatch. Each tiled kernel runs at 0.85-0.87
 * of the FMA peak over a tile in L1; a bf16 widening without the shift and mask (wrong values) ran at 0.92. */
ALWAYS_INLINE sums8 mad_even_odd(sums8 a, const uint8_t *x8, const float *w, int dt) {
  halves h = split16(VF_LOAD(x8), dt);
  VF v;
  v = VF_LOAD_SPLAT(w);     a.e0 = VF_MAD(a.e0, v, h.e); a.o0 = VF_MAD(a.o0, v, h.o);
  v = VF_LOAD_SPLAT(w + 1); a.e1 = VF_MAD(a.e1, v, h.e); a.o1 = VF_MAD(a.o1, v, h.o);
  v = VF_LOAD_SPLAT(w + 2); a.e2 = VF_MAD(a.e2, v, h.e); a.o2 = VF_MAD(a.o2, v, h.o);
  v = VF_LOAD_SPLAT(w + 3); a.e3 = VF_MAD(a.e3, v, h.e); a.o3 = VF_MAD(a.o3, v, h.o);
  return a;
}

/* 8 rows at a time: one 16-byte load holds column d of the group's 8 rows (even rows in one half, odd rows in the
 * other), and the 8 sums run down the head dim. Every load is at a constant offset from a pointer that moves 16 bytes
 * per step, and 8 + 4 vectors stay live: what V8 keeps in registers. */
ALWAYS_INLINE void scores_k64_impl(const float *q4, int D, const uint8_t *kt, int n, float *s, int dt) {
  for (int r = 0; r < n; r += 8, kt += 16 * D, s += 32) {
    sums8 a = {VF_ZERO, VF_ZERO, VF_ZERO, VF_ZERO, VF_ZERO, VF_ZERO, VF_ZERO, VF_ZERO};
    const uint8_t *kr = kt;
    const float *qq = q4;
    for (int d = 0; d < D; d++, kr += 16, qq += 4) a = mad_even_odd(a, kr, qq, dt);
    VF t[4];
    transpose4(a.e0, a.e1, a.e2, a.e3, t); /* rows 0, 2, 4, 6 of the group */
    VF_STORE(s, t[0]); VF_STORE(s + 8, t[1]); VF_STORE(s + 16, t[2]); VF_STORE(s + 24, t[3]);
    transpose4(a.o0, a.o1, a.o2, a.o3, t); /* rows 1, 3, 5, 7 */
    VF_STORE(s + 4, t[0]); VF_STORE(s + 12, t[1]); VF_STORE(s + 20, t[2]); VF_STORE(s + 28, t[3]);
  }
}

/* 4 query vectors x 8 elements of acc (as even/odd halves) stay in registers down the n rows of one 8-column group,
 * which lie one after another in the V64 tile: one 16-byte load per row. */
ALWAYS_INLINE void pv_v64_impl(float *acc, const float *alpha, const float *p, int D, const uint8_t *vt, int n, int dt) {
  const VF al0 = VF_LOAD_SPLAT(alpha), al1 = VF_LOAD_SPLAT(alpha + 1);
  const VF al2 = VF_LOAD_SPLAT(alpha + 2), al3 = VF_LOAD_SPLAT(alpha + 3);
  float *c0 = acc, *c1 = c0 + D, *c2 = c1 + D, *c3 = c2 + D;
  for (int d = 0; d < D; d += 8, vt += 16 * DUO_TILE) {
    sums8 a = {VF_MUL(VF_LOAD(c0 + d), al0), VF_MUL(VF_LOAD(c1 + d), al1), VF_MUL(VF_LOAD(c2 + d), al2),
               VF_MUL(VF_LOAD(c3 + d), al3), VF_MUL(VF_LOAD(c0 + d + 4), al0), VF_MUL(VF_LOAD(c1 + d + 4), al1),
               VF_MUL(VF_LOAD(c2 + d + 4), al2), VF_MUL(VF_LOAD(c3 + d + 4), al3)};
    const uint8_t *vr = vt;
    const float *pi = p;
    for (int i = 0; i < n; i++, vr += 16, pi += 4) a = mad_even_odd(a, vr, pi, dt);
    VF_STORE(c0 + d, a.e0); VF_STORE(c0 + d + 4, a.o0); VF_STORE(c1 + d, a.e1); VF_STORE(c1 + d + 4, a.o1);
    VF_STORE(c2 + d, a.e2); VF_STORE(c2 + d + 4, a.o2); VF_STORE(c3 + d, a.e3); VF_STORE(c3 + d + 4, a.o3);
  }
}
#endif

#ifdef VZ_BF16_EVEN
/* bf16 tiles in 16-lane vectors (the AVX-512 set; f16 keeps the 8-lane kernels). One 64-byte load is 4 consecutive
 * 16-byte runs of a tile, each run 8 bf16 in 4 32-bit lanes: a shift and a mask give its even and odd elements as f32
 * (VZ_BF16_EVEN / ODD), so every lane of a vector carries its own (run, element) and the multiplier must match it:
 * REP4 repeats each of 4 floats over a 128-bit lane. Per 64 bytes: 2 integer ops and 8 multiply-adds of 16 lanes,
 * where the 8-lane kernels issue 4 byte shuffles and 16 multiply-adds of 8 lanes. */
#define REP4(h) VZ_IDX(h, h, h, h, 4 + h, 4 + h, 4 + h, 4 + h, 8 + h, 8 + h, 8 + h, 8 + h, 12 + h, 12 + h, 12 + h, 12 + h)

/* Two 8-row groups at a time (16 rows; rows up to the next multiple of 16 are written, n <= 64). A 64-byte load of a
 * K64 group is columns d..d+3 of its 8 rows: even rows in the even parts, odd rows in the odd. Query h's elements
 * d..d+3 (q4 + d*4, [d][h]) are repeated over the 4 runs (REP4) once per call into qr [D/4][query]. Each sum then
 * holds 4 columns' partial sums of 4 rows, added up across the 128-bit lanes at the end (VZ_LANES4: [query][row]),
 * and transposed to s[row*4 + query]. */
static void scores_k64_z(const float *q4, int D, const uint8_t *kt, int n, float *s) {
  VZ qr[D];
  for (int d = 0; d < D; d += 4) {
    const VZ q = VZ_LOAD(q4 + d * 4);
    qr[d] = VZ_PERM(REP4(0), q); qr[d + 1] = VZ_PERM(REP4(1), q); qr[d + 2] = VZ_PERM(REP4(2), q); qr[d + 3] = VZ_PERM(REP4(3), q);
  }
  const VZI to_rows = VZ_IDX(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15); /* [query][row] -> [row][query] */
  const VZI lo = VZ_IDX(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const VZI hi = VZ_IDX(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  for (int r = 0; r < n; r += 16, kt += 32 * D, s += 64) {
    VZ e[8], o[8]; /* [group * 4 + query] */
    for (int k = 0; k < 8; k++) e[k] = o[k] = VZ_ZERO;
    const uint8_t *ka = kt, *kb = kt + 16 * D;
    for (int d = 0; d < D; d += 4, ka += 64, kb += 64) {
      VZ_PREFETCH(ka + PREFETCH_AHEAD);
      VZ_PREFETCH(kb + PREFETCH_AHEAD);
      const VZ w0 = qr[d], w1 = qr[d + 1], w2 = qr[d + 2], w3 = qr[d + 3];
      const VZ x = VZ_LOAD(ka), y = VZ_LOAD(kb);
      const VZ xe = VZ_BF16_EVEN(x), xo = VZ_BF16_ODD(x), ye = VZ_BF16_EVEN(y), yo = VZ_BF16_ODD(y);
      e[0] = VZ_MAD(e[0], w0, xe); o[0] = VZ_MAD(o[0], w0, xo); e[4] = VZ_MAD(e[4], w0, ye); o[4] = VZ_MAD(o[4], w0, yo);
      e[1] = VZ_MAD(e[1], w1, xe); o[1] = VZ_MAD(o[1], w1, xo); e[5] = VZ_MAD(e[5], w1, ye); o[5] = VZ_MAD(o[5], w1, yo);
      e[2] = VZ_MAD(e[2], w2, xe); o[2] = VZ_MAD(o[2], w2, xo); e[6] = VZ_MAD(e[6], w2, ye); o[6] = VZ_MAD(o[6], w2, yo);
      e[3] = VZ_MAD(e[3], w3, xe); o[3] = VZ_MAD(o[3], w3, xo); e[7] = VZ_MAD(e[7], w3, ye); o[7] = VZ_MAD(o[7], w3, yo);
    }
    for (int g = 0; g < 2; g++) { /* rows 8g .. 8g + 7 */
      const VZ ev = VZ_PERM(to_rows, VZ_LANES4(e[4 * g], e[4 * g + 1], e[4 * g + 2], e[4 * g + 3])); /* rows 0 2 4 6 */
      const VZ od = VZ_PERM(to_rows, VZ_LANES4(o[4 * g], o[4 * g + 1], o[4 * g + 2], o[4 * g + 3])); /* rows 1 3 5 7 */
      VZ_STORE(s + 32 * g, VZ_PERM2(ev, lo, od));
      VZ_STORE(s + 32 * g + 16, VZ_PERM2(ev, hi, od));
    }
  }
}

/* Two 8-column groups at a time; a 64-byte load is 4 rows of one group. The weights of 4 rows for query h, each
 * repeated over its row's 128-bit lane, are built once per call (REP4; rows >= n get weight 0: the tile's rows past n
 * are finite, the segment being unflagged). Each sum holds 4 rows' partial sums of 4 even (or odd) columns; the old
 * accumulator, times alpha, starts in lane 0, and the 4 lanes are added up at the end: the even/odd order of acc. */
static void pv_v64_z(float *acc, const float *alpha, const float *p, int D, const uint8_t *vt, int n) {
  VZ w[16 * 4]; /* [row quad][query] */
  const int quads = (n + 3) / 4;
  for (int r = 0; r < quads; r++) {
    const int left = n - 4 * r;
    const VZ pq = VZ_LOAD_MASKED(left >= 4 ? 0xffffu : (1u << (4 * left)) - 1, p + 16 * r); /* [row][query] */
    w[4 * r] = VZ_PERM(REP4(0), pq); w[4 * r + 1] = VZ_PERM(REP4(1), pq);
    w[4 * r + 2] = VZ_PERM(REP4(2), pq); w[4 * r + 3] = VZ_PERM(REP4(3), pq);
  }
  for (int d = 0; d < D; d += 16, vt += 32 * DUO_TILE) {
    VZ e[8], o[8]; /* [group * 4 + query] */
    for (int g = 0; g < 2; g++)
      for (int h = 0; h < 4; h++) {
        const float *c = acc + h * D + d + 8 * g;
        const VZ al = VZ_LOAD_SPLAT(alpha + h);
        e[4 * g + h] = VZ_MUL(VZ_LOAD_MASKED(0xf, c), al);
        o[4 * g + h] = VZ_MUL(VZ_LOAD_MASKED(0xf, c + 4), al);
      }
    const uint8_t *va = vt, *vb = vt + 16 * DUO_TILE;
    for (int r = 0; r < quads; r++, va += 64, vb += 64) {
      VZ_PREFETCH(va + PREFETCH_AHEAD);
      VZ_PREFETCH(vb + PREFETCH_AHEAD);
      const VZ x = VZ_LOAD(va), y = VZ_LOAD(vb);
      const VZ xe = VZ_BF16_EVEN(x), xo = VZ_BF16_ODD(x), ye = VZ_BF16_EVEN(y), yo = VZ_BF16_ODD(y);
      const VZ *wr = w + 4 * r;
      e[0] = VZ_MAD(e[0], wr[0], xe); o[0] = VZ_MAD(o[0], wr[0], xo); e[4] = VZ_MAD(e[4], wr[0], ye); o[4] = VZ_MAD(o[4], wr[0], yo);
      e[1] = VZ_MAD(e[1], wr[1], xe); o[1] = VZ_MAD(o[1], wr[1], xo); e[5] = VZ_MAD(e[5], wr[1], ye); o[5] = VZ_MAD(o[5], wr[1], yo);
      e[2] = VZ_MAD(e[2], wr[2], xe); o[2] = VZ_MAD(o[2], wr[2], xo); e[6] = VZ_MAD(e[6], wr[2], ye); o[6] = VZ_MAD(o[6], wr[2], yo);
      e[3] = VZ_MAD(e[3], wr[3], xe); o[3] = VZ_MAD(o[3], wr[3], xo); e[7] = VZ_MAD(e[7], wr[3], ye); o[7] = VZ_MAD(o[7], wr[3], yo);
    }
    for (int g = 0; g < 2; g++) {
      const VZ se = VZ_LANES4(e[4 * g], e[4 * g + 1], e[4 * g + 2], e[4 * g + 3]); /* [query][4 even columns] */
      const VZ so = VZ_LANES4(o[4 * g], o[4 * g + 1], o[4 * g + 2], o[4 * g + 3]);
      float *c = acc + d + 8 * g;
      VF_STORE(c, VZ_LANE128(se, 0)); VF_STORE(c + 4, VZ_LANE128(so, 0));
      VF_STORE(c + D, VZ_LANE128(se, 1)); VF_STORE(c + D + 4, VZ_LANE128(so, 1));
      VF_STORE(c + 2 * D, VZ_LANE128(se, 2)); VF_STORE(c + 2 * D + 4, VZ_LANE128(so, 2));
      VF_STORE(c + 3 * D, VZ_LANE128(se, 3)); VF_STORE(c + 3 * D + 4, VZ_LANE128(so, 3));
    }
  }
}
#undef REP4
#endif

#ifdef K_M1_WIDE
/*
 * m1 decode (G = 1: Llama-2-7B's 32/32 heads) in wide vectors (kernels.h K_M1_WIDE; the VQ vectors of simd_x86.h: 16
 * lanes on AVX-512, 8 on AVX2). The 4-lane m1 kernels read one head at a time, a 256-byte run every row_heads * 256
 * bytes, after the driver had touched the block: one thread decoded bf16 at ~7 GB/s against a 17-18 GB/s read
 * ceiling (0.37-0.42, AVX-512 and AVX2 alike). These kernels walk the block's rows front to back, each row across
 * every head of the call (one stream, which the hardware prefetcher follows and the scores kernel asks one row ahead
 * of), so that no touch is needed; in registers, 16 (AVX2: 8) heads' sums per row pass, and a head's accumulator taken
 * 4 rows at a time. A K chunk is QC = 2 * VQ_LANES elements read as two vectors: f32 two loads, f16 two conversions
 * (vcvtph2ps), bf16 one load split by a shift and a mask into its even and odd elements (the queries are reordered to
 * match, once per block); P.V reads VQ_LANES elements at a time in natural order. A head dim that is an odd multiple
 * of VQ_LANES ends with one half chunk. Measured (one thread, 16K and 64K tokens, shared 2-vCPU Sapphire Rapids VM;
 * docs/performance.md): 0.75-0.85 of the read ceiling for all three dtypes on AVX-512, 0.74-0.93 on AVX2.
 */
#define QL VQ_LANES
#define QC (2 * VQ_LANES)

/* Elements [d, d + QC) of a row: bf16 the even ones (x) and the odd ones (y); f32 and f16 [d, d + QL) and the rest. */
ALWAYS_INLINE void row_chunk(const uint8_t *row, int d, int dt, VQ *x, VQ *y) {
  if (dt == DUO_BF16) {
    const VQ w = VQ_LOAD(row + 2 * d);
    *x = VQ_BF16_EVEN(w);
    *y = VQ_BF16_ODD(w);
  } else if (dt == DUO_F16) {
    *x = VQ_F16(row + 2 * d);
    *y = VQ_F16(row + 2 * d + 2 * QL);
  } else {
    *x = VQ_LOAD(row + 4 * d);
    *y = VQ_LOAD(row + 4 * d + 4 * QL);
  }
}

/* Elements [d, d + QL) of a row in natural order (the half chunk that ends an odd multiple of QL). */
ALWAYS_INLINE VQ row_half(const uint8_t *row, int d, int dt) {
  return dt == DUO_BF16 ? VQ_BF16(row + 2 * d) : dt == DUO_F16 ? VQ_F16(row + 2 * d) : VQ_LOAD(row + 4 * d);
}

/* s[h] = qz_h . the head at off[h] of one row, for h < R (R = VQ_ACCS, 4 or 1): one sum per head down the head dim,
 * the R sums added up together (AVX-512: 16 in one vector). qz [R][D]: the queries in the chunk order of dt. Each
 * chunk read asks for the same bytes one row on (the next row's, after a block's last row the next block's first):
 * measured 0.80 -> 0.85-0.89 of the read ceiling (AVX-512, bf16 and f32, 64K tokens, one thread; asking in P.V too,
 * or two rows on, made no difference beyond the noise of the shared VM; asking here for the V row as well, so that
 * K and V stream together, fell to 0.60-0.73). */
ALWAYS_INLINE void dot_heads(const float *qz, const uint32_t *off, int D, const uint8_t *row, uint32_t stride,
                             float *s, int dt, const int R) {
  VQ a[VQ_ACCS];
  for (int h = 0; h < R; h++) a[h] = VQ_ZERO;
  int d = 0;
  for (; d + QC <= D; d += QC)
    for (int h = 0; h < R; h++) {
      VQ x, y;
      const uint8_t *at = row + off[h] + (dt == DUO_F32 ? 4 : 2) * d;
      for (int o = 0; o < (dt == DUO_F32 ? 8 : 4) * QL; o += 64) VQ_PREFETCH(at + stride + o);
      row_chunk(row + off[h], d, dt, &x, &y);
      a[h] = VQ_MAD(VQ_MAD(a[h], VQ_LOAD(qz + h * D + d), x), VQ_LOAD(qz + h * D + d + QL), y);
    }
  if (d < D)
    for (int h = 0; h < R; h++) a[h] = VQ_MAD(a[h], VQ_LOAD(qz + h * D + d), row_half(row + off[h], d, dt));
  vq_sums(s, a, R);
}

/* Heads at most HEAD_PANEL_FLOATS / D at a time (bf16: their queries reordered on the stack, 64 KiB). */
#define HEAD_PANEL_FLOATS 16384

ALWAYS_INLINE void scores_heads_impl(const float *q, int nv, int sm, const uint32_t *off, int D, const uint8_t *k,
                                     uint32_t stride, int n, float *s, int dt) {
  const int hp = HEAD_PANEL_FLOATS / D > 0 ? HEAD_PANEL_FLOATS / D : 1;
  for (int h0 = 0; h0 < nv; h0 += hp) {
    const int h1 = nv - h0 < hp ? nv : h0 + hp;
    float eo[dt == DUO_BF16 ? (h1 - h0) * D : 1]; /* bf16: each chunk of the queries as its even, then its odd elements */
    const float *qz = q + h0 * D;
    if (dt == DUO_BF16) {
      for (int h = 0; h < h1 - h0; h++) {
        int d = 0;
        for (; d + QC <= D; d += QC) {
          VQ x, y;
          VQ_EO_IN(qz + h * D + d, &x, &y);
          VQ_STORE(eo + h * D + d, x);
          VQ_STORE(eo + h * D + d + QL, y);
        }
        if (d < D) VQ_STORE(eo + h * D + d, VQ_LOAD(qz + h * D + d));
      }
      qz = eo;
    }
    const uint8_t *row = k;
    for (int i = 0; i < n; i++, row += stride) {
      float *si = s + i * sm;
      const float *qh = qz - h0 * D; /* the query of head h at qh + h * D */
      int h = h0;
      for (; h + VQ_ACCS <= h1; h += VQ_ACCS) dot_heads(qh + h * D, off + h, D, row, stride, si + h, dt, VQ_ACCS);
      for (; h + 4 <= h1; h += 4) dot_heads(qh + h * D, off + h, D, row, stride, si + h, dt, 4);
      for (; h < h1; h++) dot_heads(qh + h * D, off + h, D, row, stride, si + h, dt, 1);
      if (h1 == nv)
        for (h = nv; h < sm; h++) si[h] = -__builtin_inff();
    }
  }
}

void k_scores_heads(const float *q, int nv, int sm, const uint32_t *off, int D, const uint8_t *k, uint32_t stride, int dt,
                    int n, float *s) {
  switch (dt & DUO_DTYPE_MASK) {
    case DUO_BF16: scores_heads_impl(q, nv, sm, off, D, k, stride, n, s, DUO_BF16); break;
    case DUO_F16: scores_heads_impl(q, nv, sm, off, D, k, stride, n, s, DUO_F16); break;
    default: scores_heads_impl(q, nv, sm, off, D, k, stride, n, s, DUO_F32); break;
  }
}

/* RR rows (4 or 1) into every accumulator: each QL elements of acc[h] loaded once, RR multiply-adds, stored. The RR rows
 * are read head by head across, RR streams one row apart. */
ALWAYS_INLINE void pv_heads_rows(float *acc, const float *p, int sm, int nv, const uint32_t *off, int D,
                                 const uint8_t *row, uint32_t stride, int dt, const int RR) {
  for (int h = 0; h < nv; h++) {
    VQ w[4];
    for (int r = 0; r < RR; r++) w[r] = VQ_SPLAT(p + r * sm + h);
    const uint8_t *x = row + off[h];
    float *a = acc + h * D;
    for (int d = 0; d < D; d += QL) {
      VQ e = VQ_LOAD(a + d);
      for (int r = 0; r < RR; r++) e = VQ_MAD(e, w[r], row_half(x + (uint32_t)r * stride, d, dt));
      VQ_STORE(a + d, e);
    }
  }
}

ALWAYS_INLINE void pv_heads_impl(float *acc, const float *alpha, const float *p, int sm, int nv, const uint32_t *off,
                                 int D, const uint8_t *v, uint32_t stride, int n, int dt) {
  for (int h = 0; h < nv; h++) {
    const VQ al = VQ_SPLAT(alpha + h);
    for (int d = 0; d < D; d += QL) VQ_STORE(acc + h * D + d, VQ_MUL(VQ_LOAD(acc + h * D + d), al));
  }
  int i = 0;
  for (; i + 4 <= n; i += 4) pv_heads_rows(acc, p + i * sm, sm, nv, off, D, v + (uint32_t)i * stride, stride, dt, 4);
  for (; i < n; i++) pv_heads_rows(acc, p + i * sm, sm, nv, off, D, v + (uint32_t)i * stride, stride, dt, 1);
}

void k_pv_heads(float *acc, const float *alpha, const float *p, int sm, int nv, const uint32_t *off, int D,
                const uint8_t *v, uint32_t stride, int dt, int n) {
  switch (dt & DUO_DTYPE_MASK) {
    case DUO_BF16: pv_heads_impl(acc, alpha, p, sm, nv, off, D, v, stride, n, DUO_BF16); break;
    case DUO_F16: pv_heads_impl(acc, alpha, p, sm, nv, off, D, v, stride, n, DUO_F16); break;
    default: pv_heads_impl(acc, alpha, p, sm, nv, off, D, v, stride, n, DUO_F32); break;
  }
}
#undef QL
#undef QC
#endif

void k_scores_k64(const float *q4, int D, const uint8_t *kt, int dt, int n, float *s) {
  if ((dt & DUO_DTYPE_MASK) == DUO_F16) scores_k64_impl(q4, D, kt, n, s, DUO_F16);
#ifdef VZ_BF16_EVEN
  else if (D % 16 == 0) scores_k64_z(q4, D, kt, n, s);
#endif
  else scores_k64_impl(q4, D, kt, n, s, DUO_BF16);
}

void k_pv_v64(float *acc, const float *alpha, const float *p, int D, const uint8_t *vt, int dt, int n) {
  if ((dt & DUO_DTYPE_MASK) == DUO_F16) pv_v64_impl(acc, alpha, p, D, vt, n, DUO_F16);
#ifdef VZ_BF16_EVEN
  else if (D % 16 == 0) pv_v64_z(acc, alpha, p, D, vt, n);
#endif
  else pv_v64_impl(acc, alpha, p, D, vt, n, DUO_BF16);
}

/* 4 16-bit elements (low 64 bits of a vector, or high with `high`) of dtype dt widened to f32: bf16 by a shift,
 * f16 by the multiply of VF_F16_FAST, or exactly (Inf/NaN included) with dt | DUO_NONFINITE. */
ALWAYS_INLINE VF widen4(VI c, int high, int dt) {
  VI u = high ? VI_WIDEN_HI_U16(c) : VI_WIDEN_LO_U16(c);
  if ((dt & DUO_DTYPE_MASK) == DUO_BF16) return VI_SHL(u, 16);
  VI b = VI_AND(VI_SRA(VI_SHL(u, 16), 3), VI_SPLAT((int32_t)0x8fffffff)); /* = VI_F16_BITS */
  VF x = VF_MUL(b, VF_SPLAT(0x1p112f));
  if (!(dt & DUO_NONFINITE)) return x;
  VI special = VI_EQ(VI_AND(b, VI_SPLAT(0x0f800000)), VI_SPLAT(0x0f800000));
  return VI_OR(x, VI_AND(special, VI_SPLAT(0x7f800000)));
}

/* A K64 group holds [D][8 rows]: 4 columns are 64 contiguous bytes. Two rounds of interleaving (16-bit, then 32-bit
 * lanes) turn them into 4 vectors of two rows x 4 columns each; widening makes each row one f32x4. */
ALWAYS_INLINE void widen_k64_impl(float *dst, const uint8_t *kt, int i0, int n, int D, int dt) {
  for (int g = i0 / 8; g * 8 < i0 + n; g++) {
    const uint8_t *col = kt + (uint32_t)g * D * 16;
    for (int d = 0; d < D; d += 4, col += 64) {
      VI a0 = VF_LOAD(col), a1 = VF_LOAD(col + 16), a2 = VF_LOAD(col + 32), a3 = VF_LOAD(col + 48);
      VI b0 = VI_ZIP_LO16(a0, a1), b1 = VI_ZIP_HI16(a0, a1);
      VI b2 = VI_ZIP_LO16(a2, a3), b3 = VI_ZIP_HI16(a2, a3);
      VI c[4] = {VF_ZIP_LO32(b0, b2), VF_ZIP_HI32(b0, b2),
                 VF_ZIP_LO32(b1, b3), VF_ZIP_HI32(b1, b3)}; /* rows 2k, 2k + 1 */
      for (int k = 0; k < 4; k++) {
        int r = g * 8 + 2 * k - i0;
        if (r >= 0 && r < n) VF_STORE(dst + r * D + d, widen4(c[k], 0, dt));
        if (r + 1 >= 0 && r + 1 < n) VF_STORE(dst + (r + 1) * D + d, widen4(c[k], 1, dt));
      }
    }
  }
}
void k_widen_k64(float *dst, const uint8_t *kt, int dt, int i0, int n, int D) {
  switch (dt) {
    case DUO_F16: widen_k64_impl(dst, kt, i0, n, D, DUO_F16); break;
    case DUO_F16 | DUO_NONFINITE: widen_k64_impl(dst, kt, i0, n, D, DUO_F16 | DUO_NONFINITE); break;
    default: widen_k64_impl(dst, kt, i0, n, D, DUO_BF16); break;
  }
}

/* A V64 row of one 8-column group is 16 contiguous bytes: two widenings (natural order), or the even/odd split. */
ALWAYS_INLINE void widen_v64_impl(float *dst, const uint8_t *vt, int i0, int n, int D, int even_odd, int dt) {
  for (int d = 0; d < D; d += 8, vt += 16 * DUO_TILE) {
    const uint8_t *vr = vt + (uint32_t)i0 * 16;
    float *o = dst + d;
    for (int i = 0; i < n; i++, vr += 16, o += D) {
      VI x = VF_LOAD(vr);
      if (even_odd) { /* the even elements are the low halves of the 4 lanes, the odd ones the high halves */
        VI ev = VI_EVEN_ODD16(x);
        VF_STORE(o, widen4(ev, 0, dt));
        VF_STORE(o + 4, widen4(ev, 1, dt));
      } else {
        VF_STORE(o, widen4(x, 0, dt));
        VF_STORE(o + 4, widen4(x, 1, dt));
      }
    }
  }
}
void k_widen_v64(float *dst, const uint8_t *vt, int dt, int i0, int n, int D, int even_odd) {
  switch (dt) {
    case DUO_F16: widen_v64_impl(dst, vt, i0, n, D, even_odd, DUO_F16); break;
    case DUO_F16 | DUO_NONFINITE: widen_v64_impl(dst, vt, i0, n, D, even_odd, DUO_F16 | DUO_NONFINITE); break;
    default: widen_v64_impl(dst, vt, i0, n, D, even_odd, DUO_BF16); break;
  }
}

ALWAYS_INLINE void widen_impl(float *dst, const uint8_t *src, uint32_t stride, int n, int D, int dt) {
  for (int i = 0; i < n; i++, dst += D, src += stride) {
    int d = 0;
#ifdef VQ_LANES /* AVX2 and AVX-512: VQ_LANES at a time, bf16 zero-extended and shifted, finite f16 by vcvtph2ps (exact):
                 * a prefill tile widens every block of K and V it reads: 13 % of the library's time in a 4096-token
                 * prefill with 4 lanes (perf) */
    if (dt == DUO_BF16 || dt == DUO_F16)
      for (; d + VQ_LANES <= D; d += VQ_LANES) VQ_STORE(dst + d, dt == DUO_BF16 ? VQ_BF16(src + 2 * d) : VQ_F16(src + 2 * d));
#endif
    for (; d < D; d += 4) {
      VF x = dt == DUO_F32 ? VF_LOAD(src + 4 * d) : dt == DUO_BF16 ? VF_BF16(src + 2 * d)
           : dt == DUO_F16 ? VF_F16_FAST(src + 2 * d) : vf_f16_exact(src + 2 * d); /* DUO_F16 | DUO_NONFINITE */
      VF_STORE(dst + d, x);
    }
  }
}
void k_widen(float *dst, const uint8_t *src, uint32_t stride, int dt, int n, int D) {
  switch (dt) {
    case DUO_F16: widen_impl(dst, src, stride, n, D, DUO_F16); break;
    case DUO_F16 | DUO_NONFINITE: widen_impl(dst, src, stride, n, D, DUO_F16 | DUO_NONFINITE); break;
    case DUO_BF16: case DUO_BF16 | DUO_NONFINITE: widen_impl(dst, src, stride, n, D, DUO_BF16); break;
    default: widen_impl(dst, src, stride, n, D, DUO_F32); break;
  }
}

void k_axpby(float *y, const float *a, float wa, const float *b, float wb, int D) {
  VF va = VF_SPLAT(wa), vb = VF_SPLAT(wb);
  for (int d = 0; d < D; d += 4) VF_STORE(y + d, VF_MAD(VF_MUL(VF_LOAD(a + d), va), VF_LOAD(b + d), vb));
}

void k_scale(float *y, const float *x, float s, int D) {
  VF vs = VF_SPLAT(s);
  for (int d = 0; d < D; d += 4) VF_STORE(y + d, VF_MUL(VF_LOAD(x + d), vs));
}
