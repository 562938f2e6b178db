/*
 * exp2 and log without libm. Softmax weights use exp2 of scores that were pre-multiplied by log2(e), in f32:
 * 2^x = 2^n * 2^f with n = round(x), f in [-1/2, 1/2] and a degree-6 polynomial for 2^f (coefficients fitted for this
 * project by reweighted least squares on Chebyshev nodes: max relative error 9.7e-8 evaluated in f32). Inputs are
 * clamped to >= -127, where 2^n underflows to exactly 0 (so exp2(-Inf) = 0). The per-row finals (lse, merge weights)
 * use f64 exp/log (Taylor / atanh series, ~1e-16).
 */
#ifndef DUO_MATH_H
#define DUO_MATH_H
#include <stdint.h>

#define EXP2_C1 6.931471825e-01f
#define EXP2_C2 2.402264774e-01f
#define EXP2_C3 5.550332367e-02f
#define EXP2_C4 9.618437849e-03f
#define EXP2_C5 1.339887502e-03f
#define EXP2_C6 1.535335614e-04f
#define ROUND_MAGIC 12582912.0f /* 1.5 * 2^23: x + magic rounds x to an integer held in the low mantissa bits */
#define LN2 0.6931471805599453
#define LOG2E 1.4426950408889634

static inline float f32_from_bits(uint32_t b) { return __builtin_bit_cast(float, b); }
static inline uint32_t f32_bits(float x) { return __builtin_bit_cast(uint32_t, x); }

/* 2^x for x <= 0 (also fine up to x < 128). */
static inline float exp2_f32(float x) {
  x = x < -127.0f ? -127.0f : x;
  float t = x + ROUND_MAGIC;
  float f = x - (t - ROUND_MAGIC);
  float p = EXP2_C6;
  p = p * f + EXP2_C5; p = p * f + EXP2_C4; p = p * f + EXP2_C3; p = p * f + EXP2_C2; p = p * f + EXP2_C1;
  p = p * f + 1.0f;
  return p * f32_from_bits((f32_bits(t) + (127u - 0x4b400000u)) << 23);
}

#if defined(__wasm_simd128__) || defined(__SSE4_1__) || defined(__ARM_NEON) /* the targets simd.h maps */
#include "simd.h"
static inline VF vf_exp2(VF x) {
  x = VF_MAX(x, VF_SPLAT(-127.0f));
  VF t = VF_ADD(x, VF_SPLAT(ROUND_MAGIC));
  VF f = VF_SUB(x, VF_SUB(t, VF_SPLAT(ROUND_MAGIC)));
  VF p = VF_SPLAT(EXP2_C6); /* Horner steps with VF_MAD: one FMA each in the relaxed build */
  p = VF_MAD(VF_SPLAT(EXP2_C5), p, f);
  p = VF_MAD(VF_SPLAT(EXP2_C4), p, f);
  p = VF_MAD(VF_SPLAT(EXP2_C3), p, f);
  p = VF_MAD(VF_SPLAT(EXP2_C2), p, f);
  p = VF_MAD(VF_SPLAT(EXP2_C1), p, f);
  p = VF_MAD(VF_SPLAT(1.0f), p, f);
  return VF_MUL(p, VI_SHL(VI_ADD(t, VI_SPLAT((int32_t)(127u - 0x4b400000u))), 23));
}
#endif

/* e^x in f64; e^-Inf = 0, NaN stays NaN (no float -> int conversion ever sees a NaN: it would trap). */
static inline double exp_f64(double x) {
  if (x != x) return x;
  if (x < -745.0) return 0.0;
  if (x > 709.0) return __builtin_inf();
  double n = __builtin_rint(x * LOG2E);
  double r = (x - n * 0.6931471803691238) - n * 1.9082149292705877e-10; /* ln 2 split in two for an exact product */
  double s = 1.0, term = 1.0;
  for (int k = 1; k <= 14; k++) { term *= r / k; s += term; }
  int64_t e = (int64_t)n;
  double scale = 1.0;
  if (e < -1000) { scale = 0x1p-1000; e += 1000; }
  return s * scale * __builtin_bit_cast(double, (uint64_t)(e + 1023) << 52);
}

/* Natural log in f64 for normal x > 0; log(0) = -Inf, NaN and +Inf pass through. */
static inline double log_f64(double x) {
  if (x != x || x == __builtin_inf()) return x;
  if (x <= 0.0) return -__builtin_inf();
  uint64_t b = __builtin_bit_cast(uint64_t, x);
  int64_t e = (int64_t)(b >> 52) - 1023;
  double m = __builtin_bit_cast(double, (b & 0x000fffffffffffffull) | 0x3ff0000000000000ull); /* [1, 2) */
  if (m > 1.4142135623730951) { m *= 0.5; e++; }
  double u = (m - 1.0) / (m + 1.0), u2 = u * u, s = 0.0, pw = u;
  for (int k = 1; k <= 23; k += 2) { s += pw / k; pw *= u2; }
  return (double)e * LN2 + 2.0 * s;
}

#endif
