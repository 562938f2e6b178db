// The model kernels (kernel_model.cu) as the host code of model.cu launches them: every pointer is device memory,
// every shape is checked by the caller. The model math of src/model/kernels-reference.ts, in f32 with f32 accumulation.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

// y [T, cols] f32 = row ids[t] of table [rows, cols] (enum duo_weight_dtype), widened / dequantized to f32.
// ids [T] are in [0, rows).
cudaError_t launch_model_embed(float* y, const int32_t* ids, const void* table, int dtype, int T, int cols,
                               int max_blocks, cudaStream_t s);
// y [T, rows] = x [T, cols] . W^T (+ bias [rows] when not null); W [rows, cols] of dtype (enum duo_weight_dtype).
// y must not overlap x.
cudaError_t launch_model_matmul(float* y, const float* x, const void* w, int dtype, const float* bias, int T, int cols,
                                int rows, cudaStream_t s);
// y [T, n] = x [T, n] * rsqrt(mean(x^2) + eps) * w [n], per row; y may be x.
cudaError_t launch_model_rmsnorm(float* y, const float* x, const float* w, int T, int n, float eps, cudaStream_t s);
// In place on x [T, heads, head_dim], rotate-half: with h = head_dim / 2, for i < h
// (x[i], x[i+h]) <- (x[i] cos - x[i+h] sin, x[i+h] cos + x[i] sin); cos, sin [T, h].
cudaError_t launch_model_rope(float* x, const float* cos, const float* sin, int T, int heads, int head_dim,
                              int max_blocks, cudaStream_t s);
// y [n] = silu(gate [n]) * up [n], silu(g) = g / (1 + e^-g); y may be gate or up.
cudaError_t launch_model_swiglu(float* y, const float* gate, const float* up, int64_t n, int max_blocks,
                                cudaStream_t s);
// y [n] += x [n]; y may be x.
cudaError_t launch_model_add(float* y, const float* x, int64_t n, int max_blocks, cudaStream_t s);
// *out = index of the largest of x [n] (n >= 1): the first on ties, NaN never wins, 0 when every element is NaN.
cudaError_t launch_model_argmax(const float* x, int32_t n, int32_t* out, cudaStream_t s);
