// Row moves between device tensors and the attention kernels' packed layouts, so that q / k / v and the attention
// output of a model on the device never cross to the host (duo.h: device tensors).
#include "kernels.h"

namespace {

// For r < n: dst row (dst_rows ? dst_rows[r] : r) = src row (src_rows ? src_rows[r] : r), or `fill` with src NULL.
//   src [*][len] f32, dst [*][len] f32; one grid-stride loop over the n * len elements.
__global__ void move_rows_kernel(const float* __restrict__ src, const int32_t* __restrict__ src_rows,
                                 float* __restrict__ dst, const int32_t* __restrict__ dst_rows, int64_t n, int64_t len,
                                 float fill) {
  const int64_t total = n * len;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / len, e = i - r * len;
    const int64_t to = dst_rows ? dst_rows[r] : r;
    dst[to * len + e] = src ? src[(src_rows ? src_rows[r] : r) * len + e] : fill;
  }
}

}  // namespace

cudaError_t launch_move_rows(const float* src, const int32_t* src_rows, float* dst, const int32_t* dst_rows, int64_t n,
                             int64_t len, float fill, cudaStream_t s) {
  if (n <= 0 || len <= 0) return cudaSuccess;
  const int threads = 256;
  const int64_t blocks = (n * len + threads - 1) / threads;
  const unsigned grid = static_cast<unsigned>(blocks < 1024 ? blocks : 1024);
  DUO_LAUNCH(move_rows_kernel, grid, threads, 0, s, src, src_rows, dst, dst_rows, n, len, fill);
  return cudaGetLastError();
}
