// KV element types: f32, f16, bf16 (loads of 8 consecutive elements as f32, RNE stores, f16x2 / bf16x2 packing), and
// the quantized records of int8 / int4 caches (src/quant.ts, bit for bit: quantize on append, dequantize 8 values of a
// head row at a time straight into registers inside the attention kernel).
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

// Quantized KV (duo.h DUO_INT8 / DUO_INT4): a buffer holds one record of head_bytes(D) bytes per row and head, record
// (r, j) at byte (r * row_heads + j) * head_bytes(D) (token-major only). Records start 4-byte aligned for D % 4 == 0,
// so every load below is a 32-bit load.
//   int8  [D x int8 codes][scale: f32]      x = f32(q * scale)
//   int4  [D/2 bytes][s: f16][z: f16]       x = f16(f16(q * s) + z), byte i = q[2i] << 4 | q[2i + 1]
// The tag types stand in for KV in the kernels' templates; `quantized` selects the record paths there.
struct Int8Record {};
struct Int4Record {};

template <typename KV> struct IsQuantized { static constexpr bool value = false; };
template <> struct IsQuantized<Int8Record> { static constexpr bool value = true; };
template <> struct IsQuantized<Int4Record> { static constexpr bool value = true; };

// f16 bits <-> f32 through the __half conversions (exact widening, RNE narrowing: the cvt instructions).
__device__ inline float f16_bits_to_f32(uint16_t bits) {
  return __half2float(*reinterpret_cast<const __half*>(&bits));
}
__device__ inline uint16_t f32_to_f16_bits(float x) {
  const __half h = __float2half_rn(x);
  return *reinterpret_cast<const uint16_t*>(&h);
}
// x rounded to f16 and back: one f16 arithmetic result. Applied to an f32 sum of two f16 values it gives the f16 sum
// exactly (f32 has 24 >= 2 * 11 + 2 bits, so rounding twice equals rounding once), as the codec's __hadd does.
__device__ inline float f16_round(float x) { return __half2float(__float2half_rn(x)); }

template <> struct Dtype<Int8Record> {
  static constexpr int id = DUO_INT8;
  __host__ __device__ static constexpr int64_t head_bytes(int D) { return D + 4; }
  // Elements 8 * li .. 8 * li + 7 of the record at rec (D values), dequantized.
  template <int D>
  __device__ static void load8(const uint8_t* rec, int li, float* x) {
    const float scale = __ldg(reinterpret_cast<const float*>(rec + D));
    const uint32_t* w = reinterpret_cast<const uint32_t*>(rec + 8 * li);
    const uint32_t lo = __ldg(w), hi = __ldg(w + 1);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      x[e] = static_cast<float>(static_cast<int8_t>(lo >> (8 * e))) * scale;
      x[4 + e] = static_cast<float>(static_cast<int8_t>(hi >> (8 * e))) * scale;
    }
  }
};

template <> struct Dtype<Int4Record> {
  static constexpr int id = DUO_INT4;
  __host__ __device__ static constexpr int64_t head_bytes(int D) { return D / 2 + 4; }
  template <int D>
  __device__ static void load8(const uint8_t* rec, int li, float* x) {
    const uint32_t sz = __ldg(reinterpret_cast<const uint32_t*>(rec + D / 2));  // s in the low half, z in the high
    const float s = f16_bits_to_f32(static_cast<uint16_t>(sz)), z = f16_bits_to_f32(static_cast<uint16_t>(sz >> 16));
    const uint32_t w = __ldg(reinterpret_cast<const uint32_t*>(rec + 4 * li));  // bytes 4 li .. 4 li + 3
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      // element 2i is the high nibble of byte i, element 2i + 1 the low one
      const uint32_t q = (w >> (8 * (e / 2) + (e % 2 ? 0 : 4))) & 15u;
      x[e] = f16_round(f16_round(static_cast<float>(q) * s) + z);  // q * s is exact in f32 (4 x 11 bits)
    }
  }
};
