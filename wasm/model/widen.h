// Widening loads of weights as the model kernels read them (kernels.c's matmul and embed, backward.c's transposed
// matmul): 8 consecutive weights -> two f32x4 (lo = elements 0..3, hi = 4..7), and one element of a row's unpacked
// tail. Shared so that both read the packed layout of pack_u16 (kernels.c) the same way.
#ifndef DUO_MODEL_WIDEN_H
#define DUO_MODEL_WIDEN_H
#include <stdint.h>
#include "../src/simd.h"

static inline void ld8_f32(const float* p, VF* lo, VF* hi) {
  *lo = VF_LOAD(p);
  *hi = VF_LOAD(p + 4);
}

// Packed 16-bit weights: pack_u16 (kernels.c) stores each full group of 8 elements of a row as [0,4,1,5,2,6,3,7], so
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
#ifdef VF_LD8_F16_PACKED
  VF_LD8_F16_PACKED(p, lo, hi); /* a hardware conversion where the SIMD set has one (x86 F16C) */
#else
  VF h = VF_LOAD(p);
  *lo = f16x4_to_f32(VI_AND(h, VI_SPLAT(0xffff)));
  *hi = f16x4_to_f32(VI_SHR(h, 16));
#endif
}

static inline float w1_f32(const float* p) { return *p; }
static inline float w1_bf16(const uint16_t* p) {
  union { uint32_t u; float f; } v = { (uint32_t)*p << 16 };
  return v.f;
}
static inline float w1_f16(const uint16_t* p) {
  return VF_LANE(f16x4_to_f32(VI_SPLAT(*p)), 0);
}

#endif
