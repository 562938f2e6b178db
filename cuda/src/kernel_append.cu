// KV append: scatter rows of f32 values into a KV buffer, rounding to its dtype (round to nearest even), or quantizing
// each head's values into its int8 / int4 record (dtype.cuh, src/quant.ts: the same bytes on every backend).
#include <cmath>

#include "dtype.cuh"
#include "kernels.h"

namespace {

// src [n][row_elems] f32, rows [n] destination rows (distinct), dst [capacity][row_elems] of KV.
template <typename KV>
__global__ void append_kernel(const float* __restrict__ src, const int32_t* __restrict__ rows, KV* __restrict__ dst,
                              int64_t n, int64_t row_elems) {
  const int64_t total = n * row_elems;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / row_elems;
    const int64_t e = i - r * row_elems;
    dst[rows[r] * row_elems + e] = Dtype<KV>::from_f32(src[i]);
  }
}

template <typename KV>
cudaError_t launch(const float* src, const int32_t* rows, void* dst, int64_t n, int64_t row_elems, cudaStream_t s) {
  const int threads = 256;
  const int64_t blocks = (n * row_elems + threads - 1) / threads;
  const unsigned grid = static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
  DUO_LAUNCH(append_kernel<KV>, grid, threads, 0, s, src, rows, static_cast<KV*>(dst), n, row_elems);
  return cudaGetLastError();
}

// The smaller of a and b with -0 below +0 (JavaScript's Math.min on finite values, which src/quant.ts takes the
// int4 min with: the f16 min stored in the record keeps that zero's sign).
__device__ inline float min_signed_zero(float a, float b) { return b < a || (b == a && copysignf(1.f, b) < 0.f) ? b : a; }

// One warp per record: record k of the upload is head k % row_heads of upload row k / row_heads.
//   src [records][D] f32, rows [records / row_heads] destination rows, dst records of Dtype<Q>::head_bytes(D) bytes.
// Lanes stride over the record's D values; max and min are exact in any order, so the warp's reduction gives the
// sequential loop's value, and each code is computed from its own value alone (f32 division, RNE / half-away rounding
// as the codec says). The loop bounds are the same for a whole warp: every lane reaches every shuffle.
template <typename Q>
__global__ void quantize_kernel(const float* __restrict__ src, const int32_t* __restrict__ rows, uint8_t* __restrict__ dst,
                                int64_t records, int row_heads, int D) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t k = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; k < records; k += warps) {
    const float* x = src + k * D;
    const int64_t i = k / row_heads, j = k - i * row_heads;
    uint8_t* rec = dst + (static_cast<int64_t>(rows[i]) * row_heads + j) * Dtype<Q>::head_bytes(D);
    if constexpr (Dtype<Q>::id == DUO_INT8) {
      float amax = 0.f;
      for (int d = lane; d < D; d += 32) amax = fmaxf(amax, fabsf(x[d]));
      for (int off = 16; off > 0; off /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
      const float scale = amax / 127.0f;
      for (int d = lane; d < D; d += 32) {
        const float q = scale == 0.f ? 0.f : fminf(127.f, fmaxf(-127.f, rintf(x[d] / scale)));  // rintf: ties to even
        rec[d] = static_cast<uint8_t>(static_cast<int8_t>(q));
      }
      if (lane == 0) memcpy(rec + D, &scale, 4);  // little-endian f32 (the record is not 4-byte aligned for every D)
    } else {
      float mn = INFINITY, mx = -INFINITY;
      for (int d = lane; d < D; d += 32) {
        mn = min_signed_zero(mn, x[d]);
        mx = fmaxf(mx, x[d]);
      }
      for (int off = 16; off > 0; off /= 2) {
        mn = min_signed_zero(mn, __shfl_xor_sync(0xffffffffu, mn, off));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      }
      const float scale = (mx - mn) / 15.0f + 1e-8f;  // the f32 scale codes with; the record keeps its f16 rounding
      for (int b = lane; b < D / 2; b += 32) {
        const float hi = fminf(15.f, fmaxf(0.f, roundf((x[2 * b] - mn) / scale)));  // roundf: half away from zero
        const float lo = fminf(15.f, fmaxf(0.f, roundf((x[2 * b + 1] - mn) / scale)));
        rec[b] = static_cast<uint8_t>(static_cast<int>(hi) << 4 | static_cast<int>(lo));
      }
      if (lane == 0) {
        const uint16_t sz[2] = {f32_to_f16_bits(scale), f32_to_f16_bits(mn)};
        memcpy(rec + D / 2, sz, 4);
      }
    }
  }
}

template <typename Q>
cudaError_t launch_quantized(const float* src, const int32_t* rows, void* dst, int64_t n, int row_heads, int D,
                             cudaStream_t s) {
  const int threads = 128;  // 4 records per block
  const int64_t records = n * row_heads, blocks = (records + threads / 32 - 1) / (threads / 32);
  const unsigned grid = static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
  DUO_LAUNCH(quantize_kernel<Q>, grid, threads, 0, s, src, rows, static_cast<uint8_t*>(dst), records, row_heads, D);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_append(const float* src, const int32_t* rows, void* dst, int dtype, int64_t n, int64_t row_elems,
                          int head_dim, cudaStream_t s) {
  if (n == 0 || row_elems == 0) return cudaSuccess;
  switch (dtype) {
    case DUO_INT8: return launch_quantized<Int8Record>(src, rows, dst, n, static_cast<int>(row_elems / head_dim), head_dim, s);
    case DUO_INT4: return launch_quantized<Int4Record>(src, rows, dst, n, static_cast<int>(row_elems / head_dim), head_dim, s);
    case DUO_F32: return launch<float>(src, rows, dst, n, row_elems, s);
    case DUO_F16: return launch<__half>(src, rows, dst, n, row_elems, s);
    default: return launch<__nv_bfloat16>(src, rows, dst, n, row_elems, s);
  }
}
