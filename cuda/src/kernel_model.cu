// The model kernels of a Llama-family decoder: embed, matmul, rmsnorm, RoPE, SwiGLU, residual add, argmax (the twins
// of src/model/kernels-reference.ts, which accumulates in f64; these accumulate in f32).
//
// These are plain, correct CUDA kernels, not tuned ones: matmul is one warp per output row reading the weight row
// once for up to MM_TOKENS tokens (a GEMV for decode, a re-read of the weights every MM_TOKENS tokens for prefill),
// with 16-byte loads where rows are aligned.
// On hardware the intended fast path for matmul is cuBLASLt (bf16 / f16 weights, f32 accumulation), which is not
// written yet; the emulation build (cuda/emu) cannot run cuBLASLt, and it runs these kernels unchanged.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

#include "dtype.cuh"
#include "duo.h"
#include "kernels.h"
#include "model_kernels.h"

namespace {

constexpr int THREADS = 256;
// llama.cpp's block types (ggml-common.h; decoded as src/model/tensor-types.ts and kquants.ts do, step by step in
// f32, so embed gives the reference's bits):
constexpr int Q8_BLOCK_BYTES = 34;   // q8_0, 32 elements: f16 d, 32 int8 q; element = q * d
constexpr int Q4_BLOCK_BYTES = 18;   // q4_0, 32 elements: f16 d, 16 bytes of nibbles (low: 0..15, high: 16..31); (q - 8) * d
constexpr int Q4K_BLOCK_BYTES = 144; // q4_k, 256: f16 d, f16 dmin, 12 bytes of 6-bit (scale, min), 128 bytes of nibbles
constexpr int Q6K_BLOCK_BYTES = 210; // q6_k, 256: 128 bytes low nibbles, 64 bytes 2-bit highs, 16 int8 scales, f16 d

__device__ float f16_at(const unsigned char* p) { return __half2float(*reinterpret_cast<const __half*>(p)); }

// Element i (row-major flat index) of a weight matrix of dtype DT, as f32.
template <int DT> struct Weight;
// load8: elements i .. i+7 (i a multiple of 8, so one 16-byte-aligned vector load in a 256-byte-aligned buffer).
template <> struct Weight<DUO_W_F32> {
  __device__ static float at(const void* w, int64_t i) { return static_cast<const float*>(w)[i]; }
  __device__ static void load8(const void* w, int64_t i, float* out) {
    Dtype<float>::load8(static_cast<const float*>(w) + i, out);
  }
};
template <> struct Weight<DUO_W_F16> {
  __device__ static float at(const void* w, int64_t i) { return __half2float(static_cast<const __half*>(w)[i]); }
  __device__ static void load8(const void* w, int64_t i, float* out) {
    Dtype<__half>::load8(static_cast<const __half*>(w) + i, out);
  }
};
template <> struct Weight<DUO_W_BF16> {
  __device__ static float at(const void* w, int64_t i) {
    return __bfloat162float(static_cast<const __nv_bfloat16*>(w)[i]);
  }
  __device__ static void load8(const void* w, int64_t i, float* out) {
    Dtype<__nv_bfloat16>::load8(static_cast<const __nv_bfloat16*>(w) + i, out);
  }
};
// Block sizes are even, so every f16 field is 2-byte aligned in a 256-byte-aligned buffer.
template <> struct Weight<DUO_W_Q8_0> {
  __device__ static float at(const void* w, int64_t i) {
    const unsigned char* block = static_cast<const unsigned char*>(w) + (i / 32) * Q8_BLOCK_BYTES;
    return static_cast<float>(reinterpret_cast<const signed char*>(block + 2)[i % 32]) * f16_at(block);
  }
};
template <> struct Weight<DUO_W_Q4_0> {
  __device__ static float at(const void* w, int64_t i) {
    const unsigned char* block = static_cast<const unsigned char*>(w) + (i / 32) * Q4_BLOCK_BYTES;
    const int j = static_cast<int>(i % 32), byte = block[2 + (j & 15)];
    return static_cast<float>((j < 16 ? byte & 15 : byte >> 4) - 8) * f16_at(block);
  }
};
template <> struct Weight<DUO_W_Q4_K> {
  // (d * scale_j) * q - dmin * min_j, each product and the difference rounded to f32 (no fused multiply-add)
  __device__ static float at(const void* w, int64_t i) {
    const unsigned char* b = static_cast<const unsigned char*>(w) + (i / 256) * Q4K_BLOCK_BYTES;
    const int within = static_cast<int>(i % 256), j = within / 32, l = within % 32;
    const unsigned char* s = b + 4;  // ggml's get_scale_min_k4
    const int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    const int mn = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    const float d1 = __fmul_rn(f16_at(b), static_cast<float>(sc)), m1 = __fmul_rn(f16_at(b + 2), static_cast<float>(mn));
    const int q = (b[16 + 32 * (j >> 1) + l] >> ((j & 1) * 4)) & 15;
    return __fsub_rn(__fmul_rn(d1, static_cast<float>(q)), m1);
  }
};
template <> struct Weight<DUO_W_Q6_K> {
  // (d * scale) * (q - 32): element 128 h + 32 g + l of the block takes nibble g / 2 of ql[64 h + l + 32 (g & 1)], bits
  // 2g of qh[32 h + l], scale 8 h + l / 16 + 2 g
  __device__ static float at(const void* w, int64_t i) {
    const unsigned char* b = static_cast<const unsigned char*>(w) + (i / 256) * Q6K_BLOCK_BYTES;
    const int within = static_cast<int>(i % 256), h = within / 128, g = (within % 128) / 32, l = within % 32;
    const int low = (b[64 * h + l + 32 * (g & 1)] >> ((g >> 1) * 4)) & 15;
    const int high = (b[128 + 32 * h + l] >> (2 * g)) & 3;
    const int scale = reinterpret_cast<const signed char*>(b + 192)[8 * h + l / 16 + 2 * g];
    return __fmul_rn(__fmul_rn(f16_at(b + 208), static_cast<float>(scale)), static_cast<float>((low | (high << 4)) - 32));
  }
};

// Blocks of THREADS for a grid-stride loop over n elements: one per THREADS elements, at most max_blocks.
unsigned stride_blocks(int64_t n, int max_blocks) {
  const int64_t b = (n + THREADS - 1) / THREADS;
  return static_cast<unsigned>(b < max_blocks ? b : max_blocks);
}

// ------------------------------------------------------------------------------------------------------------ embed

template <int DT>
__global__ void embed_kernel(float* __restrict__ y, const int32_t* __restrict__ ids, const void* __restrict__ table,
                             int T, int cols) {
  const int64_t total = static_cast<int64_t>(T) * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / cols, c = i - t * cols;
    y[i] = Weight<DT>::at(table, static_cast<int64_t>(ids[t]) * cols + c);
  }
}

// ----------------------------------------------------------------------------------------------------------- matmul

constexpr int MM_WARPS = THREADS / 32;  // output rows per block: one per warp
constexpr int MM_TOKENS = 8;            // tokens per pass over a weight row

// Block (bx, by): output rows [bx * MM_WARPS, +MM_WARPS), token tiles by, by + gridDim.y, ... of MM_TOKENS tokens.
// Lane l of warp w sums k = l, l + 32, ... of row o = bx * MM_WARPS + w for each token of the tile (VEC: k = 8l .. 8l+7,
// then 8l + 256 .., with 16-byte loads of weights and x: cols a multiple of 8 and x 16-byte aligned); the 32 lane
// sums of every (row, token) are added in lane order by one thread after a barrier.
template <int DT, bool VEC>
__global__ void __launch_bounds__(THREADS) matmul_kernel(float* __restrict__ y, const float* __restrict__ x,
                                                          const void* __restrict__ w, const float* __restrict__ bias,
                                                          int T, int cols, int rows) {
  __shared__ float part[MM_WARPS][MM_TOKENS][33];  // [warp][token][lane], padded against bank conflicts
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int o = blockIdx.x * MM_WARPS + warp;
  for (int t0 = blockIdx.y * MM_TOKENS; t0 < T; t0 += gridDim.y * MM_TOKENS) {
    const int nt = min(MM_TOKENS, T - t0);
    float acc[MM_TOKENS];
#pragma unroll
    for (int j = 0; j < MM_TOKENS; ++j) acc[j] = 0.f;
    if (o < rows) {
      const int64_t wrow = static_cast<int64_t>(o) * cols;
      const float* xt = x + static_cast<int64_t>(t0) * cols;
      if constexpr (VEC) {
        for (int k = 8 * lane; k < cols; k += 256) {
          float wv[8];
          Weight<DT>::load8(w, wrow + k, wv);
#pragma unroll
          for (int j = 0; j < MM_TOKENS; ++j) {
            if (j >= nt) continue;
            float xv[8];
            Dtype<float>::load8(xt + static_cast<int64_t>(j) * cols + k, xv);
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[j] = fmaf(xv[e], wv[e], acc[j]);
          }
        }
      } else {
        for (int k = lane; k < cols; k += 32) {
          const float wk = Weight<DT>::at(w, wrow + k);
#pragma unroll
          for (int j = 0; j < MM_TOKENS; ++j) {
            if (j < nt) acc[j] = fmaf(xt[static_cast<int64_t>(j) * cols + k], wk, acc[j]);
          }
        }
      }
    }
#pragma unroll
    for (int j = 0; j < MM_TOKENS; ++j) part[warp][j][lane] = acc[j];
    __syncthreads();
    if (threadIdx.x < MM_WARPS * MM_TOKENS) {
      const int rw = threadIdx.x / MM_TOKENS, j = threadIdx.x % MM_TOKENS;
      const int ro = blockIdx.x * MM_WARPS + rw;
      if (ro < rows && j < nt) {
        float s = 0.f;
        for (int l = 0; l < 32; ++l) s += part[rw][j][l];
        if (bias) s += bias[ro];
        y[static_cast<int64_t>(t0 + j) * rows + ro] = s;
      }
    }
    __syncthreads();  // part is rewritten by the next token tile
  }
}

// ---------------------------------------------------------------------------------------------------------- rmsnorm

// The sum of v over the block (THREADS threads), in every thread: warp shuffles, then the warp sums through `red`.
__device__ float block_sum(float v, float* red) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  float s = 0.f;
  for (int i = 0; i < THREADS / 32; ++i) s += red[i];
  return s;
}

// One block per token: y[t] = x[t] * (1 / sqrt(sum(x[t]^2) / n + eps)) * w.
__global__ void __launch_bounds__(THREADS) rmsnorm_kernel(float* y, const float* x, const float* __restrict__ w,
                                                           int n, float eps) {
  __shared__ float red[THREADS / 32];
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * n;
  float* yr = y + static_cast<int64_t>(blockIdx.x) * n;
  float ss = 0.f;
  for (int i = threadIdx.x; i < n; i += THREADS) ss = fmaf(xr[i], xr[i], ss);
  const float r = 1.f / sqrtf(block_sum(ss, red) / static_cast<float>(n) + eps);
  // each thread writes only the elements it read, so y may be x
  for (int i = threadIdx.x; i < n; i += THREADS) yr[i] = xr[i] * r * w[i];
}

// ------------------------------------------------------------------------------------------------ rope, swiglu, add

__global__ void rope_kernel(float* x, const float* __restrict__ cos, const float* __restrict__ sin, int T, int heads,
                            int half) {
  const int64_t total = static_cast<int64_t>(T) * heads * half;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t th = i / half;  // token * heads + head
    const int d = static_cast<int>(i - th * half);
    const int64_t t = th / heads;
    float* base = x + th * 2 * half;
    const float c = cos[t * half + d], s = sin[t * half + d];
    const float a = base[d], b = base[half + d];
    base[d] = a * c - b * s;
    base[half + d] = b * c + a * s;
  }
}

__global__ void swiglu_kernel(float* y, const float* gate, const float* up, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    y[i] = g / (1.f + expf(-g)) * up[i];
  }
}

__global__ void add_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] += x[i];
  }
}

// ----------------------------------------------------------------------------------------------------------- argmax

// Candidate (value, index) b beats a: a real number where a has none (index -1), a larger value, or an equal value
// at a smaller index. NaN is never a candidate.
__device__ bool beats(float bv, int32_t bi, float av, int32_t ai) {
  return bi >= 0 && (ai < 0 || bv > av || (bv == av && bi < ai));
}

// One block: each thread scans a strided slice, then a tree over the threads' candidates.
__global__ void __launch_bounds__(THREADS) argmax_kernel(const float* __restrict__ x, int32_t n, int32_t* out) {
  __shared__ float val[THREADS];
  __shared__ int32_t idx[THREADS];
  float bv = 0.f;
  int32_t bi = -1;
  for (int32_t i = static_cast<int32_t>(threadIdx.x); i < n; i += THREADS) {
    const float v = x[i];
    if (v == v && beats(v, i, bv, bi)) {  // v == v: not NaN
      bv = v;
      bi = i;
    }
  }
  const int tid = threadIdx.x;
  val[tid] = bv;
  idx[tid] = bi;
  __syncthreads();
  for (int s = THREADS / 2; s > 0; s >>= 1) {
    if (tid < s && beats(val[tid + s], idx[tid + s], val[tid], idx[tid])) {
      val[tid] = val[tid + s];
      idx[tid] = idx[tid + s];
    }
    __syncthreads();
  }
  if (tid == 0) *out = idx[0] < 0 ? 0 : idx[0];
}

// The vector loads for f32 / f16 / bf16 weights when every row of x and of W starts 16-byte aligned; the block types
// are read element by element.
template <int DT>
cudaError_t matmul(float* y, const float* x, const void* w, const float* bias, int T, int cols, int rows,
                   cudaStream_t s) {
  const int tiles = (T + MM_TOKENS - 1) / MM_TOKENS;
  const dim3 grid((rows + MM_WARPS - 1) / MM_WARPS, tiles < 65535 ? tiles : 65535);
  if constexpr (DT == DUO_W_F32 || DT == DUO_W_F16 || DT == DUO_W_BF16) {
    if (cols % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0) {
      DUO_LAUNCH((matmul_kernel<DT, true>), grid, THREADS, 0, s, y, x, w, bias, T, cols, rows);
      return cudaGetLastError();
    }
  }
  DUO_LAUNCH((matmul_kernel<DT, false>), grid, THREADS, 0, s, y, x, w, bias, T, cols, rows);
  return cudaGetLastError();
}

template <int DT>
cudaError_t embed(float* y, const int32_t* ids, const void* table, int T, int cols, int max_blocks, cudaStream_t s) {
  DUO_LAUNCH(embed_kernel<DT>, stride_blocks(static_cast<int64_t>(T) * cols, max_blocks), THREADS, 0, s, y, ids, table,
             T, cols);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_model_embed(float* y, const int32_t* ids, const void* table, int dtype, int T, int cols,
                               int max_blocks, cudaStream_t s) {
  if (T == 0) return cudaSuccess;
  switch (dtype) {
    case DUO_W_F32: return embed<DUO_W_F32>(y, ids, table, T, cols, max_blocks, s);
    case DUO_W_F16: return embed<DUO_W_F16>(y, ids, table, T, cols, max_blocks, s);
    case DUO_W_BF16: return embed<DUO_W_BF16>(y, ids, table, T, cols, max_blocks, s);
    case DUO_W_Q8_0: return embed<DUO_W_Q8_0>(y, ids, table, T, cols, max_blocks, s);
    case DUO_W_Q4_0: return embed<DUO_W_Q4_0>(y, ids, table, T, cols, max_blocks, s);
    case DUO_W_Q4_K: return embed<DUO_W_Q4_K>(y, ids, table, T, cols, max_blocks, s);
    default: return embed<DUO_W_Q6_K>(y, ids, table, T, cols, max_blocks, s);
  }
}

cudaError_t launch_model_matmul(float* y, const float* x, const void* w, int dtype, const float* bias, int T, int cols,
                                int rows, cudaStream_t s) {
  if (T == 0) return cudaSuccess;
  switch (dtype) {
    case DUO_W_F32: return matmul<DUO_W_F32>(y, x, w, bias, T, cols, rows, s);
    case DUO_W_F16: return matmul<DUO_W_F16>(y, x, w, bias, T, cols, rows, s);
    case DUO_W_BF16: return matmul<DUO_W_BF16>(y, x, w, bias, T, cols, rows, s);
    case DUO_W_Q8_0: return matmul<DUO_W_Q8_0>(y, x, w, bias, T, cols, rows, s);
    case DUO_W_Q4_0: return matmul<DUO_W_Q4_0>(y, x, w, bias, T, cols, rows, s);
    case DUO_W_Q4_K: return matmul<DUO_W_Q4_K>(y, x, w, bias, T, cols, rows, s);
    default: return matmul<DUO_W_Q6_K>(y, x, w, bias, T, cols, rows, s);
  }
}

cudaError_t launch_model_rmsnorm(float* y, const float* x, const float* w, int T, int n, float eps, cudaStream_t s) {
  if (T == 0) return cudaSuccess;
  DUO_LAUNCH(rmsnorm_kernel, static_cast<unsigned>(T), THREADS, 0, s, y, x, w, n, eps);
  return cudaGetLastError();
}

cudaError_t launch_model_rope(float* x, const float* cos, const float* sin, int T, int heads, int head_dim,
                              int max_blocks, cudaStream_t s) {
  if (T == 0) return cudaSuccess;
  const int half = head_dim / 2;
  DUO_LAUNCH(rope_kernel, stride_blocks(static_cast<int64_t>(T) * heads * half, max_blocks), THREADS, 0, s, x, cos, sin,
             T, heads, half);
  return cudaGetLastError();
}

cudaError_t launch_model_swiglu(float* y, const float* gate, const float* up, int64_t n, int max_blocks,
                                cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  DUO_LAUNCH(swiglu_kernel, stride_blocks(n, max_blocks), THREADS, 0, s, y, gate, up, n);
  return cudaGetLastError();
}

cudaError_t launch_model_add(float* y, const float* x, int64_t n, int max_blocks, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  DUO_LAUNCH(add_kernel, stride_blocks(n, max_blocks), THREADS, 0, s, y, x, n);
  return cudaGetLastError();
}

cudaError_t launch_model_argmax(const float* x, int32_t n, int32_t* out, cudaStream_t s) {
  DUO_LAUNCH(argmax_kernel, 1, THREADS, 0, s, x, n, out);
  return cudaGetLastError();
}
