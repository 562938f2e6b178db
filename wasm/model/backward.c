// The backward kernels of gate identification (prototypes, shapes and semantics in backward.h; the float64 twin is
// src/identify/ops.ts + attention.ts + backward.ts). Written with the SIMD macros of wasm/src/simd.h, so that
// native/build.sh compiles this file per instruction set as it does kernels.c.
#include <stdint.h>
#include "../src/math.h"
#include "../src/simd.h"
#include "backward.h"
#include "widen.h"

#define EXPORT __attribute__((visibility("default")))
#define FMA(acc, a, b) acc = VF_MAD(acc, a, b)

static inline float hsum(VF v) { return VF_LANE(v, 0) + VF_LANE(v, 1) + VF_LANE(v, 2) + VF_LANE(v, 3); }

// Every gradient a kernel writes is flushed to an exact zero below 2^-90 in magnitude (the native build also flushes
// subnormals in hardware around its heavy kernels). Why: wasm has no FTZ / DAZ, and on x86 an operation with a
// subnormal operand or result takes a microcode assist (a wasm transposed matmul with dy ~1e-40 ran 130x slower).
// The caller scales a step's gradients to a maximum of about 1 (src/identify/fast-optimize.ts gradientScale), but
// row magnitudes still fall through every layer's softmax weights — a 0.5B model at 4K passed ~500K subnormal inputs
// per op 20 layers down — so a floor far above 2^-126 keeps the products of what is left with weights normal.
// Exact enough: against gradients scaled to ~1 a dropped value is below 2^-90, and all of them together (under 2^30
// elements) move dα by less than 2^-60 of its scale.
#define GRAD_FLOOR_BITS 0x12800000 /* 2^-90 as f32 bits: positive floats order as their bits */

// x[r·stride + i] for r < rows, i < n: |x| < 2^-90 → 0, with integer compares (no float op meets a subnormal).
static void flush_rows(float *x, int rows, uintptr_t stride, int n) {
  const VF mag = VI_SPLAT(0x7fffffff), floor_ = VI_SPLAT(GRAD_FLOOR_BITS - 1);
  for (int r = 0; r < rows; r++) {
    float *p = x + r * stride;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
      const VF v = VF_LOAD(p + i);
      VF_STORE(p + i, VI_AND(v, VI_GT(VI_AND(v, mag), floor_)));
    }
    for (; i < n; i++) {
      union { float f; uint32_t u; } b = {p[i]};
      if ((b.u & 0x7fffffffu) < GRAD_FLOOR_BITS) p[i] = 0.0f;
    }
  }
}

// -------------------------------------------------------------------------------------------------------------
// Transposed matmul dx = dy·W, W row-major along dx's columns (W[o, k] multiplies dy[t, o] into dx[t, k]): a GEMM
// whose reduction runs over W's rows. Every element of dx is one chain of multiply-adds over o in ascending order,
// started from 0 (or dx when accumulating) and stored between chunks of o: the same sums whichever tile, column
// range or thread computes it (the native build splits the columns over threads), so results do not depend on the
// thread count. The columns go in three parts:
//  - 16-lane sets (VZ_LANES: AVX-512): runs of 32 columns through the blocked GEMM below (LINEAR_BWD_GEMM);
//  - 4-lane sets, and the rest of an AVX-512 range: strips of 8 columns (LINEAR_BWD_STRIPS);
//  - the nin % 8 tail, unpacked in 16-bit rows: one element at a time.

// Strips of 8 columns [k0, k1) (k0, k1 multiples of 8): columns in blocks of SNC, W's rows in chunks of OC, tokens in
// blocks of TB. The W block [OC, SNC] (128 KiB in f32) stays in L2 while every token block passes; inside a (token
// block, row chunk) the dy block [TB, OC] is reused by every strip and the W panel [OC, 8] of a strip by every tile of
// 4 tokens (both stay in L1); a tile keeps its 4 x 8 sums in 8 registers over the chunk's rows, each widened group of
// 8 weights shared by the 4 tokens.
#define TB 32
#define OC 128
#define SNC 256

#define LINEAR_BWD_STRIPS(NAME, WT, LD8)                                                                            \
  static void NAME(float *dx, const float *dy, const WT *w, int T, int nin, int nout, int k0, int k1, int accumulate) { \
    for (int cb = k0, ce; cb < k1; cb = ce) { /* one column block and row chunk at a time */                        \
      ce = cb + SNC < k1 ? cb + SNC : k1;                                                                           \
      for (int o0 = 0, o1, load; o0 < nout; o0 = o1) {                                                              \
        o1 = o0 + OC < nout ? o0 + OC : nout, load = o0 > 0 || accumulate;                                          \
        for (int t0 = 0; t0 < T; t0 += TB) {                                                                        \
          const int t1 = t0 + TB < T ? t0 + TB : T;                                                                 \
          for (int k = cb; k < ce; k += 8) {                                                                        \
            int t = t0;                                                                                             \
            for (; t + 4 <= t1; t += 4) {                                                                           \
              float *x0 = dx + (uintptr_t)t * nin + k, *x1 = x0 + nin, *x2 = x1 + nin, *x3 = x2 + nin;              \
              const float *g0 = dy + (uintptr_t)t * nout, *g1 = g0 + nout, *g2 = g1 + nout, *g3 = g2 + nout;        \
              VF a00 = VF_ZERO, a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;        \
              if (load) {                                                                                           \
                a00 = VF_LOAD(x0), a01 = VF_LOAD(x0 + 4), a10 = VF_LOAD(x1), a11 = VF_LOAD(x1 + 4);                 \
                a20 = VF_LOAD(x2), a21 = VF_LOAD(x2 + 4), a30 = VF_LOAD(x3), a31 = VF_LOAD(x3 + 4);                 \
              }                                                                                                     \
              for (int o = o0; o < o1; o++) {                                                                       \
                VF p0, p1, s;                                                                                       \
                LD8(w + (uintptr_t)o * nin + k, &p0, &p1);                                                          \
                s = VF_SPLAT(g0[o]); FMA(a00, s, p0); FMA(a01, s, p1);                                              \
                s = VF_SPLAT(g1[o]); FMA(a10, s, p0); FMA(a11, s, p1);                                              \
                s = VF_SPLAT(g2[o]); FMA(a20, s, p0); FMA(a21, s, p1);                                              \
                s = VF_SPLAT(g3[o]); FMA(a30, s, p0); FMA(a31, s, p1);                                              \
              }                                                                                                     \
              VF_STORE(x0, a00); VF_STORE(x0 + 4, a01); VF_STORE(x1, a10); VF_STORE(x1 + 4, a11);                   \
              VF_STORE(x2, a20); VF_STORE(x2 + 4, a21); VF_STORE(x3, a30); VF_STORE(x3 + 4, a31);                   \
            }                                                                                                       \
            for (; t < t1; t++) { /* block tails: one token */                                                      \
              float *x0 = dx + (uintptr_t)t * nin + k;                                                              \
              const float *g0 = dy + (uintptr_t)t * nout;                                                           \
              VF a0 = load ? VF_LOAD(x0) : VF_ZERO, a1 = load ? VF_LOAD(x0 + 4) : VF_ZERO;                          \
              for (int o = o0; o < o1; o++) {                                                                       \
                VF p0, p1, s = VF_SPLAT(g0[o]);                                                                     \
                LD8(w + (uintptr_t)o * nin + k, &p0, &p1);                                                          \
                FMA(a0, s, p0); FMA(a1, s, p1);                                                                     \
              }                                                                                                     \
              VF_STORE(x0, a0); VF_STORE(x0 + 4, a1);                                                               \
            }                                                                                                       \
          }                                                                                                         \
        }                                                                                                           \
      }                                                                                                             \
    }                                                                                                               \
  }

#ifdef VZ_LANES
// The 16-lane GEMM, blocked as the forward's (kernels.c MATMUL_GEMM) with the roles of k and o swapped: dx's columns
// in blocks of GNC, W's rows in chunks of GKC (the W block [GKC, GNC], 256 KiB in bf16 / f16, 512 KiB in f32, stays in
// L2 while every token tile passes), tokens in tiles of 12 (then 4, then 1). A tile's dy [12, GKC] is copied once
// per (block, chunk) into a stack buffer in broadcast order (gp [GKC][12] f32, 12 KiB: L1), then serves every run of
// 32 columns of the block: 12 x 2 accumulators + 2 weight vectors + 1 broadcast of the 32 registers, each row of 32
// widened weights shared by 12 tokens, each broadcast dy value by 32 columns. Weights are widened to element order
// (vz_ld32_f32 / _f16, vz_ld32e_bf16 of widen.h: the same columns as dx, no permutes at the stores; the forward's
// vz_ld32_bf16 gives even / odd elements instead).
#define GKC 256
#define GNC 512

// Tokens [t, t + NT) x columns [c, c + 32) over W's rows [o0, o1), gp = the tile's dy [o1 - o0][NT]; load: start
// from dx (a later chunk, or accumulating), else from 0.
#define LINEAR_BWD_TILE(NAME, WT, LDW, NT)                                                                          \
  static inline void NAME(float *dx, const float *gp, const WT *w, int nin, int t, int c, int o0, int o1, int load) { \
    float *x0 = dx + (uintptr_t)t * nin + c;                                                                        \
    VZ acc[NT][2];                                                                                                  \
    for (int i = 0; i < NT; i++) {                                                                                  \
      acc[i][0] = load ? VZ_LOAD(x0 + (uintptr_t)i * nin) : VZ_ZERO;                                                \
      acc[i][1] = load ? VZ_LOAD(x0 + (uintptr_t)i * nin + 16) : VZ_ZERO;                                           \
    }                                                                                                               \
    const WT *wr = w + (uintptr_t)o0 * nin + c;                                                                     \
    for (int o = o0; o < o1; o++, wr += nin, gp += NT) {                                                            \
      VZ lo, hi;                                                                                                    \
      LDW(wr, &lo, &hi);                                                                                            \
      for (int i = 0; i < NT; i++) {                                                                                \
        const VZ s = VZ_LOAD_SPLAT(gp + i);                                                                         \
        acc[i][0] = VZ_MAD(acc[i][0], s, lo);                                                                       \
        acc[i][1] = VZ_MAD(acc[i][1], s, hi);                                                                       \
      }                                                                                                             \
    }                                                                                                               \
    for (int i = 0; i < NT; i++) {                                                                                  \
      VZ_STORE(x0 + (uintptr_t)i * nin, acc[i][0]);                                                                 \
      VZ_STORE(x0 + (uintptr_t)i * nin + 16, acc[i][1]);                                                            \
    }                                                                                                               \
  }

// Columns [k0, k1) (k0 a multiple of 8, k1 - k0 a multiple of 32, k1 <= nin & ~7: whole groups of 8).
#define LINEAR_BWD_GEMM(NAME, WT, LDW)                                                                              \
  LINEAR_BWD_TILE(NAME##_12, WT, LDW, 12)                                                                          \
  LINEAR_BWD_TILE(NAME##_4, WT, LDW, 4)                                                                            \
  LINEAR_BWD_TILE(NAME##_1, WT, LDW, 1)                                                                            \
  static void NAME(float *dx, const float *dy, const WT *w, int T, int nin, int nout, int k0, int k1, int accumulate) { \
    float gp[GKC * 12] __attribute__((aligned(64)));                                                                \
    for (int cb = k0; cb < k1; cb += GNC) {                                                                         \
      const int ce = cb + GNC < k1 ? cb + GNC : k1;                                                                 \
      for (int o0 = 0; o0 < nout; o0 += GKC) {                                                                      \
        const int o1 = o0 + GKC < nout ? o0 + GKC : nout, on = o1 - o0, load = o0 > 0 || accumulate;                \
        for (int t = 0; t < T;) {                                                                                   \
          const int nt = T - t >= 12 ? 12 : T - t >= 4 ? 4 : 1;                                                     \
          for (int i = 0; i < nt; i++) {                                                                            \
            const float *g = dy + (uintptr_t)(t + i) * nout + o0;                                                   \
            for (int o = 0; o < on; o++) gp[o * nt + i] = g[o];                                                     \
          }                                                                                                         \
          for (int c = cb; c < ce; c += 32) {                                                                       \
            if (nt == 12) NAME##_12(dx, gp, w, nin, t, c, o0, o1, load);                                            \
            else if (nt == 4) NAME##_4(dx, gp, w, nin, t, c, o0, o1, load);                                         \
            else NAME##_1(dx, gp, w, nin, t, c, o0, o1, load);                                                      \
          }                                                                                                         \
          t += nt;                                                                                                  \
        }                                                                                                           \
      }                                                                                                             \
    }                                                                                                               \
  }
#define LINEAR_BWD_WIDE(NAME, dx, dy, w, T, nin, nout, k0, kv, accumulate)                                          \
  (NAME(dx, dy, w, T, nin, nout, k0, k0 + ((kv - k0) & ~31), accumulate), k0 + ((kv - k0) & ~31))
#else
#define LINEAR_BWD_GEMM(NAME, WT, LDW)
#define LINEAR_BWD_WIDE(NAME, dx, dy, w, T, nin, nout, k0, kv, accumulate) (k0)
#endif

#define LINEAR_BWD(NAME, WT, LD8, W1, LDW)                                                                          \
  LINEAR_BWD_STRIPS(NAME##_strips, WT, LD8)                                                                        \
  LINEAR_BWD_GEMM(NAME##_gemm, WT, LDW)                                                                            \
  EXPORT void NAME(float *dx, const float *dy, const WT *w, int T, int nin, int nout, int k0, int k1, int accumulate) { \
    const int c8 = nin & ~7, kv = k1 < c8 ? k1 : c8;                                                                \
    if (k0 < kv) {                                                                                                  \
      const int ks = LINEAR_BWD_WIDE(NAME##_gemm, dx, dy, w, T, nin, nout, k0, kv, accumulate);                     \
      NAME##_strips(dx, dy, w, T, nin, nout, ks, kv, accumulate);                                                   \
    }                                                                                                               \
    for (int k = k0 > c8 ? k0 : c8; k < k1; k++) { /* the unpacked tail columns */                                  \
      for (int t = 0; t < T; t++) {                                                                                 \
        const float *g = dy + (uintptr_t)t * nout;                                                                  \
        float acc = accumulate ? dx[(uintptr_t)t * nin + k] : 0.0f;                                                 \
        for (int o = 0; o < nout; o++) acc += g[o] * W1(w + (uintptr_t)o * nin + k);                                \
        dx[(uintptr_t)t * nin + k] = acc;                                                                           \
      }                                                                                                             \
    }                                                                                                               \
    if (k0 < k1) flush_rows(dx + k0, T, nin, k1 - k0);                                                              \
  }

#ifdef VZ_LANES
#define LDW_F32 vz_ld32_f32
#define LDW_F16 vz_ld32_f16
#define LDW_BF16 vz_ld32e_bf16
#endif
LINEAR_BWD(bwd_linear_f32, float, ld8_f32, w1_f32, LDW_F32)
LINEAR_BWD(bwd_linear_f16, uint16_t, ld8_f16, w1_f16, LDW_F16)
LINEAR_BWD(bwd_linear_bf16, uint16_t, ld8_bf16, w1_bf16, LDW_BF16)

// -------------------------------------------------------------------------------------------------------------
// RMSNorm

// Σ x[i]·y[i] over n, 4 lanes then the tail.
static inline float dot(const float *x, const float *y, int n) {
  const int n4 = n & ~3;
  VF acc = VF_ZERO;
  for (int i = 0; i < n4; i += 4) FMA(acc, VF_LOAD(x + i), VF_LOAD(y + i));
  float s = hsum(acc);
  for (int i = n4; i < n; i++) s += x[i] * y[i];
  return s;
}

EXPORT void bwd_rms_inv(float *rinv, const float *x, int T, int n, float eps) {
  for (int t = 0; t < T; t++) {
    const float *xr = x + (uintptr_t)t * n;
    rinv[t] = 1.0f / __builtin_sqrtf(dot(xr, xr, n) / (float)n + eps);
  }
}

EXPORT void bwd_rmsnorm(float *dx, const float *dy, const float *x, const float *w, const float *rinv, int T, int n) {
  const int n4 = n & ~3;
  for (int t = 0; t < T; t++) {
    const float *g = dy + (uintptr_t)t * n, *xr = x + (uintptr_t)t * n;
    float *d = dx + (uintptr_t)t * n;
    VF acc = VF_ZERO;
    for (int i = 0; i < n4; i += 4) FMA(acc, VF_MUL(VF_LOAD(w + i), VF_LOAD(g + i)), VF_LOAD(xr + i));
    float s = hsum(acc);
    for (int i = n4; i < n; i++) s += w[i] * g[i] * xr[i];
    const float ri = rinv[t], c = s * ri * ri * ri / (float)n;
    const VF rv = VF_SPLAT(ri), cv = VF_SPLAT(c);
    for (int i = 0; i < n4; i += 4) {
      VF v = VF_SUB(VF_MUL(VF_MUL(VF_LOAD(w + i), VF_LOAD(g + i)), rv), VF_MUL(VF_LOAD(xr + i), cv));
      VF_STORE(d + i, VF_ADD(VF_LOAD(d + i), v));
    }
    for (int i = n4; i < n; i++) d[i] += w[i] * g[i] * ri - xr[i] * c;
  }
  flush_rows(dx, T, n, n);
}

// -------------------------------------------------------------------------------------------------------------
// SwiGLU: σ(a) = 1 / (1 + 2^e), e = −a·log2 e; σ = 0 exactly where e > FLUSH_LOG2 (a < −34.7: σ < 2^-50, see the
// flush below; the clamp at 127 it replaces left σ = 2^-127, a subnormal, for a < −88).

// Weights below 2^-FLUSH_LOG2 (of the largest in their softmax row, or σ) are flushed to exact zeros where they arise,
// so that no subnormal is made from them. wasm has no FTZ / DAZ, and on x86 an operation with a subnormal operand or
// result takes a microcode assist: a wasm transposed matmul with dy ~1e-40 ran 130x slower, the attention backward with
// dO ~1e-38 70x. Gradients themselves are kept normal by loss scaling (src/identify/fast-optimize.ts gradientScale);
// weights are not scaled, and exp2 of a score 126 below the maximum is a subnormal, times any gradient (native also
// flushes in hardware, native/src/backward.c). Exact enough: a softmax row's dropped weights sum to less than n·2^-50
// of its total (n keys; under 2^-30 up to a million), below the f32 rounding of the sum itself (2^-24 relative), and
// each dropped backward term is as small against the row's kept ones.
#define FLUSH_LOG2 50.0f

static inline VF sigmoid4(VF a) {
  VF e = VF_MUL(a, VF_SPLAT(-1.4426950408889634f));
  const VF tiny = VI_GT(e, VI_SPLAT(0x42480000)); /* e > 50.0f: positive floats order as their bits (negative: < 0) */
  e = VF_MIN(e, VF_SPLAT(FLUSH_LOG2));
  return VF_SELECT(tiny, VF_ZERO, VF_DIV(VF_SPLAT(1.0f), VF_ADD(VF_SPLAT(1.0f), vf_exp2(e))));
}

static inline void swiglu_bwd4(float *da, float *du, const float *dm, const float *a, const float *u) {
  const VF av = VF_LOAD(a), g = VF_LOAD(dm), s = sigmoid4(av), one = VF_SPLAT(1.0f);
  const VF ds = VF_MUL(s, VF_ADD(one, VF_MUL(av, VF_SUB(one, s)))); /* d silu / da */
  VF_STORE(da, VF_MUL(VF_MUL(g, VF_LOAD(u)), ds));
  VF_STORE(du, VF_MUL(g, VF_MUL(av, s)));
}

EXPORT void bwd_swiglu(float *da, float *du, const float *dm, const float *a, const float *u, int n) {
  const int n4 = n & ~3;
  for (int i = 0; i < n4; i += 4) swiglu_bwd4(da + i, du + i, dm + i, a + i, u + i);
  for (int i = n4; i < n; i++) { /* the tail, one lane of a vector each */
    const VF av = VF_SPLAT(a[i]), s = sigmoid4(av), one = VF_SPLAT(1.0f);
    const float sg = VF_LANE(s, 0);
    da[i] = dm[i] * u[i] * VF_LANE(VF_MUL(s, VF_ADD(one, VF_MUL(av, VF_SUB(one, s)))), 0);
    du[i] = dm[i] * a[i] * sg;
  }
  flush_rows(da, 1, 0, n);
  flush_rows(du, 1, 0, n);
}

// -------------------------------------------------------------------------------------------------------------
// RoPE⁻¹

EXPORT void bwd_rope(float *x, const float *cos, const float *sin, int T, int H, int D) {
  const int half = D / 2, h4 = half & ~3;
  for (int t = 0; t < T; t++) {
    const float *c = cos + (uintptr_t)t * half, *s = sin + (uintptr_t)t * half;
    for (int h = 0; h < H; h++) {
      float *p = x + ((uintptr_t)t * H + h) * D;
      for (int i = 0; i < h4; i += 4) {
        VF a = VF_LOAD(p + i), b = VF_LOAD(p + half + i), cv = VF_LOAD(c + i), sv = VF_LOAD(s + i);
        VF_STORE(p + i, VF_ADD(VF_MUL(a, cv), VF_MUL(b, sv)));
        VF_STORE(p + half + i, VF_SUB(VF_MUL(b, cv), VF_MUL(a, sv)));
      }
      for (int i = h4; i < half; i++) {
        const float a = p[i], b = p[half + i];
        p[i] = a * c[i] + b * s[i];
        p[half + i] = b * c[i] - a * s[i];
      }
    }
  }
  flush_rows(x, T, (uintptr_t)H * D, H * D);
}

// -------------------------------------------------------------------------------------------------------------
// Streaming attention over key ranges (D a multiple of 4, ≤ 256). Scores are taken in log2 units (q·k · log2e/√D)
// so that the weights are exp2; lse is returned in natural log.

#define DMAX 256

// The rows of both kernels are written once over a vector type V of L lanes (LD, ST, MAD(acc, a, b) = acc + a·b,
// SPL, Z, SUM: the lane sum): 4-lane VF for any D (a multiple of 4), and on 16-lane sets (VZ_LANES) VZ where D is a
// multiple of 16. Called with a constant D (64, 128) the compiler keeps a row's D-vectors in registers.
#define ATTEND_ROWS(SUFFIX, V, L, LD, ST, MAD, SPL, Z, SUM)                                                          \
  static inline __attribute__((always_inline)) float dot_##SUFFIX(const float *a, const float *b, int D) {          \
    V e = Z, o = Z;                                                                                                \
    int d = 0;                                                                                                     \
    for (; d + 2 * L <= D; d += 2 * L) e = MAD(e, LD(a + d), LD(b + d)), o = MAD(o, LD(a + d + L), LD(b + d + L)); \
    if (d < D) e = MAD(e, LD(a + d), LD(b + d));                                                                   \
    return SUM(ADD_##SUFFIX(e, o));                                                                                \
  }                                                                                                                \
  /* out, lse of query rows [0, nq) x heads [h0, h1) (bwd_attend) */                                               \
  static inline __attribute__((always_inline)) void attend_##SUFFIX(                                               \
      float *out, float *lse, const float *q, const float *k, const float *v, const int32_t *ranges, int nq, int Hq, \
      int Hkv, int h0, int h1, const int D) {                                                                      \
    const int G = Hq / Hkv;                                                                                        \
    const float scale = (float)(LOG2E / __builtin_sqrt((double)D));                                                \
    V acc[DMAX / L];                                                                                               \
    for (int i = 0; i < nq; i++) {                                                                                 \
      const int32_t a = ranges[3 * i], b = ranges[3 * i + 1], e = ranges[3 * i + 2];                               \
      for (int h = h0; h < h1; h++) {                                                                              \
        const float *qr = q + ((uintptr_t)i * Hq + h) * D;                                                         \
        const int g = h / G;                                                                                       \
        float m = -__builtin_inff(), sum = 0.0f;                                                                   \
        for (int d = 0; d < D / L; d++) acc[d] = Z;                                                                \
        for (int pass = 0; pass < 2; pass++) { /* online softmax over the sinks, then the window */               \
          for (int j = pass ? b : 0, end = pass ? e : a; j < end; j++) {                                           \
            const uintptr_t kv = ((uintptr_t)j * Hkv + g) * D;                                                     \
            const float s = dot_##SUFFIX(qr, k + kv, D) * scale;                                                   \
            if (s - m < -FLUSH_LOG2) continue; /* below 2^-50 of the running maximum: flushed */                   \
            if (s > m) { /* rescale what was summed so far (flushed below 2^-50 of the new maximum) */             \
              const float c = m - s < -FLUSH_LOG2 ? 0.0f : exp2_f32(m - s);                                        \
              sum *= c;                                                                                            \
              for (int d = 0; d < D / L; d++) acc[d] = MUL_##SUFFIX(acc[d], SPL(c));                               \
              m = s;                                                                                               \
            }                                                                                                      \
            const float p = exp2_f32(s - m);                                                                       \
            sum += p;                                                                                              \
            const V pv = SPL(p);                                                                                   \
            for (int d = 0; d < D / L; d++) acc[d] = MAD(acc[d], pv, LD(v + kv + L * d));                          \
          }                                                                                                        \
        }                                                                                                          \
        float *o = out + ((uintptr_t)i * Hq + h) * D;                                                              \
        const V inv = SPL(sum > 0 ? 1.0f / sum : 0.0f);                                                            \
        for (int d = 0; d < D / L; d++) ST(o + L * d, MUL_##SUFFIX(acc[d], inv));                                  \
        lse[(uintptr_t)i * Hq + h] = sum > 0 ? (float)((double)m * LN2 + log_f64((double)sum)) : -__builtin_inff(); \
      }                                                                                                            \
    }                                                                                                              \
  }                                                                                                                \
  /* dq, dk, dv for query rows [0, nq) x the query heads of KV heads [g0, g1) (bwd_attend_backward); a row's dq is \
   * summed in registers and added to dq once */                                                                   \
  static inline __attribute__((always_inline)) void attend_bwd_##SUFFIX(                                           \
      float *dq, float *dk, float *dv, const float *dO, const float *O, const float *lse, const float *q,          \
      const float *k, const float *v, const int32_t *ranges, int nq, int Hq, int Hkv, int g0, int g1, const int D) { \
    const int G = Hq / Hkv;                                                                                        \
    const float rs = (float)(1.0 / __builtin_sqrt((double)D)), l2 = (float)LOG2E;                                  \
    V dqa[DMAX / L], gv[DMAX / L], qv[DMAX / L];                                                                   \
    for (int i = 0; i < nq; i++) {                                                                                 \
      const int32_t a = ranges[3 * i], b = ranges[3 * i + 1], e = ranges[3 * i + 2];                               \
      for (int h = g0 * G; h < g1 * G; h++) {                                                                      \
        const uintptr_t qo = ((uintptr_t)i * Hq + h) * D;                                                          \
        const float *g = dO + qo, *qr = q + qo;                                                                    \
        int zero = 1;                                                                                              \
        for (int d = 0; d < D && zero; d++) zero = g[d] == 0.0f;                                                   \
        if (zero) continue; /* outside the cone every term is an exact zero */                                     \
        const float delta = dot_##SUFFIX(g, O + qo, D), L2 = lse[(uintptr_t)i * Hq + h] * l2;                      \
        for (int d = 0; d < D / L; d++) dqa[d] = Z, gv[d] = LD(g + L * d), qv[d] = LD(qr + L * d);                 \
        for (int pass = 0; pass < 2; pass++) {                                                                     \
          for (int j = pass ? b : 0, end = pass ? e : a; j < end; j++) {                                           \
            const uintptr_t kv = ((uintptr_t)j * Hkv + h / G) * D;                                                 \
            const float e2 = dot_##SUFFIX(qr, k + kv, D) * rs * l2 - L2; /* log2 P */                              \
            if (e2 < -FLUSH_LOG2) continue; /* P below 2^-50: flushed, as in the forward */                        \
            const float p = exp2_f32(e2), ds = p * (dot_##SUFFIX(g, v + kv, D) - delta) * rs;                      \
            const V dsv = SPL(ds), pv = SPL(p);                                                                    \
            float *dkr = dk + kv, *dvr = dv + kv;                                                                  \
            for (int d = 0; d < D / L; d++) {                                                                      \
              dqa[d] = MAD(dqa[d], dsv, LD(k + kv + L * d));                                                       \
              ST(dkr + L * d, MAD(LD(dkr + L * d), dsv, qv[d]));                                                   \
              ST(dvr + L * d, MAD(LD(dvr + L * d), pv, gv[d]));                                                    \
            }                                                                                                      \
          }                                                                                                        \
        }                                                                                                          \
        float *dqr = dq + qo;                                                                                      \
        for (int d = 0; d < D / L; d++) ST(dqr + L * d, ADD_##SUFFIX(LD(dqr + L * d), dqa[d]));                    \
      }                                                                                                            \
    }                                                                                                              \
  }

#define ADD_f VF_ADD
#define MUL_f VF_MUL
#define VF_MAD3(acc, a, b) VF_MAD(acc, a, b)
ATTEND_ROWS(f, VF, 4, VF_LOAD, VF_STORE, VF_MAD3, VF_SPLAT, VF_ZERO, hsum)
#ifdef VZ_LANES
#define ADD_z VZ_ADD
#define MUL_z VZ_MUL
#define VZ_MAD3(acc, a, b) VZ_MAD(acc, a, b)
ATTEND_ROWS(z, VZ, 16, VZ_LOAD, VZ_STORE, VZ_MAD3, VZ_SPLAT, VZ_ZERO, VZ_HSUM)
// D a multiple of 16 on 16 lanes, the common head dims as constants; else 4 lanes
#define ATTEND_DISPATCH(FN, D, ...)                                                                                 \
  if (D == 64) FN##_z(__VA_ARGS__, 64);                                                                            \
  else if (D == 128) FN##_z(__VA_ARGS__, 128);                                                                     \
  else if (D % 16 == 0) FN##_z(__VA_ARGS__, D);                                                                    \
  else FN##_f(__VA_ARGS__, D)
#else
#define ATTEND_DISPATCH(FN, D, ...)                                                                                 \
  if (D == 64) FN##_f(__VA_ARGS__, 64);                                                                            \
  else if (D == 128) FN##_f(__VA_ARGS__, 128);                                                                     \
  else FN##_f(__VA_ARGS__, D)
#endif

EXPORT void bwd_attend(float *out, float *lse, const float *q, const float *k, const float *v, const int32_t *ranges, int nq,
                       int Hq, int Hkv, int D, int h0, int h1) {
  ATTEND_DISPATCH(attend, D, out, lse, q, k, v, ranges, nq, Hq, Hkv, h0, h1);
}

EXPORT void bwd_attend_backward(float *dq, float *dk, float *dv, const float *dO, const float *O, const float *lse,
                                const float *q, const float *k, const float *v, const int32_t *ranges, int nq, int Hq,
                                int Hkv, int D, int g0, int g1) {
  ATTEND_DISPATCH(attend_bwd, D, dq, dk, dv, dO, O, lse, q, k, v, ranges, nq, Hq, Hkv, g0, g1);
  int nk = 0; /* the key rows any query sees: the rows of dk, dv this call can have written */
  for (int i = 0; i < nq; i++) nk = ranges[3 * i + 2] > nk ? ranges[3 * i + 2] : nk; /* sinks <= start <= end */
  const int G = Hq / Hkv;
  flush_rows(dq + (uintptr_t)g0 * G * D, nq, (uintptr_t)Hq * D, (g1 - g0) * G * D);
  flush_rows(dk + (uintptr_t)g0 * D, nk, (uintptr_t)Hkv * D, (g1 - g0) * D);
  flush_rows(dv + (uintptr_t)g0 * D, nk, (uintptr_t)Hkv * D, (g1 - g0) * D);
}

// -------------------------------------------------------------------------------------------------------------
// The mix and the fused dα reduction

EXPORT void bwd_mix(float *dstr, double *dalpha, const float *dmix, const float *afull, const float *astr, const float *alpha,
                    int nq, int Hq, int Hkv, int D) {
  const int G = Hq / Hkv, D4 = D & ~3;
  for (int i = 0; i < nq; i++) {
    for (int h = 0; h < Hq; h++) {
      const uintptr_t o = ((uintptr_t)i * Hq + h) * D;
      const float keep = 1.0f - alpha[h / G];
      const VF kv = VF_SPLAT(keep);
      VF acc = VF_ZERO;
      for (int d = 0; d < D4; d += 4) {
        const VF g = VF_LOAD(dmix + o + d);
        FMA(acc, g, VF_SUB(VF_LOAD(afull + o + d), VF_LOAD(astr + o + d)));
        VF_STORE(dstr + o + d, VF_MUL(kv, g));
      }
      float s = hsum(acc);
      for (int d = D4; d < D; d++) {
        s += dmix[o + d] * (afull[o + d] - astr[o + d]);
        dstr[o + d] = keep * dmix[o + d];
      }
      dalpha[h / G] += (double)s;
    }
  }
  flush_rows(dstr, nq, (uintptr_t)Hq * D, Hq * D);
}
