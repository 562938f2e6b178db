// What the host code (append.cu, attend.cu) hands to the kernels, and the launchers it calls.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

// A kernel launch, written once for both builds: `kernel` in parentheses when it has template arguments with commas.
// With -DDUO_EMU (cuda/emu/build.sh) the emulator queues the launch on the stream, with the same limits checked.
#ifdef DUO_EMU
#define DUO_LAUNCH(kernel, grid, block, smem, stream, ...) \
  emu_launch(kernel, #kernel, dim3(grid), dim3(block), smem, stream, __VA_ARGS__)
#else
#define DUO_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#endif

// Key tiles: every attend splits each segment into tiles of at most TILE_KEYS rows; the tile table is the kernels'
// only view of the segments. The host uploads one SegmentDesc per segment (segments that no query of the call can
// see are dropped there) and expand_tiles writes the tile table on the device: the upload is per segment (a page of
// rows), not per 64-key tile, and the attention kernels skip the tiles their rows cannot see.
constexpr int TILE_KEYS = 64;

struct KeyTile {
  const void* k;      // the segment's K buffer (dtype of the launch), NHD rows of row_heads * D elements
  const void* v;      // the segment's V buffer, same layout
  int32_t row0;       // first buffer row of the tile
  int32_t rows;       // valid rows, 1..TILE_KEYS
  int32_t row_heads;  // heads per buffer row
  int32_t pos0;       // position of row0 when pos_index < 0 (consecutive rows)
  int32_t pos_index;  // >= 0: positions[pos_index + r] is the position of tile row r
  int32_t pos_min;    // bounds of the tile's positions (for skipping fully masked tiles)
  int32_t pos_max;
  int32_t unused;
};

// One segment of an attend, as uploaded: expand_tiles writes its ceil(row_count / TILE_KEYS) tiles from first_tile on.
struct SegmentDesc {
  const void* k;       // K buffer
  const void* v;       // V buffer
  int32_t row_start;   // first buffer row
  int32_t row_count;   // rows, >= 1
  int32_t row_heads;   // heads per buffer row
  int32_t pos0;        // position of row_start when pos_index < 0
  int32_t pos_index;   // >= 0: positions[pos_index + r] is the position of row r
  int32_t first_tile;  // index of its first tile in the tile table
};

// One launch of an attention kernel. Rows are "packed": KV head j owns M = T * G rows, row m = t * G + g is query
// head g of the group at token t (GQA packing: the G query heads of a KV head share every K/V load).
struct AttendArgs {
  const float* q;            // [nkv][M][D] f32 queries gathered from the caller's [T, Hq, D]
  const KeyTile* tiles;      // [ntiles] this launch's tiles (one dtype)
  const int32_t* positions;  // explicit positions referenced by tiles
  const int32_t* kv_slots;   // [nkv] head slot of KV head j within every segment row
  float* o;                  // [splits][nkv][M][D] normalised partial outputs (the final output when splits == 1)
  float* lse;                // [splits][nkv][M] natural log-sum-exp of each partial (-inf when it saw no key)
  int32_t M;                 // packed rows per KV head
  int32_t G;                 // query heads per KV head
  int32_t nkv;               // KV heads (grid.y)
  int32_t qpos0;             // position of token 0
  int32_t sink;              // window sink, or -1 for causal only
  int32_t recent;            // window recent, or -1
  int32_t ntiles;
  int32_t tiles_per_split;   // split s (grid.z) covers tiles [s * tiles_per_split, (s + 1) * tiles_per_split)
  int32_t split_base;        // output slot of split 0 of this launch
  float scale_log2;          // log2(e) / sqrt(D): scores are kept in base 2
};

// The visibility rule of the AttendOp: causal (bottom-right aligned by absolute position) and, with a window,
// only sinks and the recent keys.
__host__ __device__ inline bool visible(int32_t p, int32_t t, int32_t sink, int32_t recent) {
  return p <= t && (sink < 0 || p < sink || p >= t - recent);
}

// True when no key of a tile with positions in [pmin, pmax] is visible to any query token in [tlo, thi].
__host__ __device__ inline bool tile_masked(int32_t pmin, int32_t pmax, int32_t tlo, int32_t thi, int32_t sink,
                                            int32_t recent) {
  if (pmin > thi) return true;                                  // every key is after every query
  return sink >= 0 && pmin >= sink && pmax < tlo - recent;      // every key is in the window's gap of every query
}

// True when every key of a tile with positions in [pmin, pmax] is visible to every query token in [tlo, thi].
__host__ __device__ inline bool tile_open(int32_t pmin, int32_t pmax, int32_t tlo, int32_t thi, int32_t sink,
                                          int32_t recent) {
  return pmax <= tlo && (sink < 0 || pmax < sink || pmin >= thi - recent);
}

// Row-group sizes of the CUDA-core kernel (rows per CTA) and row tile of the tensor-core kernel.
constexpr int DECODE_MAX_ROWS = 8;
constexpr int PREFILL_ROWS = 64;

// dtype: enum duo_dtype; head_dim: 64 or 128; rows: 1, 2, 4 or 8 (packed rows per CTA); grid = (row groups, nkv,
// splits).
cudaError_t launch_decode(const AttendArgs& a, int dtype, int head_dim, int rows, dim3 grid, cudaStream_t s);
// dtype: DUO_F16, DUO_BF16 or DUO_INT4 (dequantized into f16 stages); grid = (ceil(M / PREFILL_ROWS), nkv, splits).
cudaError_t launch_prefill(const AttendArgs& a, int dtype, int head_dim, dim3 grid, cudaStream_t s);
// out[r] = merge over `splits` partials of row r (r < rows = nkv * M), the log-sum-exp merge of reference mergeState.
cudaError_t launch_merge(const float* part_o, const float* part_lse, float* out, float* lse, int64_t rows, int splits,
                         int head_dim, cudaStream_t s);
// tiles[segs[i].first_tile + j] = tile j of segment i, for the n segments (positions: the explicit positions).
cudaError_t launch_expand_tiles(const SegmentDesc* segs, int n, const int32_t* positions, KeyTile* tiles,
                                cudaStream_t s);
// dst[rows[i]] = src[i] for n rows of row_elems = row_heads * head_dim f32 values each, converted to dtype; for
// DUO_INT8 / DUO_INT4 each head's head_dim values become one record (dtype.cuh) of destination row rows[i].
cudaError_t launch_append(const float* src, const int32_t* rows, void* dst, int dtype, int64_t n, int64_t row_elems,
                          int head_dim, cudaStream_t s);
// Row moves of device tensors (append's src gather, attend's q gather and out / lse scatter): for r < n,
// dst row (dst_rows ? dst_rows[r] : r) = src row (src_rows ? src_rows[r] : r), rows of len f32 each; with src NULL,
// the dst rows are filled with `fill` instead.
cudaError_t launch_move_rows(const float* src, const int32_t* src_rows, float* dst, const int32_t* dst_rows, int64_t n,
                             int64_t len, float fill, cudaStream_t s);
// Blocks of the kernel launch_decode / launch_prefill would run that fit on one SM at once (registers, shared memory
// and threads: cudaOccupancyMaxActiveBlocksPerMultiprocessor), at least 1; computed once per kernel.
int decode_blocks_per_sm(int dtype, int head_dim, int rows);
int prefill_blocks_per_sm(int dtype, int head_dim);
// Once per process: raise the dynamic shared memory limit of the tensor-core kernels.
cudaError_t configure_kernels();
