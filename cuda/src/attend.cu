// duo_attend: validate the call, describe the visible segments, plan split-KV, launch, merge, copy the rows back.
//
// Data flow of one call (all on the context's stream):
//   host q [T, Hq, D] --gather covered heads--> pinned [nkv][M][D] --H2D--> scratch  (with kv_slots, segment
//   descriptors, positions); expand_tiles -> key-tile table (device only)
//   kernels (one launch per KV dtype present) -> partials [splits][nkv][M][D] -> merge -> out [nkv][M][D]
//   out --D2H--> pinned --scatter--> host out [T, Hq, D] (only the covered heads' rows) and lse [T, Hq]
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "context.h"
#include "error.h"
#include "kernels.h"

namespace {

constexpr const char* FN = "duo_attend";

struct Plan {
  std::vector<SegmentDesc> segments[DUO_DTYPES];  // per dtype; first_tile counts from the dtype's first tile
  int ntiles[DUO_DTYPES] = {};                    // tiles of those segments
  int kernel_rows[DUO_DTYPES] = {};               // CUDA-core rows per CTA, or 0 for the tensor-core kernel
  int row_groups[DUO_DTYPES] = {};
  int splits[DUO_DTYPES] = {};
  int tiles_per_split[DUO_DTYPES] = {};
};

int pow2_at_least(int n) {
  int p = 1;
  while (p < n) p *= 2;
  return p;
}

// Key chunks per KV head: enough CTAs to fill every SM with as many blocks as fit on it at once (`slots` = SMs x
// blocks per SM, from the kernel's occupancy), at least 4 tiles (256 keys) per chunk.
int choose_splits(int ntiles, int64_t ctas, int requested, int64_t slots) {
  int n = 1;
  if (requested > 0) {
    n = requested;
  } else if (ctas < slots) {
    const int64_t want = (slots + ctas - 1) / ctas;
    n = static_cast<int>(std::min<int64_t>(want, ntiles / 4));
  }
  return std::max(1, std::min({n, ntiles, 65535}));
}

int32_t validate_segment(const int32_t* s, int i, int32_t npos, int32_t max_slot) {
  const int32_t dtype = s[DUO_SEG_DTYPE], heads = s[DUO_SEG_ROW_HEADS], start = s[DUO_SEG_ROW_START],
                count = s[DUO_SEG_ROW_COUNT], pos0 = s[DUO_SEG_POS0], pidx = s[DUO_SEG_POS_INDEX];
  if (!dtype_valid(dtype)) {
    return fail(DUO_ERR_ARGUMENT, "%s: segment %d: dtype must be 0 (f32), 1 (f16), 2 (bf16), 3 (int8) or 4 (int4), got %d",
                FN, i, dtype);
  }
  if (heads < 1) return fail(DUO_ERR_ARGUMENT, "%s: segment %d: row_heads must be >= 1, got %d", FN, i, heads);
  if (max_slot >= heads) {
    return fail(DUO_ERR_ARGUMENT, "%s: segment %d: kv_slots must be in [0, row_heads = %d), got %d", FN, i, heads,
                max_slot);
  }
  if (start < 0) return fail(DUO_ERR_ARGUMENT, "%s: segment %d: row_start must be >= 0, got %d", FN, i, start);
  if (count < 0) return fail(DUO_ERR_ARGUMENT, "%s: segment %d: row_count must be >= 0, got %d", FN, i, count);
  if (static_cast<int64_t>(start) + count > INT32_MAX) {
    return fail(DUO_ERR_ARGUMENT, "%s: segment %d: row_start + row_count must fit in int32", FN, i);
  }
  if (pidx < 0) {
    if (pidx != -1) return fail(DUO_ERR_ARGUMENT, "%s: segment %d: pos_index must be -1 or >= 0, got %d", FN, i, pidx);
    if (pos0 < 0 || static_cast<int64_t>(pos0) + count > INT32_MAX) {
      return fail(DUO_ERR_ARGUMENT, "%s: segment %d: consecutive positions [%d, %d + %d) must be within [0, 2^31)", FN,
                  i, pos0, pos0, count);
    }
  } else if (static_cast<int64_t>(pidx) + count > npos) {
    return fail(DUO_ERR_ARGUMENT, "%s: segment %d: positions [%d, %d + %d) are past the %d positions given", FN, i,
                pidx, pidx, count, npos);
  }
  return DUO_OK;
}

// Check each segment's buffers and keep the segments that some query token in [tlo, thi] can see (the kernels skip
// the tiles of a kept segment that their rows cannot see).
int32_t plan_segments(const int32_t* seg, int32_t nseg, const int32_t* positions, int32_t D, int32_t tlo, int32_t thi,
                      int32_t sink, int32_t recent, Plan& plan) {
  for (int i = 0; i < nseg; ++i) {
    const int32_t* s = seg + static_cast<int64_t>(i) * DUO_SEG_FIELDS;
    const int32_t dtype = s[DUO_SEG_DTYPE], heads = s[DUO_SEG_ROW_HEADS], start = s[DUO_SEG_ROW_START],
                  count = s[DUO_SEG_ROW_COUNT], pos0 = s[DUO_SEG_POS0], pidx = s[DUO_SEG_POS_INDEX];
    char what[48];
    Buffer *kb = nullptr, *vb = nullptr;
    snprintf(what, sizeof what, "segment %d k", i);
    DUO_TRY(lookup(static_cast<uint32_t>(s[DUO_SEG_K]), FN, what, &kb));
    snprintf(what, sizeof what, "segment %d v", i);
    DUO_TRY(lookup(static_cast<uint32_t>(s[DUO_SEG_V]), FN, what, &vb));
    const uint64_t need = (static_cast<uint64_t>(start) + count) * heads * head_bytes(dtype, D);
    if (need > kb->bytes || need > vb->bytes) {
      return fail(DUO_ERR_CAPACITY,
                  "%s: segment %d: rows [%d, %d) of %d heads x %d %s need %llu bytes; the k / v buffers hold %llu / "
                  "%llu",
                  FN, i, start, start + count, heads, D, dtype_name(dtype),
                  (unsigned long long)need, (unsigned long long)kb->bytes, (unsigned long long)vb->bytes);
    }
    if (count == 0) continue;
    int32_t pmin = pos0, pmax = pos0 + count - 1;
    if (pidx >= 0) {
      pmin = INT32_MAX;
      pmax = INT32_MIN;
      for (int r = 0; r < count; ++r) {
        pmin = std::min(pmin, positions[pidx + r]);
        pmax = std::max(pmax, positions[pidx + r]);
      }
    }
    if (tile_masked(pmin, pmax, tlo, thi, sink, recent)) continue;
    plan.segments[dtype].push_back(SegmentDesc{kb->ptr, vb->ptr, start, count, heads, pos0, pidx, plan.ntiles[dtype]});
    plan.ntiles[dtype] += (count + TILE_KEYS - 1) / TILE_KEYS;
  }
  return DUO_OK;
}

// idx[j * T + t] = t * groups + q_heads[j]: for packed row j * T + t of the kernels (G query heads of KV head j at
// token t), its row in a [T, groups = Hq / G] view of q / out (rows of G * D floats) or lse (rows of G floats).
void group_rows(int32_t* idx, const int32_t* q_heads, int32_t nkv, int32_t T, int32_t groups) {
  for (int j = 0; j < nkv; ++j) {
    for (int t = 0; t < T; ++t) idx[static_cast<size_t>(j) * T + t] = t * groups + q_heads[j];
  }
}

// A device out (and lse) of a call that sees no key: zeros and lse = -inf in the covered rows, on the device.
int32_t no_keys_on_device(const int32_t* q_heads, int32_t nkv, int32_t T, int32_t G, int32_t Hq, int32_t D, float* out,
                          float* lse) {
  Context& c = ctx();
  const size_t bytes = align256(static_cast<size_t>(nkv) * T * sizeof(int32_t));
  char* up = nullptr;
  char* dev = nullptr;
  DUO_TRY(reserve_pinned_up(bytes, reinterpret_cast<void**>(&up)));
  DUO_TRY(reserve_scratch(bytes, reinterpret_cast<void**>(&dev)));
  group_rows(reinterpret_cast<int32_t*>(up), q_heads, nkv, T, Hq / G);
  DUO_CUDA(cudaMemcpyAsync(dev, up, bytes, cudaMemcpyHostToDevice, c.stream));
  DUO_CUDA(cudaEventRecord(c.upload_done, c.stream));
  const int32_t* idx = reinterpret_cast<const int32_t*>(dev);
  DUO_CUDA(launch_move_rows(nullptr, nullptr, out, idx, static_cast<int64_t>(nkv) * T, static_cast<int64_t>(G) * D, 0.f,
                            c.stream));
  if (lse) DUO_CUDA(launch_move_rows(nullptr, nullptr, lse, idx, static_cast<int64_t>(nkv) * T, G, -INFINITY, c.stream));
  c.timing_valid = false;  // no attention kernel ran (as on the host path)
  return DUO_OK;
}

int32_t attend(const int32_t* P, const float* q, const int32_t* q_heads, const int32_t* kv_slots,
               const int32_t* seg, const int32_t* positions, float* out, float* lse) {
  if (!P) return fail(DUO_ERR_ARGUMENT, "%s: params is NULL (expected int32_t[%d])", FN, DUO_ATTEND_PARAMS);
  const int32_t T = P[DUO_ATTEND_TOKENS], Hq = P[DUO_ATTEND_NUM_HEADS], D = P[DUO_ATTEND_HEAD_DIM],
                G = P[DUO_ATTEND_GROUP], nkv = P[DUO_ATTEND_KV_HEADS], nseg = P[DUO_ATTEND_SEGMENTS],
                npos = P[DUO_ATTEND_POSITIONS], qpos0 = P[DUO_ATTEND_QPOS0], sink = P[DUO_ATTEND_SINK],
                recent = P[DUO_ATTEND_RECENT], requested = P[DUO_ATTEND_SPLITS];
  const uint32_t q_buf = static_cast<uint32_t>(P[DUO_ATTEND_Q_BUF]), out_buf = static_cast<uint32_t>(P[DUO_ATTEND_OUT_BUF]),
                 lse_buf = static_cast<uint32_t>(P[DUO_ATTEND_LSE_BUF]);
  if (T < 0) return fail(DUO_ERR_ARGUMENT, "%s: tokens must be >= 0, got %d", FN, T);
  if (D != 64 && D != 128) {
    return fail(DUO_ERR_UNSUPPORTED, "%s: head_dim must be 64 or 128 (the sizes the kernels are built for), got %d",
                FN, D);
  }
  if (G < 1) return fail(DUO_ERR_ARGUMENT, "%s: group must be >= 1, got %d", FN, G);
  if (Hq < 1 || Hq % G != 0) {
    return fail(DUO_ERR_ARGUMENT, "%s: num_heads must be a positive multiple of group %d, got %d", FN, G, Hq);
  }
  if (nkv < 0 || nkv > Hq / G || nkv > 65535) {
    return fail(DUO_ERR_ARGUMENT, "%s: kv_heads must be in [0, num_heads / group = %d], got %d", FN, Hq / G, nkv);
  }
  if (nseg < 0) return fail(DUO_ERR_ARGUMENT, "%s: segments must be >= 0, got %d", FN, nseg);
  if (npos < 0) return fail(DUO_ERR_ARGUMENT, "%s: positions must be >= 0, got %d", FN, npos);
  if (qpos0 < 0 || static_cast<int64_t>(qpos0) + T >= INT32_MAX) {
    return fail(DUO_ERR_ARGUMENT, "%s: qpos0 must be >= 0 with qpos0 + tokens < 2^31 - 1, got %d + %d", FN, qpos0, T);
  }
  const bool window = sink != -1 || recent != -1;
  if (window && (sink < 0 || recent < 0)) {
    return fail(DUO_ERR_ARGUMENT, "%s: window must be sink >= 0 and recent >= 0, or both -1 (no window), got %d, %d",
                FN, sink, recent);
  }
  if (requested < 0) return fail(DUO_ERR_ARGUMENT, "%s: splits must be >= 0 (0 = automatic), got %d", FN, requested);
  if (static_cast<int64_t>(T) * G > INT32_MAX) {
    return fail(DUO_ERR_ARGUMENT, "%s: tokens x group must be < 2^31, got %d x %d", FN, T, G);
  }
  if (T == 0 || nkv == 0) return DUO_OK;
  if (!q_heads || !kv_slots) return fail(DUO_ERR_ARGUMENT, "%s: q_heads and kv_slots must not be NULL", FN);
  if ((q != nullptr) == (q_buf != 0)) {
    return fail(DUO_ERR_ARGUMENT, "%s: q must be a host array with params[DUO_ATTEND_Q_BUF] = 0, or NULL with a device "
                "tensor there; got %s with buffer %u", FN, q ? "a host array" : "NULL", q_buf);
  }
  if ((out != nullptr) == (out_buf != 0)) {
    return fail(DUO_ERR_ARGUMENT, "%s: out must be a host array with params[DUO_ATTEND_OUT_BUF] = 0, or NULL with a "
                "device tensor there; got %s with buffer %u", FN, out ? "a host array" : "NULL", out_buf);
  }
  if ((lse != nullptr && out_buf != 0) || (lse_buf != 0 && out_buf == 0)) {
    return fail(DUO_ERR_ARGUMENT, "%s: out and lse must both be host arrays or both device tensors (lse may be absent)",
                FN);
  }
  if (nseg > 0 && !seg) return fail(DUO_ERR_ARGUMENT, "%s: segments is NULL for %d segments", FN, nseg);
  if (npos > 0 && !positions) return fail(DUO_ERR_ARGUMENT, "%s: positions is NULL for %d positions", FN, npos);
  int32_t max_slot = 0;
  for (int j = 0; j < nkv; ++j) {
    if (q_heads[j] < 0 || q_heads[j] >= Hq / G) {
      return fail(DUO_ERR_ARGUMENT, "%s: q_heads[%d] must be in [0, num_heads / group = %d), got %d", FN, j, Hq / G,
                  q_heads[j]);
    }
    if (kv_slots[j] < 0) return fail(DUO_ERR_ARGUMENT, "%s: kv_slots[%d] must be >= 0, got %d", FN, j, kv_slots[j]);
    max_slot = std::max(max_slot, kv_slots[j]);
  }
  for (int i = 0; i < nseg; ++i) DUO_TRY(validate_segment(seg + static_cast<int64_t>(i) * DUO_SEG_FIELDS, i, npos, max_slot));

  DUO_TRY(require_init(FN));
  Context& c = ctx();
  const int32_t M = T * G;
  // Device tensors [T, Hq, D] (q, out) and [T, Hq] (lse); with a device out the call does not wait for the kernels.
  float *dev_q = nullptr, *dev_out = nullptr, *dev_lse = nullptr;
  const uint64_t qo_elems = static_cast<uint64_t>(T) * Hq * D;
  if (q_buf) DUO_TRY(device_f32(FN, "q", q_buf, param_offset(P, DUO_ATTEND_Q_OFF_LO), qo_elems, &dev_q));
  if (out_buf) DUO_TRY(device_f32(FN, "out", out_buf, param_offset(P, DUO_ATTEND_OUT_OFF_LO), qo_elems, &dev_out));
  if (lse_buf) {
    DUO_TRY(device_f32(FN, "lse", lse_buf, param_offset(P, DUO_ATTEND_LSE_OFF_LO), static_cast<uint64_t>(T) * Hq,
                       &dev_lse));
    const uint64_t lse_elems = static_cast<uint64_t>(T) * Hq;
    const uintptr_t o = reinterpret_cast<uintptr_t>(dev_out), l = reinterpret_cast<uintptr_t>(dev_lse);
    if (l < o + 4 * qo_elems && o < l + 4 * lse_elems) {
      return fail(DUO_ERR_ARGUMENT, "%s: the device tensors out and lse overlap; they must be disjoint", FN);
    }
  }
  Plan plan;
  DUO_TRY(plan_segments(seg, nseg, positions, D, qpos0, qpos0 + T - 1, window ? sink : -1, window ? recent : -1, plan));

  int total_splits = 0;
  size_t ntiles = 0, nsegs = 0;
  for (int dt = 0; dt < DUO_DTYPES; ++dt) {
    const int n = plan.ntiles[dt];
    if (n == 0) continue;
    // Query blocks go to the tensor-core kernel, whose operands are f16 / bf16: f16 and bf16 caches, and int4 ones
    // (every int4 value is an f16 value: dequantized exactly into its f16 stages). f32 and int8 values are not f16
    // values: those caches take the CUDA-core kernel at every query length (f32 accuracy, not the mma's speed).
    const bool tensor_cores = (dt == DUO_F16 || dt == DUO_BF16 || dt == DUO_INT4) && M > 2 * DECODE_MAX_ROWS;
    plan.kernel_rows[dt] = tensor_cores ? 0 : std::min(DECODE_MAX_ROWS, pow2_at_least(M));
    const int rows = tensor_cores ? PREFILL_ROWS : plan.kernel_rows[dt];
    plan.row_groups[dt] = (M + rows - 1) / rows;
    const int per_sm = tensor_cores ? prefill_blocks_per_sm(dt, D) : decode_blocks_per_sm(dt, D, plan.kernel_rows[dt]);
    plan.splits[dt] = choose_splits(n, static_cast<int64_t>(plan.row_groups[dt]) * nkv, requested,
                                    static_cast<int64_t>(c.sm_count) * per_sm);
    plan.tiles_per_split[dt] = (n + plan.splits[dt] - 1) / plan.splits[dt];
    plan.splits[dt] = (n + plan.tiles_per_split[dt] - 1) / plan.tiles_per_split[dt];
    total_splits += plan.splits[dt];
    ntiles += n;
    nsegs += plan.segments[dt].size();
  }

  const size_t rows_out = static_cast<size_t>(nkv) * M;  // packed output rows
  if (ntiles == 0 && dev_out) return no_keys_on_device(q_heads, nkv, T, G, Hq, D, dev_out, dev_lse);
  if (ntiles == 0) {  // no key is visible to any query: zeros and lse = -inf
    for (int j = 0; j < nkv; ++j) {
      for (int t = 0; t < T; ++t) {
        const size_t h0 = static_cast<size_t>(t) * Hq + static_cast<size_t>(q_heads[j]) * G;
        memset(out + h0 * D, 0, sizeof(float) * G * D);
        if (lse) for (int g = 0; g < G; ++g) lse[h0 + g] = -INFINITY;
      }
    }
    c.timing_valid = false;
    return DUO_OK;
  }

  // Upload area: q [nkv][M][D] | kv_slots [nkv] | segment descriptors | positions [npos] | with a device q or out,
  // group_rows [nkv * T] (a device q is gathered into the first area on the device, not uploaded).
  const bool on_device = dev_q || dev_out;
  const size_t q_bytes = rows_out * D * sizeof(float);
  const size_t off_slots = align256(q_bytes);
  const size_t off_segs = off_slots + align256(nkv * sizeof(int32_t));
  const size_t off_pos = off_segs + align256(nsegs * sizeof(SegmentDesc));
  const size_t off_idx = off_pos + align256(static_cast<size_t>(npos) * sizeof(int32_t));
  const size_t up_bytes = off_idx + (on_device ? align256(static_cast<size_t>(nkv) * T * sizeof(int32_t)) : 0);
  // Device: upload mirror | tiles | partials (only with more than one split) | out [nkv][M][D] | lse [nkv][M].
  const size_t tiles_bytes = align256(ntiles * sizeof(KeyTile));
  const size_t part_o_bytes = total_splits > 1 ? align256(total_splits * rows_out * D * sizeof(float)) : 0;
  const size_t part_lse_bytes = total_splits > 1 ? align256(total_splits * rows_out * sizeof(float)) : 0;
  const size_t out_o_bytes = align256(rows_out * D * sizeof(float));
  const size_t out_lse_bytes = align256(rows_out * sizeof(float));

  char* up = nullptr;
  char* dev = nullptr;
  char* down = nullptr;
  DUO_TRY(reserve_pinned_up(up_bytes, reinterpret_cast<void**>(&up)));
  DUO_TRY(reserve_scratch(up_bytes + tiles_bytes + part_o_bytes + part_lse_bytes + out_o_bytes + out_lse_bytes,
                          reinterpret_cast<void**>(&dev)));
  if (!dev_out) DUO_TRY(reserve_pinned_down(out_o_bytes + out_lse_bytes, reinterpret_cast<void**>(&down)));

  float* up_q = reinterpret_cast<float*>(up);
  if (on_device) group_rows(reinterpret_cast<int32_t*>(up + off_idx), q_heads, nkv, T, Hq / G);
  const int32_t* dev_idx = reinterpret_cast<const int32_t*>(dev + off_idx);
  for (int j = 0; j < nkv && !dev_q; ++j) {
    for (int t = 0; t < T; ++t) {
      const size_t src = (static_cast<size_t>(t) * Hq + static_cast<size_t>(q_heads[j]) * G) * D;
      memcpy(up_q + (static_cast<size_t>(j) * M + static_cast<size_t>(t) * G) * D, q + src, sizeof(float) * G * D);
    }
  }
  memcpy(up + off_slots, kv_slots, nkv * sizeof(int32_t));
  int tile_offset[DUO_DTYPES] = {};  // the tiles of dtype dt start at tile_offset[dt]
  {
    SegmentDesc* dst = reinterpret_cast<SegmentDesc*>(up + off_segs);
    int at = 0;
    for (int dt = 0; dt < DUO_DTYPES; ++dt) {
      tile_offset[dt] = at;
      for (SegmentDesc d : plan.segments[dt]) {
        d.first_tile += at;
        *dst++ = d;
      }
      at += plan.ntiles[dt];
    }
  }
  if (npos > 0) memcpy(up + off_pos, positions, npos * sizeof(int32_t));
  const size_t from = dev_q ? off_slots : 0;  // a device q is gathered below instead
  DUO_CUDA(cudaMemcpyAsync(dev + from, up + from, up_bytes - from, cudaMemcpyHostToDevice, c.stream));
  DUO_CUDA(cudaEventRecord(c.upload_done, c.stream));
  if (dev_q) {
    DUO_CUDA(launch_move_rows(dev_q, dev_idx, reinterpret_cast<float*>(dev), nullptr, static_cast<int64_t>(nkv) * T,
                              static_cast<int64_t>(G) * D, 0.f, c.stream));
  }

  KeyTile* tiles = reinterpret_cast<KeyTile*>(dev + up_bytes);
  char* after_tiles = dev + up_bytes + tiles_bytes;
  float* part_o = reinterpret_cast<float*>(after_tiles);
  float* part_lse = reinterpret_cast<float*>(after_tiles + part_o_bytes);
  float* out_o = reinterpret_cast<float*>(after_tiles + part_o_bytes + part_lse_bytes);
  float* out_lse = reinterpret_cast<float*>(after_tiles + part_o_bytes + part_lse_bytes + out_o_bytes);

  DUO_CUDA(cudaEventRecord(c.t0, c.stream));
  DUO_CUDA(launch_expand_tiles(reinterpret_cast<const SegmentDesc*>(dev + off_segs), static_cast<int>(nsegs),
                               reinterpret_cast<const int32_t*>(dev + off_pos), tiles, c.stream));
  AttendArgs a{};
  a.q = reinterpret_cast<const float*>(dev);
  a.positions = reinterpret_cast<const int32_t*>(dev + off_pos);
  a.kv_slots = reinterpret_cast<const int32_t*>(dev + off_slots);
  a.o = total_splits > 1 ? part_o : out_o;
  a.lse = total_splits > 1 ? part_lse : out_lse;
  a.M = M;
  a.G = G;
  a.nkv = nkv;
  a.qpos0 = qpos0;
  a.sink = window ? sink : -1;
  a.recent = window ? recent : -1;
  a.scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(D)));
  int split_base = 0;
  for (int dt = 0; dt < DUO_DTYPES; ++dt) {
    if (plan.ntiles[dt] == 0) continue;
    a.tiles = tiles + tile_offset[dt];
    a.ntiles = plan.ntiles[dt];
    a.tiles_per_split = plan.tiles_per_split[dt];
    a.split_base = split_base;
    const dim3 grid(plan.row_groups[dt], nkv, plan.splits[dt]);
    if (plan.kernel_rows[dt] > 0) {
      DUO_CUDA(launch_decode(a, dt, D, plan.kernel_rows[dt], grid, c.stream));
    } else {
      DUO_CUDA(launch_prefill(a, dt, D, grid, c.stream));
    }
    split_base += plan.splits[dt];
  }
  if (total_splits > 1) DUO_CUDA(launch_merge(part_o, part_lse, out_o, out_lse, rows_out, total_splits, D, c.stream));
  DUO_CUDA(cudaEventRecord(c.t1, c.stream));
  c.timing_valid = true;

  if (dev_out) {  // scatter into the caller's device tensors; stream order, no wait
    DUO_CUDA(launch_move_rows(out_o, nullptr, dev_out, dev_idx, static_cast<int64_t>(nkv) * T,
                              static_cast<int64_t>(G) * D, 0.f, c.stream));
    if (dev_lse) {
      DUO_CUDA(launch_move_rows(out_lse, nullptr, dev_lse, dev_idx, static_cast<int64_t>(nkv) * T, G, 0.f, c.stream));
    }
    return DUO_OK;
  }
  DUO_CUDA(cudaMemcpyAsync(down, out_o, rows_out * D * sizeof(float), cudaMemcpyDeviceToHost, c.stream));
  if (lse) {
    DUO_CUDA(cudaMemcpyAsync(down + out_o_bytes, out_lse, rows_out * sizeof(float), cudaMemcpyDeviceToHost, c.stream));
  }
  DUO_CUDA(cudaStreamSynchronize(c.stream));

  const float* down_o = reinterpret_cast<const float*>(down);
  const float* down_lse = reinterpret_cast<const float*>(down + out_o_bytes);
  for (int j = 0; j < nkv; ++j) {
    for (int t = 0; t < T; ++t) {
      const size_t h0 = static_cast<size_t>(t) * Hq + static_cast<size_t>(q_heads[j]) * G;
      const size_t r0 = static_cast<size_t>(j) * M + static_cast<size_t>(t) * G;
      memcpy(out + h0 * D, down_o + r0 * D, sizeof(float) * G * D);
      if (lse) memcpy(lse + h0, down_lse + r0, sizeof(float) * G);
    }
  }
  return DUO_OK;
}

}  // namespace

extern "C" DUO_API int32_t duo_attend(const int32_t* params, const float* q, const int32_t* q_heads,
                                      const int32_t* kv_slots, const int32_t* segments, const int32_t* positions,
                                      float* out, float* lse) {
  return guarded(FN, [&]() { return attend(params, q, q_heads, kv_slots, segments, positions, out, lse); });
}
