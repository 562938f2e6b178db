// KV element types: f32, f16, bf16. Loads of 8 consecutive elements as f32, RNE stores, and f16x2 / bf16x2 packing.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "duo.h"

template <typename KV> struct Dtype;

template <> struct Dtype<float> {
  static constexpr int id = DUO_F32;
  __device__ static float from_f32(float x) { return x; }
  // 8 elements at p (32-byte aligned) -> x[0..7]
  __device__ static void load8(const float* p, float* x) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(p));
    const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
    x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w;
    x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
  }
};

template <> struct Dtype<__half> {
  static constexpr int id = DUO_F16;
  static constexpr uint16_t EXP_BITS = 0x7c00;  // all set: Inf or NaN
  __device__ static __half from_f32(float x) { return __float2half_rn(x); }
  __device__ static float to_f32(__half x) { return __half2float(x); }
  // 8 elements at p (16-byte aligned) -> x[0..7]
  __device__ static void load8(const __half* p, float* x) {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
    const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __half22float2(h[i]);
      x[2 * i] = f.x;
      x[2 * i + 1] = f.y;
    }
  }
  // (lo, hi) -> one f16x2 register: lo in the low 16 bits (the element with the smaller index)
  __device__ static uint32_t pack2(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
};

template <> struct Dtype<__nv_bfloat16> {
  static constexpr int id = DUO_BF16;
  static constexpr uint16_t EXP_BITS = 0x7f80;  // all set: Inf or NaN
  __device__ static __nv_bfloat16 from_f32(float x) { return __float2bfloat16_rn(x); }
  __device__ static float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ static void load8(const __nv_bfloat16* p, float* x) {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(h[i]);
      x[2 * i] = f.x;
      x[2 * i + 1] = f.y;
    }
  }
  __device__ static uint32_t pack2(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
};
