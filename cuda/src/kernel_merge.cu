// Split-KV merge: combine the partial (o, lse) of each key chunk into the final row (FlashInfer's merge_state, the
// twin of mergeState in src/backend/reference.ts):
//   lse = log(sum_s e^lse_s),  o = sum_s o_s * e^(lse_s - lse).
// Chunks that saw no key have lse = -inf and o = 0 and contribute nothing; a row with no key anywhere gets o = 0 and
// lse = -inf.
#include <cmath>

#include "kernels.h"

namespace {

// part_o [splits][rows][D], part_lse [splits][rows] -> out [rows][D], lse [rows]; one block per row, D threads.
__global__ void merge_kernel(const float* __restrict__ part_o, const float* __restrict__ part_lse,
                             float* __restrict__ out, float* __restrict__ lse, int64_t rows, int splits, int D) {
  const int64_t row = blockIdx.x;
  const int d = threadIdx.x;
  float mx = -INFINITY;
  for (int s = 0; s < splits; ++s) mx = fmaxf(mx, part_lse[s * rows + row]);
  if (mx == -INFINITY) {
    out[row * D + d] = 0.f;
    if (d == 0) lse[row] = -INFINITY;
    return;
  }
  float sum = 0.f, acc = 0.f;
  for (int s = 0; s < splits; ++s) {
    const float w = expf(part_lse[s * rows + row] - mx);  // exp(-inf) = 0 for empty chunks
    sum += w;
    acc += w * part_o[(s * rows + row) * D + d];
  }
  out[row * D + d] = acc / sum;
  if (d == 0) lse[row] = mx + logf(sum);
}

}  // namespace

cudaError_t launch_merge(const float* part_o, const float* part_lse, float* out, float* lse, int64_t rows, int splits,
                         int head_dim, cudaStream_t s) {
  if (rows == 0) return cudaSuccess;
  DUO_LAUNCH(merge_kernel, static_cast<unsigned>(rows), head_dim, 0, s, part_o, part_lse, out, lse, rows, splits,
             head_dim);
  return cudaGetLastError();
}
