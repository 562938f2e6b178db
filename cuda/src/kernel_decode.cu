// Split-KV attention on CUDA cores (flash-decoding): decode and short query blocks of every dtype, and every f32 and
// int8 KV launch (their values are not f16 / bf16 values for the tensor-core kernel: see attend.cu).
//
// Grid (row groups, KV heads, key chunks). A CTA takes ROWS packed query rows of one KV head (the G query heads of
// a token share every K/V load: GQA packing) and one chunk of the tile table. Its 128 threads split into KP groups
// of TPK threads; a group holds one key at a time, each thread 8 of its D elements. Every group keeps its own online
// softmax state (running max m, sum l, accumulator) in base 2; the groups are merged through shared memory at the
// end, and the CTA writes one normalised partial (o, lse) per row for the split-KV merge.
// int8 / int4 caches: each thread reads its 8 values of a key's record (4 or 8 packed bytes and the record's scale,
// dtype.cuh) and dequantizes them into the same registers an f32 row would fill, so the arithmetic after the load is
// the f32 path's and no dequantized copy of the cache exists anywhere.
#include <cmath>
#include <climits>

#include "dtype.cuh"
#include "kernels.h"

namespace {

constexpr int THREADS = 128;
constexpr int VEC = 8;  // elements of a key / query / output row per thread

template <typename KV, int D, int ROWS>
__global__ void __launch_bounds__(THREADS) decode_kernel(const AttendArgs a) {
  constexpr int TPK = D / VEC;            // threads per key: 8 (D = 64) or 16 (D = 128)
  constexpr int KP = THREADS / TPK;       // keys in flight per CTA: 16 or 8
  constexpr int KB = ROWS <= 2 ? 4 : 2;   // keys per group per step (loads in flight per thread)
  static_assert(TPK <= 32 && THREADS % TPK == 0, "a key's threads must sit in one warp");

  const int j = blockIdx.y;
  const int split = blockIdx.z;
  const int m0 = blockIdx.x * ROWS;
  const int li = threadIdx.x % TPK;  // which 8 elements of D
  const int gi = threadIdx.x / TPK;  // which key group
  const int slot = a.kv_slots[j];
  [[maybe_unused]] const int64_t kv_offset = static_cast<int64_t>(slot) * D + li * VEC;

  // Queries of this CTA's rows, pre-scaled into base 2. Rows past M repeat the last row's token and read zeros;
  // their results are not written.
  float q[ROWS][VEC];
  int32_t tok[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    const int m = m0 + r < a.M ? m0 + r : a.M - 1;
    tok[r] = a.qpos0 + m / a.G;
    if (m0 + r < a.M) {
      const float* src = a.q + (static_cast<int64_t>(j) * a.M + m) * D + li * VEC;
      Dtype<float>::load8(src, q[r]);
#pragma unroll
      for (int e = 0; e < VEC; ++e) q[r][e] *= a.scale_log2;
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) q[r][e] = 0.f;
    }
  }
  const int32_t tok_lo = tok[0], tok_hi = tok[ROWS - 1];

  float mrow[ROWS], lrow[ROWS], acc[ROWS][VEC];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    mrow[r] = -INFINITY;
    lrow[r] = 0.f;
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[r][e] = 0.f;
  }

  const int t_begin = split * a.tiles_per_split;
  const int t_end = min(a.ntiles, t_begin + a.tiles_per_split);
  for (int ti = t_begin; ti < t_end; ++ti) {
    const KeyTile tile = a.tiles[ti];  // the same for every thread: control flow below is uniform per CTA
    if (tile_masked(tile.pos_min, tile.pos_max, tok_lo, tok_hi, a.sink, a.recent)) continue;
    [[maybe_unused]] const KV* kb = static_cast<const KV*>(tile.k);
    [[maybe_unused]] const KV* vb = static_cast<const KV*>(tile.v);
    [[maybe_unused]] const int64_t row_stride = static_cast<int64_t>(tile.row_heads) * D;
    for (int r0 = 0; r0 < tile.rows; r0 += KP * KB) {
      float kx[KB][VEC], vx[KB][VEC];
      int32_t pos[KB];
#pragma unroll
      for (int b = 0; b < KB; ++b) {
        const int r = r0 + gi + b * KP;
        if (r < tile.rows) {
          if constexpr (IsQuantized<KV>::value) {
            // record (row, slot) of the K and the V buffer
            const int64_t at = ((static_cast<int64_t>(tile.row0) + r) * tile.row_heads + slot) * Dtype<KV>::head_bytes(D);
            Dtype<KV>::template load8<D>(static_cast<const uint8_t*>(tile.k) + at, li, kx[b]);
            Dtype<KV>::template load8<D>(static_cast<const uint8_t*>(tile.v) + at, li, vx[b]);
          } else {
            const int64_t off = (static_cast<int64_t>(tile.row0) + r) * row_stride + kv_offset;
            Dtype<KV>::load8(kb + off, kx[b]);
            Dtype<KV>::load8(vb + off, vx[b]);
          }
          pos[b] = tile.pos_index < 0 ? tile.pos0 + r : a.positions[tile.pos_index + r];
        } else {
#pragma unroll
          for (int e = 0; e < VEC; ++e) kx[b][e] = vx[b][e] = 0.f;
          pos[b] = INT_MAX;  // never visible: every query position is < INT_MAX
        }
      }
      // Scores: partial dot over this thread's 8 elements, summed over the TPK threads of the key (butterfly, so
      // every thread of the group ends with the full score).
      float sc[KB][ROWS];
#pragma unroll
      for (int b = 0; b < KB; ++b) {
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
          float dot = 0.f;
#pragma unroll
          for (int e = 0; e < VEC; ++e) dot = fmaf(q[r][e], kx[b][e], dot);
#pragma unroll
          for (int off = TPK / 2; off > 0; off /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, off);
          sc[b][r] = visible(pos[b], tok[r], a.sink, a.recent) ? dot : -INFINITY;
        }
      }
      // Online softmax update, once per KB keys.
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        float mx = mrow[r];
#pragma unroll
        for (int b = 0; b < KB; ++b) mx = fmaxf(mx, sc[b][r]);
        if (mx == -INFINITY) continue;  // nothing visible to this row yet
        const float alpha = exp2f(mrow[r] - mx);  // 0 when mrow was -inf
        mrow[r] = mx;
        lrow[r] *= alpha;
#pragma unroll
        for (int e = 0; e < VEC; ++e) acc[r][e] *= alpha;
#pragma unroll
        for (int b = 0; b < KB; ++b) {
          // Masked keys are skipped, as the reference does: 0 x an Inf or NaN value would poison the row.
          if (sc[b][r] == -INFINITY) continue;
          const float p = exp2f(sc[b][r] - mx);
          lrow[r] += p;
#pragma unroll
          for (int e = 0; e < VEC; ++e) acc[r][e] = fmaf(p, vx[b][e], acc[r][e]);
        }
      }
    }
  }

  // Merge the KP groups' states and write one normalised partial per row.
  __shared__ float sm_m[KP][ROWS], sm_l[KP][ROWS];
  __shared__ float sm_acc[KP][ROWS][D];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    if (li == 0) {
      sm_m[gi][r] = mrow[r];
      sm_l[gi][r] = lrow[r];
    }
#pragma unroll
    for (int e = 0; e < VEC; ++e) sm_acc[gi][r][li * VEC + e] = acc[r][e];
  }
  __syncthreads();
  const int64_t out_row0 = (static_cast<int64_t>(a.split_base + split) * a.nkv + j) * a.M;
  for (int idx = threadIdx.x; idx < ROWS * D; idx += THREADS) {
    const int r = idx / D, d = idx % D;
    if (m0 + r >= a.M) continue;
    const int64_t out_row = out_row0 + m0 + r;
    float mx = -INFINITY;
    for (int g = 0; g < KP; ++g) mx = fmaxf(mx, sm_m[g][r]);
    if (mx == -INFINITY) {
      a.o[out_row * D + d] = 0.f;
      if (d == 0) a.lse[out_row] = -INFINITY;
      continue;
    }
    float l = 0.f, o = 0.f;
    for (int g = 0; g < KP; ++g) {
      const float w = exp2f(sm_m[g][r] - mx);
      l = fmaf(sm_l[g][r], w, l);
      o = fmaf(sm_acc[g][r][d], w, o);
    }
    a.o[out_row * D + d] = o / l;
    if (d == 0) a.lse[out_row] = (mx + log2f(l)) * 0.69314718055994531f;
  }
}

template <typename KV, int D>
cudaError_t launch_rows(const AttendArgs& a, int rows, dim3 grid, cudaStream_t s) {
  switch (rows) {
    case 1: DUO_LAUNCH((decode_kernel<KV, D, 1>), grid, THREADS, 0, s, a); break;
    case 2: DUO_LAUNCH((decode_kernel<KV, D, 2>), grid, THREADS, 0, s, a); break;
    case 4: DUO_LAUNCH((decode_kernel<KV, D, 4>), grid, THREADS, 0, s, a); break;
    default: DUO_LAUNCH((decode_kernel<KV, D, 8>), grid, THREADS, 0, s, a); break;
  }
  return cudaGetLastError();
}

// The kernel launch_rows<KV, D> runs for `rows`.
template <typename KV, int D>
const void* kernel_for(int rows) {
  switch (rows) {
    case 1: return reinterpret_cast<const void*>(decode_kernel<KV, D, 1>);
    case 2: return reinterpret_cast<const void*>(decode_kernel<KV, D, 2>);
    case 4: return reinterpret_cast<const void*>(decode_kernel<KV, D, 4>);
    default: return reinterpret_cast<const void*>(decode_kernel<KV, D, 8>);
  }
}

template <typename KV>
cudaError_t launch_dim(const AttendArgs& a, int head_dim, int rows, dim3 grid, cudaStream_t s) {
  return head_dim == 64 ? launch_rows<KV, 64>(a, rows, grid, s) : launch_rows<KV, 128>(a, rows, grid, s);
}

}  // namespace

cudaError_t launch_decode(const AttendArgs& a, int dtype, int head_dim, int rows, dim3 grid, cudaStream_t s) {
  switch (dtype) {
    case DUO_F32: return launch_dim<float>(a, head_dim, rows, grid, s);
    case DUO_F16: return launch_dim<__half>(a, head_dim, rows, grid, s);
    case DUO_INT8: return launch_dim<Int8Record>(a, head_dim, rows, grid, s);
    case DUO_INT4: return launch_dim<Int4Record>(a, head_dim, rows, grid, s);
    default: return launch_dim<__nv_bfloat16>(a, head_dim, rows, grid, s);
  }
}

namespace {
template <typename KV>
const void* kernel_for_dim(int head_dim, int rows) {
  return head_dim == 64 ? kernel_for<KV, 64>(rows) : kernel_for<KV, 128>(rows);
}
}  // namespace

int decode_blocks_per_sm(int dtype, int head_dim, int rows) {
  static int known[5][2][4];  // [dtype][D = 64, 128][rows = 1, 2, 4, 8]; 0 = not yet asked (calls hold the API lock)
  const int r = rows == 1 ? 0 : rows == 2 ? 1 : rows == 4 ? 2 : 3;
  int& n = known[dtype][head_dim == 128][r];
  if (n == 0) {
    const void* k = dtype == DUO_F32    ? kernel_for_dim<float>(head_dim, rows)
                    : dtype == DUO_F16  ? kernel_for_dim<__half>(head_dim, rows)
                    : dtype == DUO_INT8 ? kernel_for_dim<Int8Record>(head_dim, rows)
                    : dtype == DUO_INT4 ? kernel_for_dim<Int4Record>(head_dim, rows)
                                        : kernel_for_dim<__nv_bfloat16>(head_dim, rows);
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, THREADS, 0) != cudaSuccess || n < 1) n = 1;
  }
  return n;
}
