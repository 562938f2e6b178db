// duo_append: validate, gather the kept tokens' selected heads into pinned memory (or, for a device tensor src, on the
// device: only the row tables are uploaded), upload, convert (or quantize into int8 / int4 records) on the device.
#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "context.h"
#include "error.h"
#include "kernels.h"

namespace {

constexpr const char* FN = "duo_append";

int32_t append(const int32_t* P, const float* src, const int32_t* heads, const int32_t* rows) {
  if (!P) return fail(DUO_ERR_ARGUMENT, "%s: params is NULL (expected int32_t[%d])", FN, DUO_APPEND_PARAMS);
  const int32_t dst = P[DUO_APPEND_DST], dtype = P[DUO_APPEND_DTYPE], row_heads = P[DUO_APPEND_ROW_HEADS],
                D = P[DUO_APPEND_HEAD_DIM], T = P[DUO_APPEND_TOKENS], src_heads = P[DUO_APPEND_SRC_HEADS];
  const uint32_t src_buf = static_cast<uint32_t>(P[DUO_APPEND_SRC_BUF]);
  if (!dtype_valid(dtype)) {
    return fail(DUO_ERR_ARGUMENT, "%s: dtype must be 0 (f32), 1 (f16), 2 (bf16), 3 (int8) or 4 (int4), got %d", FN,
                dtype);
  }
  if (row_heads < 1) return fail(DUO_ERR_ARGUMENT, "%s: row_heads must be >= 1, got %d", FN, row_heads);
  if (D < 1) return fail(DUO_ERR_ARGUMENT, "%s: head_dim must be >= 1, got %d", FN, D);
  if (dtype == DUO_INT4 && D % 2 != 0) {
    return fail(DUO_ERR_UNSUPPORTED, "%s: int4 packs two values per byte: head_dim must be even, got %d", FN, D);
  }
  if (T < 0) return fail(DUO_ERR_ARGUMENT, "%s: tokens must be >= 0, got %d", FN, T);
  if (src_heads < 1) return fail(DUO_ERR_ARGUMENT, "%s: src_heads must be >= 1, got %d", FN, src_heads);
  if (T == 0) return DUO_OK;
  if (!heads || !rows) return fail(DUO_ERR_ARGUMENT, "%s: heads and rows must not be NULL", FN);
  if ((src != nullptr) == (src_buf != 0)) {
    return fail(DUO_ERR_ARGUMENT, "%s: src must be a host array with params[DUO_APPEND_SRC_BUF] = 0, or NULL with a "
                "device tensor there; got %s with buffer %u", FN, src ? "a host array" : "NULL", src_buf);
  }
  for (int j = 0; j < row_heads; ++j) {
    if (heads[j] < 0 || heads[j] >= src_heads) {
      return fail(DUO_ERR_ARGUMENT, "%s: heads[%d] must be in [0, src_heads = %d), got %d", FN, j, src_heads, heads[j]);
    }
  }
  for (int t = 0; t < T; ++t) {
    if (rows[t] < -1) return fail(DUO_ERR_ARGUMENT, "%s: rows[%d] must be a row >= 0 or -1 (skip), got %d", FN, t, rows[t]);
  }

  DUO_TRY(require_init(FN));
  Context& c = ctx();
  Buffer* b = nullptr;
  DUO_TRY(lookup(static_cast<uint32_t>(dst), FN, "dst", &b));
  float* dev_src = nullptr;  // [T, src_heads, D] f32 of a device tensor src
  if (src_buf != 0) {
    if (static_cast<int64_t>(T) * src_heads > INT32_MAX) {
      return fail(DUO_ERR_ARGUMENT, "%s: a device src needs tokens x src_heads < 2^31, got %d x %d", FN, T, src_heads);
    }
    DUO_TRY(device_f32(FN, "src", src_buf, param_offset(P, DUO_APPEND_SRC_OFF_LO),
                       static_cast<uint64_t>(T) * src_heads * D, &dev_src));
  }
  const uint64_t row_bytes = static_cast<uint64_t>(row_heads) * head_bytes(dtype, D);
  const uint64_t capacity = b->bytes / row_bytes;

  // (row, token) of every kept token; when tokens share a row the later one wins, as if written in order.
  std::vector<std::pair<int32_t, int32_t>> kept;
  kept.reserve(T);
  for (int t = 0; t < T; ++t) {
    if (rows[t] < 0) continue;
    if (static_cast<uint64_t>(rows[t]) >= capacity) {
      return fail(DUO_ERR_CAPACITY, "%s: rows[%d] = %d is past the buffer's %llu rows (%d heads x %d)", FN, t, rows[t],
                  (unsigned long long)capacity, row_heads, D);
    }
    kept.emplace_back(rows[t], t);
  }
  std::stable_sort(kept.begin(), kept.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  size_t n = 0;
  for (size_t i = 0; i < kept.size(); ++i) {
    if (i + 1 < kept.size() && kept[i + 1].first == kept[i].first) continue;  // a later token writes this row
    kept[n++] = kept[i];
  }
  if (n == 0) return DUO_OK;

  // Upload: src rows [n][row_heads][D] f32 | destination rows [n] | with a device src, instead of the src rows, the
  // source row (of D floats) of each [n][row_heads] head, gathered on the device into the first area.
  const size_t row_elems = static_cast<size_t>(row_heads) * D;
  const size_t off_rows = align256(n * row_elems * sizeof(float));
  const size_t off_src_rows = off_rows + align256(n * sizeof(int32_t));
  const size_t bytes = off_src_rows + (dev_src ? align256(n * row_heads * sizeof(int32_t)) : 0);
  char* up = nullptr;
  char* dev = nullptr;
  DUO_TRY(reserve_pinned_up(bytes, reinterpret_cast<void**>(&up)));
  DUO_TRY(reserve_scratch(bytes, reinterpret_cast<void**>(&dev)));
  float* up_src = reinterpret_cast<float*>(up);
  int32_t* up_rows = reinterpret_cast<int32_t*>(up + off_rows);
  int32_t* up_src_rows = reinterpret_cast<int32_t*>(up + off_src_rows);
  for (size_t i = 0; i < n; ++i) {
    const size_t t = static_cast<size_t>(kept[i].second);
    for (int j = 0; j < row_heads; ++j) {
      if (dev_src) {
        up_src_rows[i * row_heads + j] = static_cast<int32_t>(t * src_heads + heads[j]);
      } else {
        memcpy(up_src + (i * row_heads + j) * D, src + (t * src_heads + heads[j]) * D, sizeof(float) * D);
      }
    }
    up_rows[i] = kept[i].first;
  }
  const size_t from = dev_src ? off_rows : 0;  // a device src uploads the tables only
  DUO_CUDA(cudaMemcpyAsync(dev + from, up + from, bytes - from, cudaMemcpyHostToDevice, c.stream));
  DUO_CUDA(cudaEventRecord(c.upload_done, c.stream));
  DUO_CUDA(cudaEventRecord(c.t0, c.stream));
  if (dev_src) {
    DUO_CUDA(launch_move_rows(dev_src, reinterpret_cast<const int32_t*>(dev + off_src_rows), reinterpret_cast<float*>(dev),
                              nullptr, static_cast<int64_t>(n) * row_heads, D, 0.f, c.stream));
  }
  DUO_CUDA(launch_append(reinterpret_cast<const float*>(dev), reinterpret_cast<const int32_t*>(dev + off_rows), b->ptr,
                         dtype, static_cast<int64_t>(n), static_cast<int64_t>(row_elems), D, c.stream));
  DUO_CUDA(cudaEventRecord(c.t1, c.stream));
  c.timing_valid = true;
  return DUO_OK;
}

}  // namespace

extern "C" DUO_API int32_t duo_append(const int32_t* params, const float* src, const int32_t* heads,
                                      const int32_t* rows) {
  return guarded(FN, [&]() { return append(params, src, heads, rows); });
}
