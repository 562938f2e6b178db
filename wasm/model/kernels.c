// Model kernels for the Llama-family runner (src/model/kernels-wasm.ts): matmul y = x·Wᵀ for row-major W in f32,
// f16 or bf16 (widened to f32 in registers) or llama.cpp's Q8_0 / Q4_0 / Q4_K / Q6_K blocks (decoded in registers),
// RMSNorm, RoPE (rotate-half), SwiGLU, embedding lookup.
// In the wasm build f16/bf16 matrices are packed once after loading (pack_u16); the native build reads them in the
// file's order (widen.h says why). One instance per model, in the calling thread; the TS side owns the memory layout
// (weights, then scratch for the activations of one call) and passes byte addresses as u32. No libc: freestanding, f32 accumulation, written with
// the SIMD macros of wasm/src/simd.h: native/build.sh compiles this file per instruction set too (libduo.so's model
// kernels, native/src/model.c).
// The reference twin, with float64 accumulation, is src/model/kernels-reference.ts.
#include <stdint.h>
#include "../src/simd.h"
#include "widen.h"

#define EXPORT __attribute__((visibility("default")))

#ifdef W16_PACKED
// In place on a row-major [rows, cols] matrix of 16-bit elements: every full group of 8 of each row to the packed
// order of widen.h; the cols % 8 tail of each row stays as is (the kernels read it one element at a time).
EXPORT void pack_u16(uint16_t* w, int rows, int cols) {
  const int c8 = cols & ~7;
  for (int r = 0; r < rows; r++) {
    uint16_t* row = w + (uintptr_t)r * cols;
    for (int k = 0; k < c8; k += 8) {
      VI v = VF_LOAD(row + k);
      VF_STORE(row + k, VI_ZIP_LO16(v, VF_SWAP64(v))); /* 16-bit lanes 0 4 1 5 2 6 3 7 */
    }
  }
}
#endif

static inline float hsum(VF v) {
  return VF_LANE(v, 0) + VF_LANE(v, 1) + VF_LANE(v, 2) +
         VF_LANE(v, 3);
}

#define FMA(acc, a, b) acc = VF_MAD(acc, a, b)

// A hint that the line at p is read soon, into L2 (prefetcht1); nothing in the wasm build, which has no prefetch.
#ifdef __wasm__
#define PREFETCH_L2(p) ((void)(p))
#else
#define PREFETCH_L2(p) __builtin_prefetch((const void*)(p), 0, 2)
#endif

// -------------------------------------------------------------------------------------------------------------
// matmul: y[T, nout] = x[T, nin] · W[nout, nin]ᵀ (+ b[nout]); b = 0 means no bias. On AVX-512, prefill (T >= GT_MIN)
// goes through the GEMM blocking of MATMUL_PREFILL below for all but the last T % 4 tokens and takes the rest here.
// Tokens are processed in blocks of TB (their x rows stay in cache while all of W streams past once per block);
// inside a block, tiles of 4 tokens x 2 weight rows share each widened weight vector. k runs 8 at a time, the
// tail (nin % 8) in scalar code. Where the SIMD set has 16-lane vectors (VZ_LANES: AVX-512), rows go WT_R at a time
// in tiles of WT_T tokens, then one token at a time (decode), 32 weights per step in 16 lanes: 4x the lanes per
// multiply-add; the row pairs take the last nout % WT_R rows.

#define TB 32

// Rows o, o + 1 (o + 1 < nout, else o alone) for tokens [t0, t1).
#define MATMUL_PAIR(NAME, WT, LD8, W1)                                                                            \
  static inline void NAME(float* y, const float* x, const WT* w, const float* b, int nin, int nout, int o,      \
                          int t0, int t1) {                                                                     \
    const int k8 = nin & ~7;                                                                                    \
    const int two = o + 1 < nout;                                                                               \
    const WT* w0 = w + (uintptr_t)o * nin;                                                                      \
    const WT* w1 = two ? w0 + nin : w0;                                                                         \
    const float b0 = b ? b[o] : 0.0f, b1 = b && two ? b[o + 1] : 0.0f;                                          \
    int t = t0;                                                                                                 \
    for (; t + 4 <= t1; t += 4) {                                                                               \
      const float* x0 = x + (uintptr_t)t * nin;                                                                 \
      const float *x1 = x0 + nin, *x2 = x1 + nin, *x3 = x2 + nin;                                               \
      VF a00 = VF_SPLAT(0), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;        \
      for (int k = 0; k < k8; k += 8) {                                                                         \
        VF p0, p1, q0, q1;                                                                                      \
        LD8(w0 + k, &p0, &p1);                                                                                  \
        LD8(w1 + k, &q0, &q1);                                                                                  \
        VF u = VF_LOAD(x0 + k), v = VF_LOAD(x0 + k + 4);                                                        \
        FMA(a00, u, p0); FMA(a00, v, p1); FMA(a01, u, q0); FMA(a01, v, q1);                                     \
        u = VF_LOAD(x1 + k), v = VF_LOAD(x1 + k + 4);                                                           \
        FMA(a10, u, p0); FMA(a10, v, p1); FMA(a11, u, q0); FMA(a11, v, q1);                                     \
        u = VF_LOAD(x2 + k), v = VF_LOAD(x2 + k + 4);                                                           \
        FMA(a20, u, p0); FMA(a20, v, p1); FMA(a21, u, q0); FMA(a21, v, q1);                                     \
        u = VF_LOAD(x3 + k), v = VF_LOAD(x3 + k + 4);                                                           \
        FMA(a30, u, p0); FMA(a30, v, p1); FMA(a31, u, q0); FMA(a31, v, q1);                                     \
      }                                                                                                         \
      float s[4][2] = {{hsum(a00), hsum(a01)}, {hsum(a10), hsum(a11)}, {hsum(a20), hsum(a21)},                  \
                       {hsum(a30), hsum(a31)}};                                                                 \
      const float* xs[4] = {x0, x1, x2, x3};                                                                    \
      for (int j = 0; j < 4; j++) {                                                                             \
        for (int k = k8; k < nin; k++) {                                                                        \
          s[j][0] += xs[j][k] * W1(w0 + k);                                                                     \
          s[j][1] += xs[j][k] * W1(w1 + k);                                                                     \
        }                                                                                                       \
        y[(uintptr_t)(t + j) * nout + o] = s[j][0] + b0;                                                        \
        if (two) y[(uintptr_t)(t + j) * nout + o + 1] = s[j][1] + b1;                                           \
      }                                                                                                         \
    }                                                                                                           \
    for (; t < t1; t++) { /* single tokens (decode, block tails): two accumulators per row */                  \
      const float* x0 = x + (uintptr_t)t * nin;                                                                 \
      VF a0 = VF_SPLAT(0), a1 = a0, c0 = a0, c1 = a0;                                                           \
      for (int k = 0; k < k8; k += 8) {                                                                         \
        VF p0, p1, q0, q1;                                                                                      \
        if (k % (64 / (int)sizeof(WT)) == 0) { /* the next pair's line at k, as the 16-lane tiles do (AVX2: */ \
          /* decode passes over Llama-3-180m's matrices 8.8-9.9 -> 13.5-13.8 GB/s with one thread) */            \
          PREFETCH_L2(w0 + 2 * (uintptr_t)nin + k);                                                             \
          PREFETCH_L2(w0 + 3 * (uintptr_t)nin + k);                                                             \
        }                                                                                                       \
        LD8(w0 + k, &p0, &p1);                                                                                  \
        LD8(w1 + k, &q0, &q1);                                                                                  \
        VF u = VF_LOAD(x0 + k), v = VF_LOAD(x0 + k + 4);                                                        \
        FMA(a0, u, p0); FMA(a1, v, p1); FMA(c0, u, q0); FMA(c1, v, q1);                                         \
      }                                                                                                         \
      float s0 = hsum(VF_ADD(a0, a1)), s1 = hsum(VF_ADD(c0, c1));                                               \
      for (int k = k8; k < nin; k++) {                                                                          \
        s0 += x0[k] * W1(w0 + k);                                                                               \
        s1 += x0[k] * W1(w1 + k);                                                                               \
      }                                                                                                         \
      y[(uintptr_t)t * nout + o] = s0 + b0;                                                                     \
      if (two) y[(uintptr_t)t * nout + o + 1] = s1 + b1;                                                        \
    }                                                                                                           \
  }

#ifdef VZ_LANES
// A tile of NT tokens [t, t + NT) x WT_R rows [o, o + WT_R): NT x WT_R accumulators of 16 lanes, the widened 32
// weights of each row shared by the NT tokens, each x vector by the WT_R rows (NT = 4: 16 + 8 + 2 of the 32
// registers). One token (decode) keeps a second accumulator per row for the upper 16 weights, so that 8 chains of
// one multiply-add per step hide its latency, and asks for the same columns of the next WT_R rows in L2 (prefetcht1,
// a tile ahead): left to the hardware prefetcher, the 4 short streams of a small model's rows (2-7 KiB each) read at
// 10.5-12 GB/s from DRAM with one thread, 14-15 GB/s with the hint (decode passes over Llama-3-180m's matrices; at
// [14336, 4096] bf16 the GEMV went from 5.6-5.8 to 4.2-4.3 ms). Runs of 32 are widened by LDW and meet x in the lanes XL loads it in
// (widen.h vz_*: bf16's even/odd split of x is shared by the WT_R rows); the rest of the row goes through TAIL.
#define WT_T 4
#define WT_R 4
// s + x[k32, nin) · w[k32, nin) of one row, k32 = nin & ~31 (after the 16-lane runs): 8 at a time (LD8, 4 lanes), then
// the last nin % 8 weights one by one, as in the pairs.
#define MATMUL_TAIL(NAME, WT, LD8, W1)                                                                            \
  static inline float NAME(float s, const float* x, const WT* w, int nin) {                                     \
    const int k32 = nin & ~31, k8 = nin & ~7;                                                                   \
    if (k8 > k32) {                                                                                             \
      VF a = VF_SPLAT(0);                                                                                       \
      for (int k = k32; k < k8; k += 8) {                                                                       \
        VF p0, p1;                                                                                              \
        LD8(w + k, &p0, &p1);                                                                                   \
        FMA(a, VF_LOAD(x + k), p0);                                                                             \
        FMA(a, VF_LOAD(x + k + 4), p1);                                                                         \
      }                                                                                                         \
      s += hsum(a);                                                                                             \
    }                                                                                                           \
    for (int k = k8; k < nin; k++) s += x[k] * W1(w + k);                                                       \
    return s;                                                                                                   \
  }
#define MATMUL_WIDE(NAME, WT, LDW, XL, TAIL, NT)                                                                  \
  static inline void NAME(float* y, const float* x, const WT* w, const float* b, int nin, int nout, int o, int t) { \
    const int k32 = nin & ~31;                                                                                  \
    const float* xt = x + (uintptr_t)t * nin;                                                                   \
    const WT* wo = w + (uintptr_t)o * nin;                                                                      \
    VZ acc[NT][WT_R], acc2[NT][WT_R];                                                                           \
    for (int i = 0; i < NT; i++)                                                                                \
      for (int r = 0; r < WT_R; r++) acc[i][r] = acc2[i][r] = VZ_ZERO;                                          \
    for (int k = 0; k < k32; k += 32) {                                                                         \
      VZ lo[WT_R], hi[WT_R];                                                                                    \
      for (int r = 0; r < WT_R; r++) LDW(wo + (uintptr_t)r * nin + k, &lo[r], &hi[r]);                          \
      if (NT == 1)                                                                                              \
        for (int r = 0; r < WT_R; r++)                                                                          \
          for (int c = 0; c < 32 * (int)sizeof(WT); c += 64)                                                    \
            VZ_PREFETCH_L2((const char*)(wo + (uintptr_t)(WT_R + r) * nin + k) + c);                            \
      for (int i = 0; i < NT; i++) {                                                                            \
        VZ u, v;                                                                                                \
        XL(xt + (uintptr_t)i * nin + k, &u, &v);                                                                \
        for (int r = 0; r < WT_R; r++) {                                                                        \
          acc[i][r] = VZ_MAD(acc[i][r], u, lo[r]);                                                              \
          if (NT == 1) acc2[i][r] = VZ_MAD(acc2[i][r], v, hi[r]);                                               \
          else acc[i][r] = VZ_MAD(acc[i][r], v, hi[r]);                                                         \
        }                                                                                                       \
      }                                                                                                         \
    }                                                                                                           \
    for (int i = 0; i < NT; i++) {                                                                              \
      const float* xi = xt + (uintptr_t)i * nin;                                                                \
      for (int r = 0; r < WT_R; r++) {                                                                          \
        const WT* wr = wo + (uintptr_t)r * nin;                                                                 \
        const float s = TAIL(VZ_HSUM(NT == 1 ? VZ_ADD(acc[i][r], acc2[i][r]) : acc[i][r]), xi, wr, nin);         \
        y[(uintptr_t)(t + i) * nout + o + r] = s + (b ? b[o + r] : 0.0f);                                      \
      }                                                                                                         \
    }                                                                                                           \
  }
// Rows [o, o + WT_R) of a token block [t0, t1): tiles of WT_T tokens, then one token at a time.
#define MATMUL_WIDE_ROWS(WIDE, WIDE1)                                                                             \
  for (; o + WT_R <= nout; o += WT_R) {                                                                         \
    int t = t0;                                                                                                 \
    for (; t + WT_T <= t1; t += WT_T) WIDE(y, x, w, b, nin, nout, o, t);                                        \
    for (; t < t1; t++) WIDE1(y, x, w, b, nin, nout, o, t);                                                     \
  }

// Prefill on AVX-512 (T >= GT_MIN tokens, nin >= 32), cache-blocked as a GEMM. The 4 x 4 tiles above re-read each
// token's whole x row (16 KiB at nin 4096) from L2 for every 4 rows, and so wait on L2 at 0.4 of the multiply-add
// peak. Here: output rows in blocks (at most GRB rows whose weights, all of k, fit in GW bytes: they stay in L2 while
// every token tile passes), tokens in tiles of 12 (then 4), k in chunks of GK. Each (tile, chunk) copies the tile's
// x chunk once into a stack buffer ([12][GK] f32 = 24 KiB: L1) in the lane order of the weight loads (XL: bf16's
// even/odd split of x done once per tile and chunk, not per row), then runs tiles of 12 tokens x 2 rows over it: 24
// accumulators + 4 weight vectors of the 32 registers, each widened weight vector shared by 12 tokens, each x vector by 2 rows. The
// accumulators of every row tile of the block are carried between chunks in a stack buffer (ab), so each output is
// one 16-lane sum over all of k, summed across lanes once; the rest of each row (nin % 32) and the bias come after
// (MATMUL_FINISH). f32 sums in another order than the tiles above, within the same tolerance.
#define GK 512
#define GRB 128
#define GW (1u << 20)
// Fewer tokens than this leave the matmul bound by the weight stream, which the 4 x 4 tiles read row after row
// faster than the chunks here (measured at [14336, 4096]: bf16 / f16 win from 12 tokens, f32 from 48).
#define GT_MIN(WT) (sizeof(WT) == 4 ? 48 : 12)
// One chunk [kc, kc + kn) of tokens [t, t + NT) x rows o, o + 1; xp = the tile's x in XL's lanes, [NT][GK]; ab = the
// tile's 2·NT accumulators between chunks ([NT][2] VZ), read unless first, written unless last; the last chunk sums
// each across lanes (VZ_QUAD, 4 at a time) into y.
#define MATMUL_GEMM_TILE(NAME, WT, LDW, NT)                                                                       \
  static inline void NAME(float* y, const float* xp, VZ* ab, const WT* w, int nin, int nout, int o, int t,     \
                          int kc, int kn, int first, int last) {                                                \
    const WT* w0 = w + (uintptr_t)o * nin + kc;                                                                 \
    const WT* w1 = w0 + nin;                                                                                    \
    VZ acc[NT][2];                                                                                              \
    for (int i = 0; i < NT; i++) acc[i][0] = first ? VZ_ZERO : ab[2 * i], acc[i][1] = first ? VZ_ZERO : ab[2 * i + 1]; \
    for (int k = 0; k < kn; k += 32) {                                                                          \
      VZ p0, p1, q0, q1;                                                                                        \
      LDW(w0 + k, &p0, &p1);                                                                                    \
      LDW(w1 + k, &q0, &q1);                                                                                    \
      VZ_PREFETCH_L2(w0 + 2 * (uintptr_t)nin + k); /* the next row tile's weights: L2 does not hold all of */ \
      VZ_PREFETCH_L2(w1 + 2 * (uintptr_t)nin + k); /* the block once x has streamed past */                   \
      for (int i = 0; i < NT; i++) {                                                                            \
        const VZ u = VZ_LOAD(xp + i * GK + k), v = VZ_LOAD(xp + i * GK + k + 16);                               \
        acc[i][0] = VZ_MAD(acc[i][0], u, p0);                                                                   \
        acc[i][1] = VZ_MAD(acc[i][1], u, q0);                                                                   \
        acc[i][0] = VZ_MAD(acc[i][0], v, p1);                                                                   \
        acc[i][1] = VZ_MAD(acc[i][1], v, q1);                                                                   \
      }                                                                                                         \
    }                                                                                                           \
    if (!last) {                                                                                                \
      for (int i = 0; i < NT; i++) ab[2 * i] = acc[i][0], ab[2 * i + 1] = acc[i][1];                            \
      return;                                                                                                   \
    }                                                                                                           \
    for (int i = 0; i < NT; i += 2) { /* sums of (t+i, o), (t+i, o+1), (t+i+1, o), (t+i+1, o+1) */              \
      float s[4];                                                                                               \
      VF_STORE(s, VZ_FOLD_ADD4(VZ_QUAD(acc[i][0], acc[i][1], acc[i + 1][0], acc[i + 1][1])));                   \
      float* y0 = y + (uintptr_t)(t + i) * nout + o;                                                            \
      y0[0] = s[0], y0[1] = s[1], y0[nout] = s[2], y0[nout + 1] = s[3];                                         \
    }                                                                                                           \
  }
// Tokens [0, tn) x rows [0, on) (on even, tn a multiple of 4) of y, from the chunks above: per row block, per token
// tile, per chunk, the accumulators of the block's tiles kept in ab ([GRB / 2][12][2] VZ: 96 KiB of stack).
#define MATMUL_GEMM(NAME, WT, LDW, XL)                                                                            \
  MATMUL_GEMM_TILE(NAME##_12, WT, LDW, 12)                                                                      \
  MATMUL_GEMM_TILE(NAME##_4, WT, LDW, 4)                                                                        \
  static void NAME(float* y, const float* x, const WT* w, int nin, int nout, int tn, int on) {                  \
    const int k32 = nin & ~31;                                                                                  \
    float xp[12 * GK] __attribute__((aligned(64)));                                                             \
    VZ ab[GRB / 2 * 24];                                                                                        \
    /* rows per block: at most GRB, and their weights (all of k) within GW bytes, so that they stay in L2 */     \
    const int rb_ = (int)(GW / ((uintptr_t)nin * sizeof(WT))) & ~1, rb = rb_ > GRB ? GRB : rb_ < 2 ? 2 : rb_;  \
    for (int ob = 0; ob < on; ob += rb) {                                                                       \
      const int oe = ob + rb < on ? ob + rb : on;                                                               \
      for (int t = 0; t < tn;) {                                                                                \
        const int nt = t + 12 <= tn ? 12 : 4;                                                                   \
        for (int kc = 0; kc < k32; kc += GK) {                                                                  \
          const int kn = k32 - kc < GK ? k32 - kc : GK, first = kc == 0, last = kc + kn == k32;                 \
          for (int i = 0; i < nt; i++)                                                                          \
            for (int k = 0; k < kn; k += 32) {                                                                  \
              VZ u, v;                                                                                          \
              XL(x + (uintptr_t)(t + i) * nin + kc + k, &u, &v);                                                \
              VZ_STORE(xp + i * GK + k, u);                                                                     \
              VZ_STORE(xp + i * GK + k + 16, v);                                                                \
            }                                                                                                   \
          if (nt == 12)                                                                                         \
            for (int o = ob; o < oe; o += 2)                                                                    \
              NAME##_12(y, xp, ab + (o - ob) * 12, w, nin, nout, o, t, kc, kn, first, last);                    \
          else                                                                                                  \
            for (int o = ob; o < oe; o += 2)                                                                    \
              NAME##_4(y, xp, ab + (o - ob) * 12, w, nin, nout, o, t, kc, kn, first, last);                     \
        }                                                                                                       \
        t += nt;                                                                                                \
      }                                                                                                         \
    }                                                                                                           \
  }
// After MATMUL_GEMM: the last nin % 32 weights of each row (TAIL) and the bias.
#define MATMUL_FINISH(NAME, WT, TAIL)                                                                             \
  static void NAME(float* y, const float* x, const WT* w, const float* b, int nin, int nout, int tn, int on) {  \
    const int k32 = nin & ~31;                                                                                  \
    if (k32 == nin && !b) return;                                                                               \
    for (int t = 0; t < tn; t++) {                                                                              \
      const float* xt = x + (uintptr_t)t * nin;                                                                 \
      for (int o = 0; o < on; o++) {                                                                            \
        const WT* wr = w + (uintptr_t)o * nin;                                                                  \
        y[(uintptr_t)t * nout + o] += TAIL(0.0f, xt, wr, nin) + (b ? b[o] : 0.0f);                              \
      }                                                                                                         \
    }                                                                                                           \
  }
// The tokens and rows the GEMM tiles take (returns tn; 0: none, the tiles above take all).
#define MATMUL_PREFILL(PREFILL, PAIR, GEMM, FINISH, WT, LDW, XL, TAIL)                                            \
  MATMUL_GEMM(GEMM, WT, LDW, XL)                                                                                \
  MATMUL_FINISH(FINISH, WT, TAIL)                                                                               \
  static int PREFILL(float* y, const float* x, const WT* w, const float* b, int T, int nin, int nout) {         \
    const int tn = T & ~3, on = nout & ~1;                                                                      \
    if (T < (int)GT_MIN(WT) || nin < 32 || on == 0) return 0;                                               \
    GEMM(y, x, w, nin, nout, tn, on);                                                                           \
    FINISH(y, x, w, b, nin, nout, tn, on);                                                                      \
    if (on < nout) PAIR(y, x, w, b, nin, nout, on, 0, tn); /* the odd last row */                               \
    return tn;                                                                                                  \
  }
#else
#define MATMUL_TAIL(NAME, WT, LD8, W1)
#define MATMUL_WIDE(NAME, WT, LDW, XL, TAIL, NT)
#define MATMUL_WIDE_ROWS(WIDE, WIDE1)
#define MATMUL_PREFILL(PREFILL, PAIR, GEMM, FINISH, WT, LDW, XL, TAIL)                                            \
  static int PREFILL(float* y, const float* x, const WT* w, const float* b, int T, int nin, int nout) {         \
    (void)y, (void)x, (void)w, (void)b, (void)T, (void)nin, (void)nout;                                         \
    return 0;                                                                                                   \
  }
#endif

#define MATMUL(NAME, WT, LDW, XL, LD8, W1)                                                                        \
  MATMUL_PAIR(NAME##_pair, WT, LD8, W1)                                                                         \
  MATMUL_TAIL(NAME##_tail, WT, LD8, W1)                                                                         \
  MATMUL_WIDE(NAME##_wide, WT, LDW, XL, NAME##_tail, WT_T)                                                      \
  MATMUL_WIDE(NAME##_wide1, WT, LDW, XL, NAME##_tail, 1)                                                        \
  MATMUL_PREFILL(NAME##_prefill, NAME##_pair, NAME##_gemm, NAME##_finish, WT, LDW, XL, NAME##_tail)            \
  EXPORT void NAME(float* y, const float* x, const WT* w, const float* b, int T, int nin, int nout) {           \
    const int tn = NAME##_prefill(y, x, w, b, T, nin, nout);                                                    \
    for (int t0 = tn; t0 < T; t0 += TB) {                                                                       \
      const int t1 = t0 + TB < T ? t0 + TB : T;                                                                 \
      int o = 0;                                                                                                \
      MATMUL_WIDE_ROWS(NAME##_wide, NAME##_wide1)                                                               \
      for (; o < nout; o += 2) NAME##_pair(y, x, w, b, nin, nout, o, t0, t1);                                   \
    }                                                                                                           \
  }

MATMUL(matmul_f32, float, vz_ld32_f32, vz_xl32_f32, ld8_f32, w1_f32)
MATMUL(matmul_bf16, uint16_t, vz_ld32_bf16, vz_xl32_bf16, ld8_bf16, w1_bf16)
MATMUL(matmul_f16, uint16_t, vz_ld32_f16, vz_xl32_f32, ld8_f16, w1_f16)

// -------------------------------------------------------------------------------------------------------------
// llama.cpp's quantized types (ggml-common.h), read in place (unaligned 16-byte loads), 32 weights at a time:
//   Q8_0  34 bytes per 32: f16 d, 32 int8 q:   weight i = q[i]·d
//   Q4_0  18 bytes per 32: f16 d, 16 bytes qs: weight i = ((qs[i] & 15) − 8)·d, weight 16 + i = ((qs[i] >> 4) − 8)·d
//   Q4_K, Q6_K  144 / 210 bytes per 256: sub-blocks of 32 with their own scales, decoded to f32 exactly as
//         src/model/kquants.ts (its comment gives the layouts), in the same f32 operations.
// A loader gives the k-th run of 32 weights of a row as 8 f32x4 and a multiplier: (q, d) for Q8_0 / Q4_0, whose dot
// product with x is Σ q·x in f32 then times d (q·x is exact); (weights, 1) for the K-quants.

// An f16 as f32, in scalar code (cheaper here than a SIMD round trip): exponent+mantissa moved into place and
// rescaled by 2^112, exact for normals and subnormals; Inf/NaN scales (not valid quantized blocks) are not handled.
static inline float half_at(const uint8_t* p) {
  const uint32_t h = (uint32_t)p[0] | (uint32_t)p[1] << 8;
  union { uint32_t u; float f; } m = {(h & 0x7fff) << 13};
  union { float f; uint32_t u; } r = {m.f * 0x1p112f};
  r.u |= (h & 0x8000) << 16;
  return r.f;
}

// 32 int8 (a = elements 0..15, b = 16..31) -> 8 f32x4 in element order.
static inline void widen32(VI a, VI b, VF v[8]) {
  const VI h[4] = {VI16_LO8(a), VI16_HI8(a), VI16_LO8(b), VI16_HI8(b)};
  for (int i = 0; i < 4; i++) {
    v[2 * i] = VF_FROM_I32(VI32_LO16(h[i]));
    v[2 * i + 1] = VF_FROM_I32(VI32_HI16(h[i]));
  }
}

static inline float ld_q8_0(const uint8_t* row, int k, VF v[8]) {
  const uint8_t* blk = row + (uintptr_t)k * 34;
  widen32(VF_LOAD(blk + 2), VF_LOAD(blk + 18), v);
  return half_at(blk);
}

static inline float ld_q4_0(const uint8_t* row, int k, VF v[8]) {
  const uint8_t* blk = row + (uintptr_t)k * 18;
  const VI qs = VF_LOAD(blk + 2), eight = VI8_SPLAT(8);
  const VI lo = VI8_SUB(VI_AND(qs, VI8_SPLAT(15)), eight);
  widen32(lo, VI8_SUB(VI8_SHR(qs, 4), eight), v);
  return half_at(blk);
}

// Q4_K sub-block j: nibbles of qs[32·(j/2) ..] (low for even j, high for odd), (scale, min) 6-bit from the 12 bytes.
static inline float ld_q4_k(const uint8_t* row, int k, VF v[8]) {
  const uint8_t* blk = row + (uintptr_t)(k >> 3) * 144;
  const uint8_t* s = blk + 4;
  const int j = k & 7;
  const int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
  const int m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | (s[j] >> 6) << 4;
  const VF d1 = VF_SPLAT(half_at(blk) * (float)sc), m1 = VF_SPLAT(half_at(blk + 2) * (float)m);
  const uint8_t* qs = blk + 16 + 32 * (j >> 1);
  VI a = VF_LOAD(qs), b = VF_LOAD(qs + 16);
  if (j & 1) a = VI8_SHR(a, 4), b = VI8_SHR(b, 4);
  else a = VI_AND(a, VI8_SPLAT(15)), b = VI_AND(b, VI8_SPLAT(15));
  widen32(a, b, v);
  for (int i = 0; i < 8; i++) v[i] = VF_SUB(VF_MUL(v[i], d1), m1);
  return 1.0f;
}

// Q6_K sub-block j: half h = j/4 of the 256, group g = j%4: low nibbles of ql[64h + 32(g&1) ..] (high nibbles for
// g >= 2), bits 2g..2g+1 of qh[128 + 32h ..]; scales[8h + 2g] for its first 16 weights, [8h + 2g + 1] for the rest.
static inline float ld_q6_k(const uint8_t* row, int k, VF v[8]) {
  const uint8_t* blk = row + (uintptr_t)(k >> 3) * 210;
  const int j = k & 7, h = j >> 2, g = j & 3;
  const uint8_t* ql = blk + 64 * h + 32 * (g & 1);
  const uint8_t* qh = blk + 128 + 32 * h;
  const int8_t* sc = (const int8_t*)(blk + 192 + 8 * h + 2 * g);
  VI la = VF_LOAD(ql), lb = VF_LOAD(ql + 16);
  if (g >= 2) la = VI8_SHR(la, 4), lb = VI8_SHR(lb, 4);
  else la = VI_AND(la, VI8_SPLAT(15)), lb = VI_AND(lb, VI8_SPLAT(15));
  const VI three = VI8_SPLAT(3), off = VI8_SPLAT(32);
  const VI ha = VI_AND(VI8_SHR(VF_LOAD(qh), 2 * g), three);
  const VI hb = VI_AND(VI8_SHR(VF_LOAD(qh + 16), 2 * g), three);
  /* the 2 high bits into bits 4..5 of each byte: a 32-bit shift, since no byte (<= 3) carries into the next */
  widen32(VI8_SUB(VI_OR(la, VI_SHL(ha, 4)), off), VI8_SUB(VI_OR(lb, VI_SHL(hb, 4)), off), v);
  const float d = half_at(blk + 208);
  const VF s0 = VF_SPLAT(d * (float)sc[0]), s1 = VF_SPLAT(d * (float)sc[1]);
  for (int i = 0; i < 4; i++) v[i] = VF_MUL(v[i], s0), v[4 + i] = VF_MUL(v[4 + i], s1);
  return 1.0f;
}

// Σ over 8 vectors of x·q, two chains.
static inline VF dot32(const float* x, const VF q[8]) {
  VF e = VF_MUL(VF_LOAD(x), q[0]), o = VF_MUL(VF_LOAD(x + 4), q[1]);
  for (int i = 2; i < 8; i += 2) {
    FMA(e, VF_LOAD(x + 4 * i), q[i]);
    FMA(o, VF_LOAD(x + 4 * i + 4), q[i + 1]);
  }
  return VF_ADD(e, o);
}

// y[T, nout] = x[T, nin] · W[nout, nin]ᵀ (+ b) for quantized W (nin a multiple of the block, rows of ROW(nin)
// bytes): the blocking of MATMUL above, tiles of 4 tokens x 2 rows sharing each widened run of 32 weights.
#define MATMUL_Q(NAME, ROW, LD)                                                                                   \
  EXPORT void NAME(float* y, const float* x, const uint8_t* w, const float* b, int T, int nin, int nout) {      \
    const int nk = nin / 32;                                                                                    \
    const uintptr_t row = ROW(nin);                                                                             \
    for (int t0 = 0; t0 < T; t0 += TB) {                                                                        \
      const int t1 = t0 + TB < T ? t0 + TB : T;                                                                 \
      for (int o = 0; o < nout; o += 2) {                                                                       \
        const int two = o + 1 < nout;                                                                           \
        const uint8_t* w0 = w + (uintptr_t)o * row;                                                             \
        const uint8_t* w1 = two ? w0 + row : w0;                                                                \
        const float b0 = b ? b[o] : 0.0f, b1 = b && two ? b[o + 1] : 0.0f;                                      \
        int t = t0;                                                                                             \
        for (; t + 4 <= t1; t += 4) {                                                                           \
          VF acc[4][2];                                                                                     \
          for (int j = 0; j < 4; j++) acc[j][0] = acc[j][1] = VF_SPLAT(0);                              \
          for (int k = 0; k < nk; k++) {                                                                        \
            VF p[8], q[8];                                                                                  \
            const VF d0 = VF_SPLAT(LD(w0, k, p)), d1 = VF_SPLAT(LD(w1, k, q));              \
            for (int j = 0; j < 4; j++) {                                                                       \
              const float* xj = x + (uintptr_t)(t + j) * nin + k * 32;                                          \
              FMA(acc[j][0], dot32(xj, p), d0);                                                                 \
              FMA(acc[j][1], dot32(xj, q), d1);                                                                 \
            }                                                                                                   \
          }                                                                                                     \
          for (int j = 0; j < 4; j++) {                                                                         \
            y[(uintptr_t)(t + j) * nout + o] = hsum(acc[j][0]) + b0;                                            \
            if (two) y[(uintptr_t)(t + j) * nout + o + 1] = hsum(acc[j][1]) + b1;                               \
          }                                                                                                     \
        }                                                                                                       \
        for (; t < t1; t++) { /* single tokens (decode, block tails) */                                        \
          const float* x0 = x + (uintptr_t)t * nin;                                                             \
          VF a0 = VF_SPLAT(0), a1 = a0;                                                             \
          for (int k = 0; k < nk; k++) {                                                                        \
            VF p[8], q[8];                                                                                  \
            const VF d0 = VF_SPLAT(LD(w0, k, p)), d1 = VF_SPLAT(LD(w1, k, q));              \
            FMA(a0, dot32(x0 + k * 32, p), d0);                                                                 \
            FMA(a1, dot32(x0 + k * 32, q), d1);                                                                 \
          }                                                                                                     \
          y[(uintptr_t)t * nout + o] = hsum(a0) + b0;                                                           \
          if (two) y[(uintptr_t)t * nout + o + 1] = hsum(a1) + b1;                                              \
        }                                                                                                       \
      }                                                                                                         \
    }                                                                                                           \
  }

#define ROW_Q8_0(n) ((uintptr_t)(n) / 32 * 34)
#define ROW_Q4_0(n) ((uintptr_t)(n) / 32 * 18)
#define ROW_Q4_K(n) ((uintptr_t)(n) / 256 * 144)
#define ROW_Q6_K(n) ((uintptr_t)(n) / 256 * 210)

MATMUL_Q(matmul_q8_0, ROW_Q8_0, ld_q8_0)
MATMUL_Q(matmul_q4_0, ROW_Q4_0, ld_q4_0)
MATMUL_Q(matmul_q4_k, ROW_Q4_K, ld_q4_k)
MATMUL_Q(matmul_q6_k, ROW_Q6_K, ld_q6_k)

// Embedding rows of a quantized table: y[t, :] = decoded table[ids[t], :].
#define EMBED_Q(NAME, ROW, LD)                                                                                    \
  EXPORT void NAME(float* y, const int32_t* ids, const uint8_t* table, int T, int n) {                          \
    for (int t = 0; t < T; t++) {                                                                               \
      const uint8_t* r = table + (uintptr_t)ids[t] * ROW(n);                                                    \
      for (int k = 0; k < n / 32; k++) {                                                                        \
        VF v[8];                                                                                            \
        const VF d = VF_SPLAT(LD(r, k, v));                                                         \
        for (int i = 0; i < 8; i++) VF_STORE(y + (uintptr_t)t * n + k * 32 + 4 * i, VF_MUL(v[i], d)); \
      }                                                                                                         \
    }                                                                                                           \
  }

EMBED_Q(embed_q8_0, ROW_Q8_0, ld_q8_0)
EMBED_Q(embed_q4_0, ROW_Q4_0, ld_q4_0)
EMBED_Q(embed_q4_k, ROW_Q4_K, ld_q4_k)
EMBED_Q(embed_q6_k, ROW_Q6_K, ld_q6_k)

// -------------------------------------------------------------------------------------------------------------
// embedding lookup: y[t, :] = table[ids[t], :] widened to f32

#define EMBED(NAME, WT, LD8, W1)                                                                                  \
  EXPORT void NAME(float* y, const int32_t* ids, const WT* table, int T, int n) {                               \
    const int n8 = n & ~7;                                                                                      \
    for (int t = 0; t < T; t++) {                                                                               \
      const WT* row = table + (uintptr_t)ids[t] * n;                                                            \
      float* out = y + (uintptr_t)t * n;                                                                        \
      for (int i = 0; i < n8; i += 8) {                                                                         \
        VF lo, hi;                                                                                          \
        LD8(row + i, &lo, &hi);                                                                                 \
        VF_STORE(out + i, lo);                                                                           \
        VF_STORE(out + i + 4, hi);                                                                       \
      }                                                                                                         \
      for (int i = n8; i < n; i++) out[i] = W1(row + i);                                                        \
    }                                                                                                           \
  }

EMBED(embed_f32, float, ld8_f32, w1_f32)
EMBED(embed_bf16, uint16_t, ld8_bf16, w1_bf16)
EMBED(embed_f16, uint16_t, ld8_f16, w1_f16)

// -------------------------------------------------------------------------------------------------------------
// RMSNorm per row: y = x · 1/sqrt(mean(x²) + eps) · w

EXPORT void rmsnorm(float* y, const float* x, const float* w, int T, int n, float eps) {
  const int n4 = n & ~3;
  for (int t = 0; t < T; t++) {
    const float* xr = x + (uintptr_t)t * n;
    float* yr = y + (uintptr_t)t * n;
    VF acc = VF_SPLAT(0);
    for (int i = 0; i < n4; i += 4) {
      VF v = VF_LOAD(xr + i);
      FMA(acc, v, v);
    }
    float ss = hsum(acc);
    for (int i = n4; i < n; i++) ss += xr[i] * xr[i];
    const float r = 1.0f / __builtin_sqrtf(ss / (float)n + eps);
    const VF rv = VF_SPLAT(r);
    for (int i = 0; i < n4; i += 4) {
      VF_STORE(yr + i, VF_MUL(VF_MUL(VF_LOAD(xr + i), rv), VF_LOAD(w + i)));
    }
    for (int i = n4; i < n; i++) yr[i] = xr[i] * r * w[i];
  }
}

// -------------------------------------------------------------------------------------------------------------
// RoPE in place on x [T, H, D], rotate-half layout; cos/sin [T, D/2] (angles from the TS side, float64).

EXPORT void rope(float* x, const float* cos, const float* sin, int T, int H, int D) {
  const int half = D / 2, h4 = half & ~3;
  for (int t = 0; t < T; t++) {
    const float* c = cos + (uintptr_t)t * half;
    const float* s = sin + (uintptr_t)t * half;
    for (int h = 0; h < H; h++) {
      float* p = x + ((uintptr_t)t * H + h) * D;
      for (int i = 0; i < h4; i += 4) {
        VF a = VF_LOAD(p + i), b = VF_LOAD(p + half + i);
        VF cv = VF_LOAD(c + i), sv = VF_LOAD(s + i);
        VF_STORE(p + i, VF_SUB(VF_MUL(a, cv), VF_MUL(b, sv)));
        VF_STORE(p + half + i, VF_ADD(VF_MUL(b, cv), VF_MUL(a, sv)));
      }
      for (int i = h4; i < half; i++) {
        const float a = p[i], b = p[half + i];
        p[i] = a * c[i] - b * s[i];
        p[half + i] = b * c[i] + a * s[i];
      }
    }
  }
}

// -------------------------------------------------------------------------------------------------------------
// SwiGLU: y = silu(g) · u, silu(g) = g / (1 + e^−g).
// e^x without libm: x = n·ln2 + r, |r| <= ln2/2 (Cody-Waite split of ln2), e^r by its degree-7 Taylor polynomial
// (truncation error < 3e-9 relative, below f32 rounding), 2^n built in the exponent bits. x is clamped to
// [-87.3, 88] so that 2^n stays a normal f32; silu needs nothing outside that range.

static inline VF exp4(VF x) {
  x = VF_MIN(VF_MAX(x, VF_SPLAT(-87.3f)), VF_SPLAT(88.0f));
  const VF n = VF_ROUND(VF_MUL(x, VF_SPLAT(1.44269504088896341f)));
  VF r = VF_SUB(x, VF_MUL(n, VF_SPLAT(0.693359375f)));
  r = VF_SUB(r, VF_MUL(n, VF_SPLAT(-2.12194440e-4f)));
  VF p = VF_SPLAT(1.0f / 5040);
  p = VF_ADD(VF_MUL(p, r), VF_SPLAT(1.0f / 720));
  p = VF_ADD(VF_MUL(p, r), VF_SPLAT(1.0f / 120));
  p = VF_ADD(VF_MUL(p, r), VF_SPLAT(1.0f / 24));
  p = VF_ADD(VF_MUL(p, r), VF_SPLAT(1.0f / 6));
  p = VF_ADD(VF_MUL(p, r), VF_SPLAT(0.5f));
  p = VF_ADD(VF_MUL(p, r), VF_SPLAT(1.0f));
  p = VF_ADD(VF_MUL(p, r), VF_SPLAT(1.0f));
  const VF scale = VI_SHL(VI_ADD(VI_FROM_F32(n), VI_SPLAT(127)), 23);
  return VF_MUL(p, scale);
}

static inline VF swiglu4(VF g, VF u) {
  const VF e = exp4(VF_SUB(VF_ZERO, g));
  return VF_MUL(VF_DIV(g, VF_ADD(VF_SPLAT(1.0f), e)), u);
}

EXPORT void swiglu(float* y, const float* g, const float* u, int n) {
  const int n4 = n & ~3;
  for (int i = 0; i < n4; i += 4) VF_STORE(y + i, swiglu4(VF_LOAD(g + i), VF_LOAD(u + i)));
  for (int i = n4; i < n; i++) y[i] = VF_LANE(swiglu4(VF_SPLAT(g[i]), VF_SPLAT(u[i])), 0);
}
