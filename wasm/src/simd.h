/*
 * The SIMD macro layer, in the manner of ggml's simd-mappings.h: the SIMD kernels (attend_simd.c, convert_simd.c,
 * bench_simd.c) are written with these macros only; each has a scalar twin with the same signature in *_scalar.c.
 * VF = 4 f32 lanes; VI = the same 128 bits as i32/i16 lanes. Each instruction set maps the macros in its own header,
 * chosen here by what the compiler targets (the native build compiles the same sources once per instruction set,
 * native/build.sh):
 *   simd_wasm.h  wasm SIMD128 (duo.wasm, duo-relaxed.wasm)
 *   simd_x86.h   x86-64 SSE4.1, and the same macros with VEX/EVEX encodings and FMA under -mavx2 -mfma / -mavx512vl
 *   simd_neon.h  aarch64 NEON
 * Every mapping keeps 128-bit vectors: the kernels' register blocking (quads of query vectors, 8 columns) is written
 * for 4 lanes, and what the wider instruction sets add here is the fused multiply-add and more registers.
 *
 * Semantics every mapping keeps (the kernels rely on them):
 *  - VF and VI are one type or free casts of each other: integer macros take and give float vectors and back.
 *  - VF_MAX(a, b) is wasm's pmax, b > a ? b : a (a NaN in b is ignored, a NaN in a kept).
 *  - VF_SELECT(m, a, b) is a bitwise select with all-ones / all-zeros lanes in m.
 *  - VF_MAD(acc, a, b) = acc + a*b, fused or not (the benchmark ceiling uses the same macro).
 *  - VI_NARROW_U16 saturates signed i32 to u16; VI_GT_U compares unsigned, VI_GT signed; VI_FROM_F32 truncates
 *    (values in i32 range only); VF_ROUND rounds to nearest even; VF_MIN's NaN handling is the mapping's own.
 */
#ifndef DUO_SIMD_H
#define DUO_SIMD_H

#if defined(__wasm_simd128__)
#include "simd_wasm.h"
#elif defined(__SSE4_1__)
#include "simd_x86.h"
#elif defined(__ARM_NEON)
#include "simd_neon.h"
#else
#error "simd.h: no SIMD mapping for this target (build the *_scalar.c twins instead)"
#endif

/* Byte-lane and widening ops of the quantized kernels (quant_simd.c: int8/int4 KV; wasm/model/kernels.c: Q8_0 / Q4_0 /
 * Q4_K / Q6_K weights), mapped per instruction set like the rest. Plain-C meaning (a, b, t, x: 16 bytes; c0..c15
 * compile-time constants in 0..31):
 *   VI8_SHUFFLE(a, b, c0..c15)  r[i] = c_i < 16 ? a[c_i] : b[c_i - 16]             (i8x16.shuffle; x86 and NEON: clang's
 *                               __builtin_shufflevector, lowered to pshufb / tbl2 or better)
 *   VI8_LOOKUP(t, x)            r[i] = t[x[i]], for x[i] < 16 only                 (pshufb, NEON tbl1; the relaxed build's
 *                               i8x16.relaxed_swizzle is one pshufb, i8x16.swizzle adds a fix-up for x[i] >= 16)
 *   VI8_SHR(a, n)               r[i] = (uint8_t)a[i] >> n                          (n < 8, need not be a constant)
 *   VI8_SUB(a, b)               r[i] = (uint8_t)(a[i] - b[i])
 *   VI8_SPLAT(x)                r[i] = (uint8_t)x
 *   VI_LOAD64(p)                r[0..7] = p[0..7], r[8..15] = 0
 *   VI16_LOAD8(p)               16-bit lanes r[i] = (int16_t)(int8_t)p[i], i < 8   (sign-extending load)
 *   VI16_LO8(a), VI16_HI8(a)    16-bit lanes r[i] = (int16_t)(int8_t)a[i] (bytes 0..7), a[8 + i] (bytes 8..15)
 *   VI32_LO16(a), VI32_HI16(a)  32-bit lanes r[i] = (int32_t)a16[i] (lanes 0..3), a16[4 + i] (lanes 4..7)
 *   VF_FROM_I32(a)              f32 lanes r[i] = (float)a32[i]                     (cvtdq2ps, exact for |a| < 2^24) */

/* Horizontal: the 4 lane sums of 4 vectors as one vector [sum a, sum b, sum c, sum d]. */
static inline VF vf_sum4(VF a, VF b, VF c, VF d) {
  VF ab = VF_ADD(VF_ZIP_LO32(a, b), VF_ZIP_HI32(a, b)); /* a0+a2 b0+b2 a1+a3 b1+b3 */
  VF cd = VF_ADD(VF_ZIP_LO32(c, d), VF_ZIP_HI32(c, d));
  return VF_ADD(VF_CAT_LO64(ab, cd), VF_CAT_HI64(ab, cd));
}
static inline float vf_hsum(VF a) {
  VF s = VF_ADD(a, VF_SWAP64(a));
  return VF_LANE(s, 0) + VF_LANE(s, 1);
}
static inline float vf_hmax(VF a) {
  VF s = VF_MAX(a, VF_SWAP64(a));
  s = VF_MAX(s, VF_SWAP32(s));
  return VF_LANE(s, 0);
}

/* 16-bit storage, 4 elements at a time: one widening load (vpmovzxwd / vpmovsxwd) puts each element in its own
 * 32-bit lane, and no constant register is needed (V8 has 15 usable XMM registers; every constant costs one).
 *  bf16: zero-extend, shift left 16: exactly the f32.
 *  f16:  sign-extend, shift left 13: exponent and mantissa sit where an f32 has them, minus a bias of 112 that the
 *        multiply by 2^112 adds back; the mask drops the extra copies of the sign. Exact for every finite f16
 *        (subnormals become f32 subnormals first); Inf/NaN come out finite (>= 65536): vf_f16_exact repairs them. */
#define VF_BF16(p)       VI_SHL(VI_LOAD_U16X4(p), 16)
#define VI_F16_BITS(p)   VI_AND(VI_SHL(VI_LOAD_I16X4(p), 13), VI_SPLAT((int32_t)0x8fffffff))
#define VF_F16_FAST(p)   VF_MUL(VI_F16_BITS(p), VF_SPLAT(0x1p112f))
static inline VF vf_f16_exact(const void *p) {
  VI b = VI_F16_BITS(p);
  VI special = VI_EQ(VI_AND(b, VI_SPLAT(0x0f800000)), VI_SPLAT(0x0f800000)); /* f16 exponent 31: Inf or NaN */
  return VI_OR(VF_MUL(b, VF_SPLAT(0x1p112f)), VI_AND(special, VI_SPLAT(0x7f800000)));
}

#endif
