// The key-tile table of an attend, written on the device from the uploaded segment descriptors (kernels.h).
#include <climits>

#include "kernels.h"

namespace {

constexpr int THREADS = 64;

// One block per segment; thread j writes tiles j, j + THREADS, ... of it.
__global__ void expand_tiles_kernel(const SegmentDesc* __restrict__ segs, const int32_t* __restrict__ positions,
                                    KeyTile* __restrict__ tiles) {
  const SegmentDesc s = segs[blockIdx.x];
  const int n = (s.row_count + TILE_KEYS - 1) / TILE_KEYS;
  for (int j = threadIdx.x; j < n; j += THREADS) {
    KeyTile t{};
    t.k = s.k;
    t.v = s.v;
    t.row0 = s.row_start + j * TILE_KEYS;
    t.rows = min(TILE_KEYS, s.row_count - j * TILE_KEYS);
    t.row_heads = s.row_heads;
    if (s.pos_index < 0) {
      t.pos_index = -1;
      t.pos0 = s.pos0 + j * TILE_KEYS;
      t.pos_min = t.pos0;
      t.pos_max = t.pos0 + t.rows - 1;
    } else {
      t.pos_index = s.pos_index + j * TILE_KEYS;
      t.pos0 = 0;
      t.pos_min = INT_MAX;
      t.pos_max = INT_MIN;
      for (int r = 0; r < t.rows; ++r) {
        t.pos_min = min(t.pos_min, positions[t.pos_index + r]);
        t.pos_max = max(t.pos_max, positions[t.pos_index + r]);
      }
    }
    tiles[s.first_tile + j] = t;
  }
}

}  // namespace

cudaError_t launch_expand_tiles(const SegmentDesc* segs, int n, const int32_t* positions, KeyTile* tiles,
                                cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  DUO_LAUNCH(expand_tiles_kernel, static_cast<unsigned>(n), THREADS, 0, s, segs, positions, tiles);
  return cudaGetLastError();
}
