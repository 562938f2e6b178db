// Tiled flash attention on tensor cores (mma.sync m16n8k16, f16 / bf16 KV, f32 accumulation) for query blocks:
// chunked prefill with the causal mask or the causal + sink/recent window mask.
//
// Grid (query tiles, KV heads, key chunks); 4 warps per CTA. A CTA takes 64 packed rows of one KV head (row m =
// t * G + g: the G query heads of a KV head sit in one tile and share every K/V tile) and walks its chunk of the
// tile table: tiles that no row of the CTA can see are skipped, the others are loaded with cp.async into a
// double-buffered shared-memory stage (the next tile streams in while the current one is computed). Each warp owns
// 16 rows: S = Q K^T (m16n8k16, Q rounded to the KV dtype as FlashAttention does), mask, online softmax in base 2
// in registers, O += P V with P rounded to the KV dtype and V read through ldmatrix.trans.
// int4 caches (STORE = Int4Record, KV = __half): every value the codec can decode, f16(f16(q * s) + z), is an f16
// value, so the records are dequantized exactly into the f16 shared-memory stage as they are loaded (plain 32-bit
// loads: a record of D / 2 + 4 bytes is not a run of 16-byte chunks for cp.async), and the rest of the kernel is the
// f16 one: the same accuracy as an f16 cache holding the dequantized values. No dequantized copy exists outside the
// CTA's two stages. int8 values are not f16 values (and may exceed its range): int8 takes the CUDA-core kernel.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 .f16/.bf16), lane = 4 * groupID + tig:
//   A (16x16, row): reg0 = A[g][2t..2t+1], reg1 = A[g+8][2t..], reg2 = A[g][2t+8..], reg3 = A[g+8][2t+8..]
//   B (16x8, col):  reg0 = B[2t..2t+1][g], reg1 = B[2t+8..2t+9][g]
//   C (16x8, f32):  c0, c1 = C[g][2t..2t+1], c2, c3 = C[g+8][2t..2t+1]
#include <cmath>
#include <climits>

#include "dtype.cuh"
#include "kernels.h"
#include "ptx.h"

namespace {

constexpr int THREADS = 128;
constexpr int BM = PREFILL_ROWS;  // packed rows per CTA (16 per warp)
constexpr int BN = TILE_KEYS;     // keys per tile
constexpr int PAD = 8;            // elements of padding per shared row: rows start 16 bytes apart mod 128 (no bank conflicts)

template <int D>
constexpr size_t smem_bytes() {
  return 2 * 2 * BN * (D + PAD) * sizeof(uint16_t) + 2 * BN * sizeof(int32_t);  // K, V x 2 stages, positions x 2
}

// True when this thread's share of a V stage [BN][LDS] holds an Inf or NaN.
template <typename KV, int D>
__device__ bool nonfinite_rows(const KV* vt) {
  constexpr int LDS = D + PAD, CPR = D / 8;
  bool found = false;
  for (int c = threadIdx.x; c < BN * CPR; c += THREADS) {
    const uint4 u = *reinterpret_cast<const uint4*>(vt + (c / CPR) * LDS + (c % CPR) * 8);
    for (const uint32_t w : {u.x, u.y, u.z, u.w}) {
      found |= (w & Dtype<KV>::EXP_BITS) == Dtype<KV>::EXP_BITS;
      found |= ((w >> 16) & Dtype<KV>::EXP_BITS) == Dtype<KV>::EXP_BITS;
    }
  }
  return found;
}

// O += P V for one tile without the mma, skipping P = 0 (masked keys): the path for tiles with non-finite V values.
// P (this warp's 16 rows, rounded to KV as the mma path does) goes through the tile's K stage `pk`, which S = Q K^T
// no longer needs once every warp passed the barrier below; each thread then sums its own C-fragment elements.
template <typename KV, int D>
__device__ void exact_pv_tile(float (&o)[D / 8][4], const float (&s)[BN / 8][4], KV* pk, const KV* vt, int warp, int g,
                              int tig) {
  constexpr int LDS = D + PAD;
  __syncthreads();  // every warp is done reading K from this stage
#pragma unroll
  for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      pk[(warp * 16 + g + 8 * (e >> 1)) * LDS + nt * 8 + 2 * tig + (e & 1)] = Dtype<KV>::from_f32(s[nt][e]);
    }
  }
  __syncthreads();
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const KV* prow = pk + (warp * 16 + g + 8 * (e >> 1)) * LDS;
      const int col = dn * 8 + 2 * tig + (e & 1);
      float acc = 0.f;
      for (int key = 0; key < BN; ++key) {
        const float p = Dtype<KV>::to_f32(prow[key]);
        if (p != 0.f) acc = fmaf(p, Dtype<KV>::to_f32(vt[key * LDS + col]), acc);
      }
      o[dn][e] += acc;
    }
  }
}

// 8 values of an int4 record (elements 8 * cc .. 8 * cc + 7) as 8 f16 in memory order: exact (see the top).
template <int D>
__device__ uint4 dequant8_f16(const uint8_t* rec, int cc) {
  float x[8];
  Dtype<Int4Record>::load8<D>(rec, cc, x);
  uint4 u;
  u.x = Dtype<__half>::pack2(x[0], x[1]);
  u.y = Dtype<__half>::pack2(x[2], x[3]);
  u.z = Dtype<__half>::pack2(x[4], x[5]);
  u.w = Dtype<__half>::pack2(x[6], x[7]);
  return u;
}

// KV: the f16 / bf16 type of the shared-memory stages and the mma; STORE: what the cache buffers hold (KV itself, or
// Int4Record with KV = __half).
template <typename KV, int D, typename STORE = KV>
__global__ void __launch_bounds__(THREADS, 3) prefill_kernel(const AttendArgs a) {
  constexpr int LDS = D + PAD;  // shared row stride (elements)
  constexpr int CPR = D / 8;    // 16-byte chunks per K/V row
  DUO_DYNAMIC_SMEM(smem);
  KV* ks = reinterpret_cast<KV*>(smem);                // [2][BN][LDS]
  KV* vs = ks + 2 * BN * LDS;                          // [2][BN][LDS]
  int32_t* ps = reinterpret_cast<int32_t*>(vs + 2 * BN * LDS);  // [2][BN] key positions (INT_MAX past the tile)

  const int j = blockIdx.y;
  const int split = blockIdx.z;
  const int tile_m = gridDim.x - 1 - blockIdx.x;  // the last query tiles see the most keys: start them first
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, tig = lane % 4;
  const int slot = a.kv_slots[j];

  // This thread's two rows (h = 0: g, h = 1: g + 8 of the warp's 16) and their tokens.
  const int row[2] = {tile_m * BM + warp * 16 + g, tile_m * BM + warp * 16 + g + 8};
  int32_t tok[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) tok[h] = a.qpos0 + (row[h] < a.M ? row[h] : a.M - 1) / a.G;
  const int32_t tok_lo = a.qpos0 + (tile_m * BM) / a.G;
  const int32_t tok_hi = a.qpos0 + (min(a.M, tile_m * BM + BM) - 1) / a.G;

  // Q fragments for all D / 16 k-steps (rows past M are zeros).
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kstep = 0; kstep < D / 16; ++kstep) {
#pragma unroll
    for (int reg = 0; reg < 4; ++reg) {
      const int h = reg & 1, col = kstep * 16 + (reg >> 1) * 8 + 2 * tig;
      float2 x = make_float2(0.f, 0.f);
      if (row[h] < a.M) x = *reinterpret_cast<const float2*>(a.q + (static_cast<int64_t>(j) * a.M + row[h]) * D + col);
      qf[kstep][reg] = Dtype<KV>::pack2(x.x, x.y);
    }
  }

  float o[D / 8][4];
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY};
  float l_run[2] = {0.f, 0.f};  // this thread's share of the row sums (summed over the 4 threads of a row at the end)

  const int t_begin = split * a.tiles_per_split;
  const int t_end = min(a.ntiles, t_begin + a.tiles_per_split);
  auto next_tile = [&](int ti) {
    while (ti < t_end) {
      const KeyTile& t = a.tiles[ti];
      if (!tile_masked(t.pos_min, t.pos_max, tok_lo, tok_hi, a.sink, a.recent)) break;
      ++ti;
    }
    return ti;
  };
  auto load_tile = [&](int ti, int stage) {
    const KeyTile t = a.tiles[ti];
    if constexpr (IsQuantized<STORE>::value) {
      // synchronous loads, dequantized into the stage; rows past the tile are zeros, as cp.async fills them
      const uint8_t* kb = static_cast<const uint8_t*>(t.k);
      const uint8_t* vb = static_cast<const uint8_t*>(t.v);
      for (int c = threadIdx.x; c < BN * CPR; c += THREADS) {
        const int r = c / CPR, cc = c % CPR;
        uint4 kw{}, vw{};  // zeros
        if (r < t.rows) {
          const int64_t at = ((static_cast<int64_t>(t.row0) + r) * t.row_heads + slot) * Dtype<STORE>::head_bytes(D);
          kw = dequant8_f16<D>(kb + at, cc);
          vw = dequant8_f16<D>(vb + at, cc);
        }
        *reinterpret_cast<uint4*>(ks + (stage * BN + r) * LDS + cc * 8) = kw;
        *reinterpret_cast<uint4*>(vs + (stage * BN + r) * LDS + cc * 8) = vw;
      }
    } else {
      const KV* kb = static_cast<const KV*>(t.k);
      const KV* vb = static_cast<const KV*>(t.v);
      const int64_t row_stride = static_cast<int64_t>(t.row_heads) * D;
      for (int c = threadIdx.x; c < BN * CPR; c += THREADS) {
        const int r = c / CPR, cc = c % CPR;
        const bool ok = r < t.rows;
        const int64_t off = ok ? (static_cast<int64_t>(t.row0) + r) * row_stride + static_cast<int64_t>(slot) * D + cc * 8 : 0;
        cp_async16(ks + (stage * BN + r) * LDS + cc * 8, kb + off, ok ? 16 : 0);
        cp_async16(vs + (stage * BN + r) * LDS + cc * 8, vb + off, ok ? 16 : 0);
      }
    }
    for (int r = threadIdx.x; r < BN; r += THREADS) {
      ps[stage * BN + r] = r >= t.rows ? INT_MAX : t.pos_index < 0 ? t.pos0 + r : a.positions[t.pos_index + r];
    }
  };

  int cur = next_tile(t_begin);
  if (cur < t_end) load_tile(cur, 0);
  cp_async_commit();
  for (int stage = 0; cur < t_end; stage ^= 1) {
    const int nxt = next_tile(cur + 1);
    if (nxt < t_end) load_tile(nxt, stage ^ 1);  // that stage was released by the barrier ending the last iteration
    cp_async_commit();
    cp_async_wait_prev();  // the current stage has landed
    __syncthreads();

    KV* kt = ks + stage * BN * LDS;
    const KV* vt = vs + stage * BN * LDS;
    const int32_t* pt = ps + stage * BN;
    // A key visible to some rows of the CTA and masked for others (the causal diagonal, the window's edges) gets
    // P = 0 in the masked rows, and 0 x Inf = NaN in the mma where the reference skips the key. So a tile that is not
    // open to every row is checked for a non-finite V value (f16 caches overflow to Inf), and then takes the exact
    // P V path below. Uniform per CTA: only the tiles at the edges of the mask pay for the check.
    const KeyTile& tile = a.tiles[cur];
    bool exact_pv = false;
    if (!tile_open(tile.pos_min, tile.pos_max, tok_lo, tok_hi, a.sink, a.recent)) {
      exact_pv = __syncthreads_or(nonfinite_rows<KV, D>(vt)) != 0;
    }

    // S = Q K^T: 16 rows x 64 keys per warp, as 8 n-tiles of 8 keys.
    float s[BN / 8][4];
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
      for (int kstep = 0; kstep < D / 16; ++kstep) {
        const KV* kr = kt + (nt * 8 + g) * LDS + kstep * 16 + 2 * tig;  // B[k][n] = K[key n][d k]
        mma16816<KV>(s[nt], qf[kstep], *reinterpret_cast<const uint32_t*>(kr),
                     *reinterpret_cast<const uint32_t*>(kr + 8));
      }
    }
    // Mask, scale into base 2, and the online softmax update of both rows.
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int32_t p = pt[nt * 8 + 2 * tig + (e & 1)];
        s[nt][e] = visible(p, tok[e >> 1], a.sink, a.recent) ? s[nt][e] * a.scale_log2 : -INFINITY;
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = m_run[h];
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * h], s[nt][2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float base = mx == -INFINITY ? 0.f : mx;  // a row with nothing visible yet stays at p = 0
      const float alpha = exp2f(m_run[h] - base);
      m_run[h] = mx;
      l_run[h] *= alpha;
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        o[dn][2 * h] *= alpha;
        o[dn][2 * h + 1] *= alpha;
      }
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) {
        s[nt][2 * h] = exp2f(s[nt][2 * h] - base);
        s[nt][2 * h + 1] = exp2f(s[nt][2 * h + 1] - base);
        l_run[h] += s[nt][2 * h] + s[nt][2 * h + 1];
      }
    }
    if (exact_pv) {
      exact_pv_tile<KV, D>(o, s, kt, vt, warp, g, tig);
    } else {
      // O += P V: P (C layout of two n-tiles) is the A fragment of a 16-key k-step.
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        const uint32_t pa[4] = {Dtype<KV>::pack2(s[2 * kk][0], s[2 * kk][1]),
                                Dtype<KV>::pack2(s[2 * kk][2], s[2 * kk][3]),
                                Dtype<KV>::pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                Dtype<KV>::pack2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int dn = 0; dn < D / 8; dn += 2) {
          // matrix i = lane / 8: keys kk*16 + (i & 1) * 8 + lane % 8, columns (dn + i / 2) * 8 .. + 7
          const int mi = lane / 8;
          const KV* vr = vt + (kk * 16 + (mi & 1) * 8 + lane % 8) * LDS + (dn + (mi >> 1)) * 8;
          uint32_t vf[4];
          ldmatrix_x4_trans(vf, vr);
          mma16816<KV>(o[dn], pa, vf[0], vf[1]);
          mma16816<KV>(o[dn + 1], pa, vf[2], vf[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with this stage before it is refilled
    cur = nxt;
  }

  // Normalise and write this split's partial rows.
  const int64_t out_row0 = (static_cast<int64_t>(a.split_base + split) * a.nkv + j) * a.M;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l = l_run[h];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    if (row[h] >= a.M) continue;
    const float inv = l > 0.f ? 1.f / l : 0.f;
    float* out = a.o + (out_row0 + row[h]) * D;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      *reinterpret_cast<float2*>(out + dn * 8 + 2 * tig) = make_float2(o[dn][2 * h] * inv, o[dn][2 * h + 1] * inv);
    }
    if (tig == 0) a.lse[out_row0 + row[h]] = l > 0.f ? (m_run[h] + log2f(l)) * 0.69314718055994531f : -INFINITY;
  }
}

template <typename KV, int D, typename STORE>
cudaError_t launch(const AttendArgs& a, dim3 grid, cudaStream_t s) {
  DUO_LAUNCH((prefill_kernel<KV, D, STORE>), grid, THREADS, smem_bytes<D>(), s, a);
  return cudaGetLastError();
}

template <typename KV, int D, typename STORE>
cudaError_t configure() {
  return cudaFuncSetAttribute(prefill_kernel<KV, D, STORE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(smem_bytes<D>()));
}

// The kernel for a cache dtype (DUO_F16, DUO_BF16 or DUO_INT4) and head dim.
const void* kernel_for(int dtype, int head_dim) {
  const bool d64 = head_dim == 64;
  switch (dtype) {
    case DUO_F16:
      return d64 ? reinterpret_cast<const void*>(prefill_kernel<__half, 64, __half>)
                 : reinterpret_cast<const void*>(prefill_kernel<__half, 128, __half>);
    case DUO_INT4:
      return d64 ? reinterpret_cast<const void*>(prefill_kernel<__half, 64, Int4Record>)
                 : reinterpret_cast<const void*>(prefill_kernel<__half, 128, Int4Record>);
    default:
      return d64 ? reinterpret_cast<const void*>(prefill_kernel<__nv_bfloat16, 64, __nv_bfloat16>)
                 : reinterpret_cast<const void*>(prefill_kernel<__nv_bfloat16, 128, __nv_bfloat16>);
  }
}

}  // namespace

cudaError_t launch_prefill(const AttendArgs& a, int dtype, int head_dim, dim3 grid, cudaStream_t s) {
  const bool d64 = head_dim == 64;
  if (dtype == DUO_F16) return d64 ? launch<__half, 64, __half>(a, grid, s) : launch<__half, 128, __half>(a, grid, s);
  if (dtype == DUO_INT4) {
    return d64 ? launch<__half, 64, Int4Record>(a, grid, s) : launch<__half, 128, Int4Record>(a, grid, s);
  }
  return d64 ? launch<__nv_bfloat16, 64, __nv_bfloat16>(a, grid, s)
             : launch<__nv_bfloat16, 128, __nv_bfloat16>(a, grid, s);
}

cudaError_t configure_kernels() {
  cudaError_t e = cudaSuccess;
  if (e == cudaSuccess) e = configure<__half, 64, __half>();
  if (e == cudaSuccess) e = configure<__half, 128, __half>();
  if (e == cudaSuccess) e = configure<__nv_bfloat16, 64, __nv_bfloat16>();
  if (e == cudaSuccess) e = configure<__nv_bfloat16, 128, __nv_bfloat16>();
  if (e == cudaSuccess) e = configure<__half, 64, Int4Record>();
  if (e == cudaSuccess) e = configure<__half, 128, Int4Record>();
  return e;
}

int prefill_blocks_per_sm(int dtype, int head_dim) {
  static int known[3][2];  // [f16, bf16, int4][D = 64, 128]; 0 = not yet asked (calls hold the API lock)
  int& n = known[dtype == DUO_F16 ? 0 : dtype == DUO_BF16 ? 1 : 2][head_dim == 128];
  if (n == 0) {
    const void* k = kernel_for(dtype, head_dim);
    const size_t smem = head_dim == 64 ? smem_bytes<64>() : smem_bytes<128>();
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, THREADS, smem) != cudaSuccess || n < 1) n = 1;
  }
  return n;
}
