// f16 / bf16 storage types and the conversions cuda/src uses, bit-exact to the hardware's cvt instructions:
// f32 -> f16 / bf16 round to nearest even, overflow to Inf, and every NaN becomes the canonical NaN 0x7FFF (PTX ISA,
// cvt: "NaN inputs are converted to canonical NaN"); f16 / bf16 -> f32 is exact.
#pragma once
#include "cuda_runtime.h"

struct __half { uint16_t bits; };
struct __half2 { __half x, y; };
struct __nv_bfloat16 { uint16_t bits; };
struct __nv_bfloat162 { __nv_bfloat16 x, y; };

namespace emu {
inline uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
inline float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
constexpr uint16_t CANONICAL_NAN = 0x7fff;

inline uint16_t f32_to_bf16(float x) {
  const uint32_t b = f32_bits(x);
  if ((b & 0x7fffffffu) > 0x7f800000u) return CANONICAL_NAN;
  return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}
inline float bf16_to_f32(uint16_t h) { return bits_f32(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_f16(float x) {
  const uint32_t b = f32_bits(x);
  const uint32_t sign = (b >> 16) & 0x8000u, exp = (b >> 23) & 0xffu;
  uint32_t mant = b & 0x7fffffu;
  if (exp == 0xff) return mant ? CANONICAL_NAN : static_cast<uint16_t>(sign | 0x7c00u);
  const int e = static_cast<int>(exp) - 127 + 15;
  if (e >= 0x1f) return static_cast<uint16_t>(sign | 0x7c00u);
  if (e <= 0) {  // subnormal or zero
    if (e < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    const int shift = 14 - e;
    const uint32_t half = 1u << (shift - 1), rest = mant & ((1u << shift) - 1);
    uint32_t h = mant >> shift;
    if (rest > half || (rest == half && (h & 1))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) ++h;  // a carry into the exponent is still correct
  return static_cast<uint16_t>(sign | h);
}
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) return (h & 0x8000u ? -1.f : 1.f) * std::ldexp(static_cast<float>(mant), -24);
  if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (mant << 13));
  return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}
}  // namespace emu

inline __half __float2half_rn(float x) { return __half{emu::f32_to_f16(x)}; }
inline __nv_bfloat16 __float2bfloat16_rn(float x) { return __nv_bfloat16{emu::f32_to_bf16(x)}; }
inline float __half2float(__half h) { return emu::f16_to_f32(h.bits); }
inline float __bfloat162float(__nv_bfloat16 h) { return emu::bf16_to_f32(h.bits); }
inline float2 __half22float2(__half2 h) { return make_float2(__half2float(h.x), __half2float(h.y)); }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return make_float2(__bfloat162float(h.x), __bfloat162float(h.y)); }
inline __half2 __floats2half2_rn(float lo, float hi) { return __half2{__float2half_rn(lo), __float2half_rn(hi)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
  return __nv_bfloat162{__float2bfloat16_rn(lo), __float2bfloat16_rn(hi)};
}
