// Model kernels for the Llama-family runner (src/model/kernels-wasm.ts): matmul y = x·Wᵀ for row-major W in f32,
// f16 or bf16 (widened to f32 in registers), RMSNorm, RoPE (rotate-half), SwiGLU, embedding lookup.
// f16/bf16 matrices are packed once after loading (pack_u16). One instance per model, in the calling thread; the TS side owns the memory layout (weights, then scratch for the
// activations of one call) and passes byte addresses as u32. No libc: freestanding, f32 accumulation, written with
// the SIMD macros of wasm/src/simd.h: native/build.sh compiles this file per instruction set too (libduo.so's model
// kernels, native/src/model.c).
// The reference twin, with float64 accumulation, is src/model/kernels-reference.ts.
#include <stdint.h>
#include "../src/simd.h"

#define EXPORT __attribute__((visibility("default")))

// -------------------------------------------------------------------------------------------------------------
// widening loads: 8 consecutive weights -> two f32x4 (lo = elements 0..3, hi = 4..7)

static inline void ld8_f32(const float* p, VF* lo, VF* hi) {
  *lo = VF_LOAD(p);
  *hi = VF_LOAD(p + 4);
}

// Packed 16-bit weights: pack_u16 (below) stores each full group of 8 elements of a row as [0,4,1,5,2,6,3,7], so
// that u32 lane i of a 16-byte load holds element i in its low half and element i+4 in its high half. One load then
// gives elements 0..3 (low halves) and 4..7 (high halves) in order, without the two widening extends.

// bf16 is the top half of an f32: low halves shift up by 16, high halves are masked.
static inline void ld8_bf16(const uint16_t* p, VF* lo, VF* hi) {
  VF h = VF_LOAD(p);
  *lo = VI_SHL(h, 16);
  *hi = VI_AND(h, VI_SPLAT((int)0xffff0000));
}

// f16 bits (one per u32 lane) -> f32: move exponent+mantissa into place and rescale by 2^112, which is exact for
// normals and subnormals; exponent 31 (Inf/NaN) gets the f32 all-ones exponent; the sign is copied.
static inline VF f16x4_to_f32(VF h) {
  VF sign = VI_SHL(VI_AND(h, VI_SPLAT(0x8000)), 16);
  VF em = VI_AND(h, VI_SPLAT(0x7fff));
  VF f = VF_MUL(VI_SHL(em, 13), VF_SPLAT(0x1p112f));
  VF special = VI_GT(em, VI_SPLAT(0x7bff));
  f = VI_OR(f, VI_AND(special, VI_SPLAT(0x7f800000)));
  return VI_OR(f, sign);
}

static inline void ld8_f16(const uint16_t* p, VF* lo, VF* hi) {
  VF h = VF_LOAD(p);
  *lo = f16x4_to_f32(VI_AND(h, VI_SPLAT(0xffff)));
  *hi = f16x4_to_f32(VI_SHR(h, 16));
}

// In place on a row-major [rows, cols] matrix of 16-bit elements: every full group of 8 of each row to the packed
// order above; the cols % 8 tail of each row stays as is (the kernels read it one element at a time).
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

static inline float w1_f32(const float* p) { return *p; }
static inline float w1_bf16(const uint16_t* p) {
  union { uint32_t u; float f; } v = { (uint32_t)*p << 16 };
  return v.f;
}
static inline float w1_f16(const uint16_t* p) {
  return VF_LANE(f16x4_to_f32(VI_SPLAT(*p)), 0);
}

static inline float hsum(VF v) {
  return VF_LANE(v, 0) + VF_LANE(v, 1) + VF_LANE(v, 2) +
         VF_LANE(v, 3);
}

#define FMA(acc, a, b) acc = VF_MAD(acc, a, b)

// -------------------------------------------------------------------------------------------------------------
// matmul: y[T, nout] = x[T, nin] · W[nout, nin]ᵀ (+ b[nout]); b = 0 means no bias.
// Tokens are processed in blocks of TB (their x rows stay in cache while all of W streams past once per block);
// inside a block, tiles of 4 tokens x 2 weight rows share each widened weight vector. k runs 8 at a time, the
// tail (nin % 8) in scalar code.

#define TB 32

#define MATMUL(NAME, WT, LD8, W1)                                                                                 \
  EXPORT void NAME(float* y, const float* x, const WT* w, const float* b, int T, int nin, int nout) {           \
    const int k8 = nin & ~7;                                                                                    \
    for (int t0 = 0; t0 < T; t0 += TB) {                                                                        \
      const int t1 = t0 + TB < T ? t0 + TB : T;                                                                 \
      for (int o = 0; o < nout; o += 2) {                                                                       \
        const int two = o + 1 < nout;                                                                           \
        const WT* w0 = w + (uintptr_t)o * nin;                                                                  \
        const WT* w1 = two ? w0 + nin : w0;                                                                     \
        const float b0 = b ? b[o] : 0.0f, b1 = b && two ? b[o + 1] : 0.0f;                                      \
        int t = t0;                                                                                             \
        for (; t + 4 <= t1; t += 4) {                                                                           \
          const float* x0 = x + (uintptr_t)t * nin;                                                             \
          const float *x1 = x0 + nin, *x2 = x1 + nin, *x3 = x2 + nin;                                           \
          VF a00 = VF_SPLAT(0), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00,   \
                 a31 = a00;                                                                                     \
          for (int k = 0; k < k8; k += 8) {                                                                     \
            VF p0, p1, q0, q1;                                                                              \
            LD8(w0 + k, &p0, &p1);                                                                              \
            LD8(w1 + k, &q0, &q1);                                                                              \
            VF u = VF_LOAD(x0 + k), v = VF_LOAD(x0 + k + 4);                                  \
            FMA(a00, u, p0); FMA(a00, v, p1); FMA(a01, u, q0); FMA(a01, v, q1);                                 \
            u = VF_LOAD(x1 + k), v = VF_LOAD(x1 + k + 4);                                         \
            FMA(a10, u, p0); FMA(a10, v, p1); FMA(a11, u, q0); FMA(a11, v, q1);                                 \
            u = VF_LOAD(x2 + k), v = VF_LOAD(x2 + k + 4);                                         \
            FMA(a20, u, p0); FMA(a20, v, p1); FMA(a21, u, q0); FMA(a21, v, q1);                                 \
            u = VF_LOAD(x3 + k), v = VF_LOAD(x3 + k + 4);                                         \
            FMA(a30, u, p0); FMA(a30, v, p1); FMA(a31, u, q0); FMA(a31, v, q1);                                 \
          }                                                                                                     \
          float s[4][2] = {{hsum(a00), hsum(a01)}, {hsum(a10), hsum(a11)}, {hsum(a20), hsum(a21)},              \
                           {hsum(a30), hsum(a31)}};                                                             \
          const float* xs[4] = {x0, x1, x2, x3};                                                                \
          for (int j = 0; j < 4; j++) {                                                                         \
            for (int k = k8; k < nin; k++) {                                                                    \
              s[j][0] += xs[j][k] * W1(w0 + k);                                                                 \
              s[j][1] += xs[j][k] * W1(w1 + k);                                                                 \
            }                                                                                                   \
            y[(uintptr_t)(t + j) * nout + o] = s[j][0] + b0;                                                    \
            if (two) y[(uintptr_t)(t + j) * nout + o + 1] = s[j][1] + b1;                                       \
          }                                                                                                     \
        }                                                                                                       \
        for (; t < t1; t++) { /* single tokens (decode, block tails): two accumulators per row */              \
          const float* x0 = x + (uintptr_t)t * nin;                                                             \
          VF a0 = VF_SPLAT(0), a1 = a0, c0 = a0, c1 = a0;                                           \
          for (int k = 0; k < k8; k += 8) {                                                                     \
            VF p0, p1, q0, q1;                                                                              \
            LD8(w0 + k, &p0, &p1);                                                                              \
            LD8(w1 + k, &q0, &q1);                                                                              \
            VF u = VF_LOAD(x0 + k), v = VF_LOAD(x0 + k + 4);                                  \
            FMA(a0, u, p0); FMA(a1, v, p1); FMA(c0, u, q0); FMA(c1, v, q1);                                     \
          }                                                                                                     \
          float s0 = hsum(VF_ADD(a0, a1)), s1 = hsum(VF_ADD(c0, c1));                           \
          for (int k = k8; k < nin; k++) {                                                                      \
            s0 += x0[k] * W1(w0 + k);                                                                           \
            s1 += x0[k] * W1(w1 + k);                                                                           \
          }                                                                                                     \
          y[(uintptr_t)t * nout + o] = s0 + b0;                                                                 \
          if (two) y[(uintptr_t)t * nout + o + 1] = s1 + b1;                                                    \
        }                                                                                                       \
      }                                                                                                         \
    }                                                                                                           \
  }

MATMUL(matmul_f32, float, ld8_f32, w1_f32)
MATMUL(matmul_bf16, uint16_t, ld8_bf16, w1_bf16)
MATMUL(matmul_f16, uint16_t, ld8_f16, w1_f16)

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
