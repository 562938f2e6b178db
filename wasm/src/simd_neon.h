/*
 * The SIMD mapping for aarch64 NEON (simd.h picks it where __ARM_NEON is set). One type for VF and VI
 * (float32x4_t): the integer macros reinterpret, which costs nothing. VF_MAD is one fused vfmaq.
 */
#ifndef DUO_SIMD_NEON_H
#define DUO_SIMD_NEON_H
#include <arm_neon.h>

typedef float32x4_t VF;
typedef float32x4_t VI;

#define N_U(x)              vreinterpretq_u32_f32(x)
#define N_S(x)              vreinterpretq_s32_f32(x)
#define N_H(x)              vreinterpretq_u16_f32(x)
#define N_F(x)              vreinterpretq_f32_u32(x)

#define VF_LOAD(p)          vld1q_f32((const float *)(const void *)(p))
#define VF_STORE(p, x)      vst1q_f32((float *)(void *)(p), x)
#define VF_LOAD_SPLAT(p)    vld1q_dup_f32((const float *)(const void *)(p))
#define VF_SPLAT(x)         vdupq_n_f32(x)
#define VF_ZERO             vdupq_n_f32(0.0f)
#define VF_ADD(a, b)        vaddq_f32(a, b)
#define VF_SUB(a, b)        vsubq_f32(a, b)
#define VF_MUL(a, b)        vmulq_f32(a, b)
#define VF_MAD(acc, a, b)   vfmaq_f32(acc, a, b)
#define VF_MAX(a, b)        vbslq_f32(vcltq_f32(a, b), b, a) /* pmax: b where a < b, else a */
#define VF_EQ(a, b)         N_F(vceqq_f32(a, b))
#define VF_SELECT(m, a, b)  vbslq_f32(N_U(m), a, b)
#define VF_LANE(x, i)       vgetq_lane_f32(x, i)

#define VI_SPLAT(x)         N_F(vdupq_n_u32((uint32_t)(x)))
#define VI_ADD(a, b)        N_F(vaddq_u32(N_U(a), N_U(b)))
#define VI_SUB(a, b)        N_F(vsubq_u32(N_U(a), N_U(b)))
#define VI_SHL(a, n)        N_F(vshlq_n_u32(N_U(a), n))
#define VI_SHR(a, n)        N_F(vshrq_n_u32(N_U(a), n))
#define VI_SRA(a, n)        vreinterpretq_f32_s32(vshrq_n_s32(N_S(a), n))
#define VI_AND(a, b)        N_F(vandq_u32(N_U(a), N_U(b)))
#define VI_OR(a, b)         N_F(vorrq_u32(N_U(a), N_U(b)))
#define VI_EQ(a, b)         N_F(vceqq_u32(N_U(a), N_U(b)))
#define VI_GT_U(a, b)       N_F(vcgtq_u32(N_U(a), N_U(b)))
#define VI_LANE(x, i)       vgetq_lane_s32(N_S(x), i)
#define VI_GT(a, b)         N_F(vcgtq_s32(N_S(a), N_S(b)))
#define VI_FROM_F32(x)      vreinterpretq_f32_s32(vcvtq_s32_f32(x))
#define VF_MIN(a, b)        vminq_f32(a, b)
#define VF_DIV(a, b)        vdivq_f32(a, b)
#define VF_ROUND(x)         vrndnq_f32(x)

#define VF_ZIP_LO32(a, b)   vzip1q_f32(a, b)
#define VF_ZIP_HI32(a, b)   vzip2q_f32(a, b)
#define VF_CAT_LO64(a, b)   vcombine_f32(vget_low_f32(a), vget_low_f32(b))
#define VF_CAT_HI64(a, b)   vcombine_f32(vget_high_f32(a), vget_high_f32(b))
#define VF_SWAP64(a)        vextq_f32(a, a, 2)
#define VF_SWAP32(a)        vrev64q_f32(a)
#define VI_ZIP_LO16(a, b)   vreinterpretq_f32_u16(vzip1q_u16(N_H(a), N_H(b)))
#define VI_ZIP_HI16(a, b)   vreinterpretq_f32_u16(vzip2q_u16(N_H(a), N_H(b)))
#define VI_EVEN_ODD16(x)    vreinterpretq_f32_u16(vcombine_u16(vget_low_u16(vuzp1q_u16(N_H(x), N_H(x))), \
                                                               vget_low_u16(vuzp2q_u16(N_H(x), N_H(x)))))
#define VI_WIDEN_LO_U16(x)  N_F(vmovl_u16(vget_low_u16(N_H(x))))
#define VI_WIDEN_HI_U16(x)  N_F(vmovl_high_u16(N_H(x)))
#define VI_LOAD_U16X4(p)    N_F(vmovl_u16(vld1_u16((const uint16_t *)(const void *)(p))))
#define VI_LOAD_I16X4(p)    vreinterpretq_f32_s32(vmovl_s16(vld1_s16((const int16_t *)(const void *)(p))))
#define VI_NARROW_U16(a, b) vreinterpretq_f32_u16(vcombine_u16(vqmovun_s32(N_S(a)), vqmovun_s32(N_S(b))))
#define VI_STORE64(p, x)    vst1_u32((uint32_t *)(void *)(p), vget_low_u32(N_U(x)))

/* Byte lanes and widening (simd.h gives their plain-C meaning). */
#define N_B(x)              vreinterpretq_u8_f32(x)
#define N_FB(x)             vreinterpretq_f32_u8(x)
#define VI8_SHUFFLE(a, b, ...) N_FB(__builtin_shufflevector(N_B(a), N_B(b), __VA_ARGS__))
#define VI8_LOOKUP(t, x)    N_FB(vqtbl1q_u8(N_B(t), N_B(x)))
#define VI8_SHR(a, n)       N_FB(vshlq_u8(N_B(a), vdupq_n_s8((int8_t)-(n)))) /* n need not be a constant */
#define VI8_SUB(a, b)       N_FB(vsubq_u8(N_B(a), N_B(b)))
#define VI8_SPLAT(x)        N_FB(vdupq_n_u8((uint8_t)(x)))
#define VI_LOAD64(p)        N_FB(vcombine_u8(vld1_u8((const uint8_t *)(const void *)(p)), vdup_n_u8(0)))
#define VI16_LOAD8(p)       vreinterpretq_f32_s16(vmovl_s8(vld1_s8((const int8_t *)(const void *)(p))))
#define VI16_LO8(a)         vreinterpretq_f32_s16(vmovl_s8(vget_low_s8(vreinterpretq_s8_f32(a))))
#define VI16_HI8(a)         vreinterpretq_f32_s16(vmovl_high_s8(vreinterpretq_s8_f32(a)))
#define VI32_LO16(a)        vreinterpretq_f32_s32(vmovl_s16(vget_low_s16(vreinterpretq_s16_f32(a))))
#define VI32_HI16(a)        vreinterpretq_f32_s32(vmovl_high_s16(vreinterpretq_s16_f32(a)))
#define VF_FROM_I32(a)      vcvtq_f32_s32(N_S(a))

#endif
