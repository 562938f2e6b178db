/*
 * f32 -> f16 / bf16 with round-to-nearest-even, bit-identical to src/dtype.ts (twin: convert_scalar.c).
 * bf16: add 0x7fff + (lowest kept bit) and drop 16 bits; NaN keeps its top bits and is made quiet (| 0x40).
 * f16: three cases selected per lane, on the magnitude bits a = |x|:
 *   a >= 65536 (or Inf/NaN)  -> Inf (0x7c00), or quiet NaN 0x7e00
 *   a <  2^-14 (subnormal)   -> the f32 addition |x| + 0.5 rounds to the 2^-24 grid (RNE by the FPU); its low bits
 *                               are the f16 subnormal (or the smallest normal when it rounds up)
 *   otherwise (normal)       -> rebias the exponent by -112, add 0xfff + (lowest kept bit), drop 13 bits (a carry into
 *                               the exponent is the correct rounding, up to Inf)
 */
#include "duo.h"
#include "kernels.h"
#include "simd.h"

ALWAYS_INLINE VI bf16_bits(VI b) {
  VI r = VI_SHR(VI_ADD(VI_ADD(b, VI_SPLAT(0x7fff)), VI_AND(VI_SHR(b, 16), VI_SPLAT(1))), 16);
  VI nan = VI_GT_U(VI_AND(b, VI_SPLAT(0x7fffffff)), VI_SPLAT(0x7f800000));
  return VF_SELECT(nan, VI_OR(VI_SHR(b, 16), VI_SPLAT(0x40)), r);
}

ALWAYS_INLINE VI f16_bits(VI b) {
  VI sign = VI_AND(b, VI_SPLAT((int32_t)0x80000000)), a = VI_AND(b, VI_SPLAT(0x7fffffff));
  VI big = VF_SELECT(VI_GT_U(a, VI_SPLAT(0x7f800000)), VI_SPLAT(0x7e00), VI_SPLAT(0x7c00));
  VI sub = VI_SUB(VF_ADD(a, VF_SPLAT(0.5f)), VI_SPLAT(0x3f000000));
  VI odd = VI_AND(VI_SHR(a, 13), VI_SPLAT(1));
  VI nrm = VI_SHR(VI_ADD(VI_ADD(a, VI_SPLAT((int32_t)0xc8000fff)), odd), 13);
  VI h = VF_SELECT(VI_GT_U(a, VI_SPLAT(0x477fffff)), big, VF_SELECT(VI_GT_U(VI_SPLAT(0x38800000), a), sub, nrm));
  return VI_OR(h, VI_SHR(sign, 16));
}

/* Lanes whose value is Inf or NaN (all exponent bits set, `e` = the exponent mask), as -1 per lane. */
ALWAYS_INLINE VI nonfinite(VI x, int32_t e) { return VI_EQ(VI_AND(x, VI_SPLAT(e)), VI_SPLAT(e)); }

ALWAYS_INLINE int lane_total(VI c) {
  return -(VI_LANE(c, 0) + VI_LANE(c, 1) + VI_LANE(c, 2) +
           VI_LANE(c, 3));
}

int k_convert(uint8_t *dst, const float *src, int dt, int n) {
  const int32_t e = dt == DUO_BF16 ? 0x7f80 : 0x7c00;
  VI count = VI_SPLAT(0);
  int i = 0;
  for (; i + 8 <= n; i += 8, dst += 16) {
    VI lo = VF_LOAD(src + i), hi = VF_LOAD(src + i + 4);
    if (dt == DUO_BF16) { lo = bf16_bits(lo); hi = bf16_bits(hi); }
    else { lo = f16_bits(lo); hi = f16_bits(hi); }
    count = VI_ADD(count, VI_ADD(nonfinite(lo, e), nonfinite(hi, e)));
    VF_STORE(dst, VI_NARROW_U16(lo, hi));
  }
  if (i < n) { /* n is a multiple of 4: one group of 4 left */
    VI x = VF_LOAD(src + i);
    x = dt == DUO_BF16 ? bf16_bits(x) : f16_bits(x);
    count = VI_ADD(count, nonfinite(x, e));
    VI_STORE64(dst, VI_NARROW_U16(x, x));
  }
  return lane_total(count);
}

int k_nonfinite(const float *src, int n) {
  VI count = VI_SPLAT(0);
  for (int i = 0; i < n; i += 4) count = VI_ADD(count, nonfinite(VF_LOAD(src + i), 0x7f800000));
  return lane_total(count);
}
