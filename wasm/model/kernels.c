// Model kernels for the Llama-family runner (src/model/kernels-wasm.ts): matmul y = x·Wᵀ for row-major W in f32,
// f16 or bf16 (widened to f32 in registers) or llama.cpp's Q8_0 / Q4_0 / Q4_K / Q6_K blocks (decoded in registers),
// RMSNorm, RoPE (rotate-half), SwiGLU, embedding lookup.
// f16/bf16 matrices are packed once after loading (pack_u16). One instance per model, in the calling thread; the TS side owns the memory layout (weights, then scratch for the
// activations of one call) and passes byte addresses as u32. No libc: freestanding, SIMD128, f32 accumulation.
// The reference twin, with float64 accumulation, is src/model/kernels-reference.ts.
#include <stdint.h>
#include <wasm_simd128.h>

#define EXPORT __attribute__((visibility("default")))

// -------------------------------------------------------------------------------------------------------------
// widening loads: 8 consecutive weights -> two f32x4 (lo = elements 0..3, hi = 4..7)

static inline void ld8_f32(const float* p, v128_t* lo, v128_t* hi) {
  *lo = wasm_v128_load(p);
  *hi = wasm_v128_load(p + 4);
}

// Packed 16-bit weights: pack_u16 (below) stores each full group of 8 elements of a row as [0,4,1,5,2,6,3,7], so
// that u32 lane i of a 16-byte load holds element i in its low half and element i+4 in its high half. One load then
// gives elements 0..3 (low halves) and 4..7 (high halves) in order, without the two widening extends.

// bf16 is the top half of an f32: low halves shift up by 16, high halves are masked.
static inline void ld8_bf16(const uint16_t* p, v128_t* lo, v128_t* hi) {
  v128_t h = wasm_v128_load(p);
  *lo = wasm_i32x4_shl(h, 16);
  *hi = wasm_v128_and(h, wasm_i32x4_splat((int)0xffff0000));
}

// f16 bits (one per u32 lane) -> f32: move exponent+mantissa into place and rescale by 2^112, which is exact for
// normals and subnormals; exponent 31 (Inf/NaN) gets the f32 all-ones exponent; the sign is copied.
static inline v128_t f16x4_to_f32(v128_t h) {
  v128_t sign = wasm_i32x4_shl(wasm_v128_and(h, wasm_i32x4_splat(0x8000)), 16);
  v128_t em = wasm_v128_and(h, wasm_i32x4_splat(0x7fff));
  v128_t f = wasm_f32x4_mul(wasm_i32x4_shl(em, 13), wasm_f32x4_splat(0x1p112f));
  v128_t special = wasm_i32x4_gt(em, wasm_i32x4_splat(0x7bff));
  f = wasm_v128_or(f, wasm_v128_and(special, wasm_i32x4_splat(0x7f800000)));
  return wasm_v128_or(f, sign);
}

static inline void ld8_f16(const uint16_t* p, v128_t* lo, v128_t* hi) {
  v128_t h = wasm_v128_load(p);
  *lo = f16x4_to_f32(wasm_v128_and(h, wasm_i32x4_splat(0xffff)));
  *hi = f16x4_to_f32(wasm_u32x4_shr(h, 16));
}

// In place on a row-major [rows, cols] matrix of 16-bit elements: every full group of 8 of each row to the packed
// order above; the cols % 8 tail of each row stays as is (the kernels read it one element at a time).
EXPORT void pack_u16(uint16_t* w, int rows, int cols) {
  const int c8 = cols & ~7;
  for (int r = 0; r < rows; r++) {
    uint16_t* row = w + (uintptr_t)r * cols;
    for (int k = 0; k < c8; k += 8) {
      v128_t v = wasm_v128_load(row + k);
      wasm_v128_store(row + k, wasm_i8x16_shuffle(v, v, 0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15));
    }
  }
}

static inline float w1_f32(const float* p) { return *p; }
static inline float w1_bf16(const uint16_t* p) {
  union { uint32_t u; float f; } v = { (uint32_t)*p << 16 };
  return v.f;
}
static inline float w1_f16(const uint16_t* p) {
  return wasm_f32x4_extract_lane(f16x4_to_f32(wasm_i32x4_splat(*p)), 0);
}

static inline float hsum(v128_t v) {
  return wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1) + wasm_f32x4_extract_lane(v, 2) +
         wasm_f32x4_extract_lane(v, 3);
}

#define FMA(acc, a, b) acc = wasm_f32x4_add(acc, wasm_f32x4_mul(a, b))

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
          v128_t a00 = wasm_f32x4_splat(0), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00,   \
                 a31 = a00;                                                                                     \
          for (int k = 0; k < k8; k += 8) {                                                                     \
            v128_t p0, p1, q0, q1;                                                                              \
            LD8(w0 + k, &p0, &p1);                                                                              \
            LD8(w1 + k, &q0, &q1);                                                                              \
            v128_t u = wasm_v128_load(x0 + k), v = wasm_v128_load(x0 + k + 4);                                  \
            FMA(a00, u, p0); FMA(a00, v, p1); FMA(a01, u, q0); FMA(a01, v, q1);                                 \
            u = wasm_v128_load(x1 + k), v = wasm_v128_load(x1 + k + 4);                                         \
            FMA(a10, u, p0); FMA(a10, v, p1); FMA(a11, u, q0); FMA(a11, v, q1);                                 \
            u = wasm_v128_load(x2 + k), v = wasm_v128_load(x2 + k + 4);                                         \
            FMA(a20, u, p0); FMA(a20, v, p1); FMA(a21, u, q0); FMA(a21, v, q1);                                 \
            u = wasm_v128_load(x3 + k), v = wasm_v128_load(x3 + k + 4);                                         \
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
          v128_t a0 = wasm_f32x4_splat(0), a1 = a0, c0 = a0, c1 = a0;                                           \
          for (int k = 0; k < k8; k += 8) {                                                                     \
            v128_t p0, p1, q0, q1;                                                                              \
            LD8(w0 + k, &p0, &p1);                                                                              \
            LD8(w1 + k, &q0, &q1);                                                                              \
            v128_t u = wasm_v128_load(x0 + k), v = wasm_v128_load(x0 + k + 4);                                  \
            FMA(a0, u, p0); FMA(a1, v, p1); FMA(c0, u, q0); FMA(c1, v, q1);                                     \
          }                                                                                                     \
          float s0 = hsum(wasm_f32x4_add(a0, a1)), s1 = hsum(wasm_f32x4_add(c0, c1));                           \
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
// llama.cpp's quantized types (ggml-common.h), read in place (unaligned v128 loads), 32 weights at a time:
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
static inline void widen32(v128_t a, v128_t b, v128_t v[8]) {
  const v128_t h[4] = {wasm_i16x8_extend_low_i8x16(a), wasm_i16x8_extend_high_i8x16(a), wasm_i16x8_extend_low_i8x16(b),
                       wasm_i16x8_extend_high_i8x16(b)};
  for (int i = 0; i < 4; i++) {
    v[2 * i] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(h[i]));
    v[2 * i + 1] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(h[i]));
  }
}

static inline float ld_q8_0(const uint8_t* row, int k, v128_t v[8]) {
  const uint8_t* blk = row + (uintptr_t)k * 34;
  widen32(wasm_v128_load(blk + 2), wasm_v128_load(blk + 18), v);
  return half_at(blk);
}

static inline float ld_q4_0(const uint8_t* row, int k, v128_t v[8]) {
  const uint8_t* blk = row + (uintptr_t)k * 18;
  const v128_t qs = wasm_v128_load(blk + 2), eight = wasm_i8x16_splat(8);
  const v128_t lo = wasm_i8x16_sub(wasm_v128_and(qs, wasm_i8x16_splat(15)), eight);
  widen32(lo, wasm_i8x16_sub(wasm_u8x16_shr(qs, 4), eight), v);
  return half_at(blk);
}

// Q4_K sub-block j: nibbles of qs[32·(j/2) ..] (low for even j, high for odd), (scale, min) 6-bit from the 12 bytes.
static inline float ld_q4_k(const uint8_t* row, int k, v128_t v[8]) {
  const uint8_t* blk = row + (uintptr_t)(k >> 3) * 144;
  const uint8_t* s = blk + 4;
  const int j = k & 7;
  const int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
  const int m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | (s[j] >> 6) << 4;
  const v128_t d1 = wasm_f32x4_splat(half_at(blk) * (float)sc), m1 = wasm_f32x4_splat(half_at(blk + 2) * (float)m);
  const uint8_t* qs = blk + 16 + 32 * (j >> 1);
  v128_t a = wasm_v128_load(qs), b = wasm_v128_load(qs + 16);
  if (j & 1) a = wasm_u8x16_shr(a, 4), b = wasm_u8x16_shr(b, 4);
  else a = wasm_v128_and(a, wasm_i8x16_splat(15)), b = wasm_v128_and(b, wasm_i8x16_splat(15));
  widen32(a, b, v);
  for (int i = 0; i < 8; i++) v[i] = wasm_f32x4_sub(wasm_f32x4_mul(v[i], d1), m1);
  return 1.0f;
}

// Q6_K sub-block j: half h = j/4 of the 256, group g = j%4: low nibbles of ql[64h + 32(g&1) ..] (high nibbles for
// g >= 2), bits 2g..2g+1 of qh[128 + 32h ..]; scales[8h + 2g] for its first 16 weights, [8h + 2g + 1] for the rest.
static inline float ld_q6_k(const uint8_t* row, int k, v128_t v[8]) {
  const uint8_t* blk = row + (uintptr_t)(k >> 3) * 210;
  const int j = k & 7, h = j >> 2, g = j & 3;
  const uint8_t* ql = blk + 64 * h + 32 * (g & 1);
  const uint8_t* qh = blk + 128 + 32 * h;
  const int8_t* sc = (const int8_t*)(blk + 192 + 8 * h + 2 * g);
  v128_t la = wasm_v128_load(ql), lb = wasm_v128_load(ql + 16);
  if (g >= 2) la = wasm_u8x16_shr(la, 4), lb = wasm_u8x16_shr(lb, 4);
  else la = wasm_v128_and(la, wasm_i8x16_splat(15)), lb = wasm_v128_and(lb, wasm_i8x16_splat(15));
  const v128_t three = wasm_i8x16_splat(3), off = wasm_i8x16_splat(32);
  const v128_t ha = wasm_v128_and(wasm_u8x16_shr(wasm_v128_load(qh), 2 * g), three);
  const v128_t hb = wasm_v128_and(wasm_u8x16_shr(wasm_v128_load(qh + 16), 2 * g), three);
  widen32(wasm_i8x16_sub(wasm_v128_or(la, wasm_i8x16_shl(ha, 4)), off), wasm_i8x16_sub(wasm_v128_or(lb, wasm_i8x16_shl(hb, 4)), off), v);
  const float d = half_at(blk + 208);
  const v128_t s0 = wasm_f32x4_splat(d * (float)sc[0]), s1 = wasm_f32x4_splat(d * (float)sc[1]);
  for (int i = 0; i < 4; i++) v[i] = wasm_f32x4_mul(v[i], s0), v[4 + i] = wasm_f32x4_mul(v[4 + i], s1);
  return 1.0f;
}

// Σ over 8 vectors of x·q, two chains.
static inline v128_t dot32(const float* x, const v128_t q[8]) {
  v128_t e = wasm_f32x4_mul(wasm_v128_load(x), q[0]), o = wasm_f32x4_mul(wasm_v128_load(x + 4), q[1]);
  for (int i = 2; i < 8; i += 2) {
    FMA(e, wasm_v128_load(x + 4 * i), q[i]);
    FMA(o, wasm_v128_load(x + 4 * i + 4), q[i + 1]);
  }
  return wasm_f32x4_add(e, o);
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
          v128_t acc[4][2];                                                                                     \
          for (int j = 0; j < 4; j++) acc[j][0] = acc[j][1] = wasm_f32x4_splat(0);                              \
          for (int k = 0; k < nk; k++) {                                                                        \
            v128_t p[8], q[8];                                                                                  \
            const v128_t d0 = wasm_f32x4_splat(LD(w0, k, p)), d1 = wasm_f32x4_splat(LD(w1, k, q));              \
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
          v128_t a0 = wasm_f32x4_splat(0), a1 = a0;                                                             \
          for (int k = 0; k < nk; k++) {                                                                        \
            v128_t p[8], q[8];                                                                                  \
            const v128_t d0 = wasm_f32x4_splat(LD(w0, k, p)), d1 = wasm_f32x4_splat(LD(w1, k, q));              \
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
        v128_t v[8];                                                                                            \
        const v128_t d = wasm_f32x4_splat(LD(r, k, v));                                                         \
        for (int i = 0; i < 8; i++) wasm_v128_store(y + (uintptr_t)t * n + k * 32 + 4 * i, wasm_f32x4_mul(v[i], d)); \
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
        v128_t lo, hi;                                                                                          \
        LD8(row + i, &lo, &hi);                                                                                 \
        wasm_v128_store(out + i, lo);                                                                           \
        wasm_v128_store(out + i + 4, hi);                                                                       \
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
    v128_t acc = wasm_f32x4_splat(0);
    for (int i = 0; i < n4; i += 4) {
      v128_t v = wasm_v128_load(xr + i);
      FMA(acc, v, v);
    }
    float ss = hsum(acc);
    for (int i = n4; i < n; i++) ss += xr[i] * xr[i];
    const float r = 1.0f / __builtin_sqrtf(ss / (float)n + eps);
    const v128_t rv = wasm_f32x4_splat(r);
    for (int i = 0; i < n4; i += 4) {
      wasm_v128_store(yr + i, wasm_f32x4_mul(wasm_f32x4_mul(wasm_v128_load(xr + i), rv), wasm_v128_load(w + i)));
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
        v128_t a = wasm_v128_load(p + i), b = wasm_v128_load(p + half + i);
        v128_t cv = wasm_v128_load(c + i), sv = wasm_v128_load(s + i);
        wasm_v128_store(p + i, wasm_f32x4_sub(wasm_f32x4_mul(a, cv), wasm_f32x4_mul(b, sv)));
        wasm_v128_store(p + half + i, wasm_f32x4_add(wasm_f32x4_mul(b, cv), wasm_f32x4_mul(a, sv)));
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

static inline v128_t exp4(v128_t x) {
  x = wasm_f32x4_min(wasm_f32x4_max(x, wasm_f32x4_splat(-87.3f)), wasm_f32x4_splat(88.0f));
  const v128_t n = wasm_f32x4_nearest(wasm_f32x4_mul(x, wasm_f32x4_splat(1.44269504088896341f)));
  v128_t r = wasm_f32x4_sub(x, wasm_f32x4_mul(n, wasm_f32x4_splat(0.693359375f)));
  r = wasm_f32x4_sub(r, wasm_f32x4_mul(n, wasm_f32x4_splat(-2.12194440e-4f)));
  v128_t p = wasm_f32x4_splat(1.0f / 5040);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f / 720));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f / 120));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f / 24));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f / 6));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(0.5f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f));
  const v128_t scale = wasm_i32x4_shl(wasm_i32x4_add(wasm_i32x4_trunc_sat_f32x4(n), wasm_i32x4_splat(127)), 23);
  return wasm_f32x4_mul(p, scale);
}

static inline v128_t swiglu4(v128_t g, v128_t u) {
  const v128_t e = exp4(wasm_f32x4_neg(g));
  return wasm_f32x4_mul(wasm_f32x4_div(g, wasm_f32x4_add(wasm_f32x4_splat(1.0f), e)), u);
}

EXPORT void swiglu(float* y, const float* g, const float* u, int n) {
  const int n4 = n & ~3;
  for (int i = 0; i < n4; i += 4) wasm_v128_store(y + i, swiglu4(wasm_v128_load(g + i), wasm_v128_load(u + i)));
  for (int i = n4; i < n; i++) y[i] = wasm_f32x4_extract_lane(swiglu4(wasm_f32x4_splat(g[i]), wasm_f32x4_splat(u[i])), 0);
}
