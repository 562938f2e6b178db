// KV append: scatter rows of f32 values into a KV buffer, rounding to its dtype (round to nearest even).
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

}  // namespace

cudaError_t launch_append(const float* src, const int32_t* rows, void* dst, int dtype, int64_t n, int64_t row_elems,
                          cudaStream_t s) {
  if (n == 0 || row_elems == 0) return cudaSuccess;
  switch (dtype) {
    case DUO_F32: return launch<float>(src, rows, dst, n, row_elems, s);
    case DUO_F16: return launch<__half>(src, rows, dst, n, row_elems, s);
    default: return launch<__nv_bfloat16>(src, rows, dst, n, row_elems, s);
  }
}
