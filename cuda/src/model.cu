// The model entry points of duo.h (duo_upload, duo_model_*): check every argument, resolve (handle, offset) tensors to
// device pointers, stage host arrays through pinned memory, and queue the kernels of kernel_model.cu. A refused call
// changes nothing: all checks come before the first copy or launch.
#include <cmath>
#include <cstring>

#include "context.h"
#include "error.h"
#include "model_kernels.h"

namespace {

// Grid-stride kernels use at most this many blocks per SM (enough to cover memory latency on hardware, and few
// fibers in the emulation build).
constexpr int BLOCKS_PER_SM = 2;
constexpr uint64_t STAGING_CHUNK = 8ull << 20;  // duo_upload copies through pinned memory this much at a time

int max_blocks() { return BLOCKS_PER_SM * (ctx().sm_count > 0 ? ctx().sm_count : 1); }

bool weight_dtype_valid(int32_t d) { return d >= DUO_W_F32 && d <= DUO_W_Q6_K; }

// (elements, bytes) of one block of a weight dtype: a row holds whole blocks.
struct Block {
  int elements;
  int bytes;
};
Block weight_block(int32_t dtype) {
  switch (dtype) {
    case DUO_W_F32: return {1, 4};
    case DUO_W_F16:
    case DUO_W_BF16: return {1, 2};
    case DUO_W_Q8_0: return {32, 34};
    case DUO_W_Q4_0: return {32, 18};
    case DUO_W_Q4_K: return {256, 144};
    default: return {256, 210};  // DUO_W_Q6_K
  }
}

// An f32 tensor of `count` elements at element `offset` of buffer `handle`.
struct Tensor {
  uint32_t handle = 0;
  uint64_t offset = 0;
  uint64_t count = 0;
  float* ptr = nullptr;
};

int32_t tensor(const char* fn, const char* what, uint32_t handle, uint64_t offset, uint64_t count, Tensor* out) {
  float* ptr = nullptr;
  DUO_TRY(device_f32(fn, what, handle, offset, count, &ptr));
  *out = Tensor{handle, offset, count, ptr};
  return DUO_OK;
}

// An output that is its input (same first element and length) is allowed where `same_ok`; any other overlap is not.
int32_t check_overlap(const char* fn, const char* a_name, const Tensor& a, const char* b_name, const Tensor& b,
                      bool same_ok) {
  if (a.handle != b.handle || a.count == 0 || b.count == 0) return DUO_OK;
  const bool overlap = a.offset < b.offset + b.count && b.offset < a.offset + a.count;
  if (!overlap || (same_ok && a.offset == b.offset && a.count == b.count)) return DUO_OK;
  return fail(DUO_ERR_ARGUMENT, "%s: %s (elements [%llu, %llu) of buffer %u) overlaps %s (elements [%llu, %llu))%s", fn,
              a_name, (unsigned long long)a.offset, (unsigned long long)(a.offset + a.count), a.handle, b_name,
              (unsigned long long)b.offset, (unsigned long long)(b.offset + b.count),
              same_ok ? "; it may be the same tensor, or disjoint" : "; they must be disjoint");
}

// A weight matrix [rows, cols] of dtype: a buffer of at least its bytes.
int32_t matrix(const char* fn, const char* what, uint32_t handle, int32_t dtype, int32_t rows, int32_t cols,
               const void** out) {
  if (!weight_dtype_valid(dtype)) {
    return fail(DUO_ERR_ARGUMENT,
                "%s: dtype must be 0 (f32), 1 (f16), 2 (bf16), 3 (q8_0), 4 (q4_0), 5 (q4_k) or 6 (q6_k), got %d", fn,
                dtype);
  }
  if (rows < 1 || cols < 1) return fail(DUO_ERR_ARGUMENT, "%s: %s must be at least 1 x 1, got %d x %d", fn, what, rows, cols);
  const Block blk = weight_block(dtype);
  if (cols % blk.elements != 0) {
    return fail(DUO_ERR_ARGUMENT, "%s: %s of dtype %d needs cols a multiple of %d, got %d", fn, what, dtype,
                blk.elements, cols);
  }
  Buffer* b = nullptr;
  DUO_TRY(lookup(handle, fn, what, &b));
  const uint64_t need = static_cast<uint64_t>(rows) * (cols / blk.elements) * blk.bytes;
  if (b->bytes < need) {
    return fail(DUO_ERR_CAPACITY, "%s: %s [%d, %d] needs %llu bytes, buffer %u has %llu", fn, what, rows, cols,
                (unsigned long long)need, handle, (unsigned long long)b->bytes);
  }
  *out = b->ptr;
  return DUO_OK;
}

// Copy `bytes` of host memory to the front of the device scratch through pinned staging (stream order), for the
// next kernel only: the scratch is reused by the next call that stages anything.
int32_t stage(const void* host, size_t bytes, void** dev) {
  Context& c = ctx();
  void* up = nullptr;
  DUO_TRY(reserve_pinned_up(bytes, &up));
  DUO_TRY(reserve_scratch(bytes, dev));
  memcpy(up, host, bytes);
  DUO_CUDA(cudaMemcpyAsync(*dev, up, bytes, cudaMemcpyHostToDevice, c.stream));
  DUO_CUDA(cudaEventRecord(c.upload_done, c.stream));
  return DUO_OK;
}

int32_t upload(uint32_t handle, uint64_t offset, uint64_t bytes, const void* src) {
  constexpr const char* FN = "duo_upload";
  DUO_TRY(require_init(FN));
  Buffer* b = nullptr;
  DUO_TRY(lookup(handle, FN, "handle", &b));
  if (offset > b->bytes || bytes > b->bytes - offset) {
    return fail(DUO_ERR_CAPACITY, "%s: bytes [%llu, %llu) are past the end of buffer %u (%llu bytes)", FN,
                (unsigned long long)offset, (unsigned long long)(offset + bytes), handle,
                (unsigned long long)b->bytes);
  }
  if (bytes == 0) return DUO_OK;
  if (!src) return fail(DUO_ERR_ARGUMENT, "%s: src is NULL for %llu bytes", FN, (unsigned long long)bytes);
  Context& c = ctx();
  for (uint64_t at = 0; at < bytes; at += STAGING_CHUNK) {
    const size_t n = static_cast<size_t>(bytes - at < STAGING_CHUNK ? bytes - at : STAGING_CHUNK);
    void* up = nullptr;
    DUO_TRY(reserve_pinned_up(n, &up));  // waits until the previous chunk has left it
    memcpy(up, static_cast<const char*>(src) + at, n);
    DUO_CUDA(cudaMemcpyAsync(static_cast<char*>(b->ptr) + offset + at, up, n, cudaMemcpyHostToDevice, c.stream));
    DUO_CUDA(cudaEventRecord(c.upload_done, c.stream));
  }
  return DUO_OK;
}

int32_t embed(uint32_t y, uint64_t y_off, const int32_t* ids, int32_t T, uint32_t table, int32_t rows, int32_t cols,
              int32_t dtype) {
  constexpr const char* FN = "duo_model_embed";
  if (T < 0) return fail(DUO_ERR_ARGUMENT, "%s: T must be >= 0, got %d", FN, T);
  DUO_TRY(require_init(FN));
  const void* w = nullptr;
  DUO_TRY(matrix(FN, "table", table, dtype, rows, cols, &w));
  Tensor Y;
  DUO_TRY(tensor(FN, "y", y, y_off, static_cast<uint64_t>(T) * cols, &Y));
  if (T == 0) return DUO_OK;
  if (!ids) return fail(DUO_ERR_ARGUMENT, "%s: ids is NULL (expected int32_t[%d])", FN, T);
  for (int32_t t = 0; t < T; ++t) {
    if (ids[t] < 0 || ids[t] >= rows) {
      return fail(DUO_ERR_ARGUMENT, "%s: ids[%d] must be in [0, rows = %d), got %d", FN, t, rows, ids[t]);
    }
  }
  void* dev = nullptr;
  DUO_TRY(stage(ids, sizeof(int32_t) * T, &dev));
  DUO_CUDA(launch_model_embed(Y.ptr, static_cast<const int32_t*>(dev), w, dtype, T, cols, max_blocks(), ctx().stream));
  return DUO_OK;
}

int32_t matmul(uint32_t y, uint64_t y_off, uint32_t x, uint64_t x_off, uint32_t w, int32_t dtype, uint32_t bias,
               int32_t T, int32_t cols, int32_t rows) {
  constexpr const char* FN = "duo_model_matmul";
  if (T < 0) return fail(DUO_ERR_ARGUMENT, "%s: T must be >= 0, got %d", FN, T);
  DUO_TRY(require_init(FN));
  const void* W = nullptr;
  DUO_TRY(matrix(FN, "w", w, dtype, rows, cols, &W));
  Tensor Y, X, B;
  DUO_TRY(tensor(FN, "y", y, y_off, static_cast<uint64_t>(T) * rows, &Y));
  DUO_TRY(tensor(FN, "x", x, x_off, static_cast<uint64_t>(T) * cols, &X));
  if (bias != 0) DUO_TRY(tensor(FN, "bias", bias, 0, static_cast<uint64_t>(rows), &B));
  DUO_TRY(check_overlap(FN, "y", Y, "x", X, false));
  if (Y.handle == w || (bias != 0 && Y.handle == bias)) {
    return fail(DUO_ERR_ARGUMENT, "%s: y is in the buffer of w or bias (%u)", FN, Y.handle);
  }
  DUO_CUDA(launch_model_matmul(Y.ptr, X.ptr, W, dtype, bias != 0 ? B.ptr : nullptr, T, cols, rows, ctx().stream));
  return DUO_OK;
}

int32_t rmsnorm(uint32_t y, uint64_t y_off, uint32_t x, uint64_t x_off, uint32_t w, int32_t T, int32_t n, float eps) {
  constexpr const char* FN = "duo_model_rmsnorm";
  if (T < 0) return fail(DUO_ERR_ARGUMENT, "%s: T must be >= 0, got %d", FN, T);
  if (n < 1) return fail(DUO_ERR_ARGUMENT, "%s: n must be >= 1, got %d", FN, n);
  if (!(eps >= 0 && std::isfinite(eps))) return fail(DUO_ERR_ARGUMENT, "%s: eps must be finite and >= 0, got %g", FN, eps);
  DUO_TRY(require_init(FN));
  Tensor Y, X, W;
  DUO_TRY(tensor(FN, "y", y, y_off, static_cast<uint64_t>(T) * n, &Y));
  DUO_TRY(tensor(FN, "x", x, x_off, static_cast<uint64_t>(T) * n, &X));
  DUO_TRY(tensor(FN, "w", w, 0, static_cast<uint64_t>(n), &W));
  DUO_TRY(check_overlap(FN, "y", Y, "x", X, true));
  DUO_TRY(check_overlap(FN, "y", Y, "w", W, false));
  DUO_CUDA(launch_model_rmsnorm(Y.ptr, X.ptr, W.ptr, T, n, eps, ctx().stream));
  return DUO_OK;
}

int32_t rope(uint32_t x, uint64_t x_off, const float* cos, const float* sin, int32_t T, int32_t heads,
             int32_t head_dim) {
  constexpr const char* FN = "duo_model_rope";
  if (T < 0) return fail(DUO_ERR_ARGUMENT, "%s: T must be >= 0, got %d", FN, T);
  if (heads < 1) return fail(DUO_ERR_ARGUMENT, "%s: heads must be >= 1, got %d", FN, heads);
  if (head_dim < 2 || head_dim % 2 != 0) {
    return fail(DUO_ERR_ARGUMENT, "%s: head_dim must be even and >= 2, got %d", FN, head_dim);
  }
  DUO_TRY(require_init(FN));
  Tensor X;
  DUO_TRY(tensor(FN, "x", x, x_off, static_cast<uint64_t>(T) * heads * head_dim, &X));
  if (T == 0) return DUO_OK;
  if (!cos || !sin) return fail(DUO_ERR_ARGUMENT, "%s: cos and sin must not be NULL (expected float[%d][%d])", FN, T, head_dim / 2);
  // cos | sin, one upload
  const size_t table = sizeof(float) * static_cast<size_t>(T) * (head_dim / 2);
  Context& c = ctx();
  void* up = nullptr;
  void* dev = nullptr;
  DUO_TRY(reserve_pinned_up(2 * table, &up));
  DUO_TRY(reserve_scratch(2 * table, &dev));
  memcpy(up, cos, table);
  memcpy(static_cast<char*>(up) + table, sin, table);
  DUO_CUDA(cudaMemcpyAsync(dev, up, 2 * table, cudaMemcpyHostToDevice, c.stream));
  DUO_CUDA(cudaEventRecord(c.upload_done, c.stream));
  const float* dcos = static_cast<const float*>(dev);
  const float* dsin = reinterpret_cast<const float*>(static_cast<const char*>(dev) + table);
  DUO_CUDA(launch_model_rope(X.ptr, dcos, dsin, T, heads, head_dim, max_blocks(), c.stream));
  return DUO_OK;
}

int32_t swiglu(uint32_t y, uint64_t y_off, uint32_t gate, uint64_t gate_off, uint32_t up, uint64_t up_off,
               uint64_t n) {
  constexpr const char* FN = "duo_model_swiglu";
  DUO_TRY(require_init(FN));
  Tensor Y, G, U;
  DUO_TRY(tensor(FN, "y", y, y_off, n, &Y));
  DUO_TRY(tensor(FN, "gate", gate, gate_off, n, &G));
  DUO_TRY(tensor(FN, "up", up, up_off, n, &U));
  DUO_TRY(check_overlap(FN, "y", Y, "gate", G, true));
  DUO_TRY(check_overlap(FN, "y", Y, "up", U, true));
  DUO_CUDA(launch_model_swiglu(Y.ptr, G.ptr, U.ptr, static_cast<int64_t>(n), max_blocks(), ctx().stream));
  return DUO_OK;
}

int32_t add(uint32_t y, uint64_t y_off, uint32_t x, uint64_t x_off, uint64_t n) {
  constexpr const char* FN = "duo_model_add";
  DUO_TRY(require_init(FN));
  Tensor Y, X;
  DUO_TRY(tensor(FN, "y", y, y_off, n, &Y));
  DUO_TRY(tensor(FN, "x", x, x_off, n, &X));
  DUO_TRY(check_overlap(FN, "y", Y, "x", X, true));
  DUO_CUDA(launch_model_add(Y.ptr, X.ptr, static_cast<int64_t>(n), max_blocks(), ctx().stream));
  return DUO_OK;
}

int32_t argmax(uint32_t x, uint64_t x_off, int32_t n, int32_t* out) {
  constexpr const char* FN = "duo_model_argmax";
  if (n < 1) return fail(DUO_ERR_ARGUMENT, "%s: n must be >= 1, got %d", FN, n);
  if (!out) return fail(DUO_ERR_ARGUMENT, "%s: out is NULL (expected int32_t[1])", FN);
  DUO_TRY(require_init(FN));
  Tensor X;
  DUO_TRY(tensor(FN, "x", x, x_off, static_cast<uint64_t>(n), &X));
  Context& c = ctx();
  void* dev = nullptr;
  void* down = nullptr;
  DUO_TRY(reserve_scratch(sizeof(int32_t), &dev));
  DUO_TRY(reserve_pinned_down(sizeof(int32_t), &down));
  DUO_CUDA(launch_model_argmax(X.ptr, n, static_cast<int32_t*>(dev), c.stream));
  DUO_CUDA(cudaMemcpyAsync(down, dev, sizeof(int32_t), cudaMemcpyDeviceToHost, c.stream));
  DUO_CUDA(cudaStreamSynchronize(c.stream));
  memcpy(out, down, sizeof(int32_t));
  return DUO_OK;
}

}  // namespace

extern "C" {

DUO_API int32_t duo_upload(uint32_t handle, uint64_t offset, uint64_t bytes, const void* src) {
  return guarded("duo_upload", [&]() { return upload(handle, offset, bytes, src); });
}

DUO_API int32_t duo_model_embed(uint32_t y, uint64_t y_off, const int32_t* ids, int32_t T, uint32_t table,
                                int32_t rows, int32_t cols, int32_t dtype) {
  return guarded("duo_model_embed", [&]() { return embed(y, y_off, ids, T, table, rows, cols, dtype); });
}

DUO_API int32_t duo_model_matmul(uint32_t y, uint64_t y_off, uint32_t x, uint64_t x_off, uint32_t w, int32_t dtype,
                                 uint32_t bias, int32_t T, int32_t cols, int32_t rows) {
  return guarded("duo_model_matmul", [&]() { return matmul(y, y_off, x, x_off, w, dtype, bias, T, cols, rows); });
}

DUO_API int32_t duo_model_rmsnorm(uint32_t y, uint64_t y_off, uint32_t x, uint64_t x_off, uint32_t w, int32_t T,
                                  int32_t n, float eps) {
  return guarded("duo_model_rmsnorm", [&]() { return rmsnorm(y, y_off, x, x_off, w, T, n, eps); });
}

DUO_API int32_t duo_model_rope(uint32_t x, uint64_t x_off, const float* cos, const float* sin, int32_t T,
                               int32_t heads, int32_t head_dim) {
  return guarded("duo_model_rope", [&]() { return rope(x, x_off, cos, sin, T, heads, head_dim); });
}

DUO_API int32_t duo_model_swiglu(uint32_t y, uint64_t y_off, uint32_t gate, uint64_t gate_off, uint32_t up,
                                 uint64_t up_off, uint64_t n) {
  return guarded("duo_model_swiglu", [&]() { return swiglu(y, y_off, gate, gate_off, up, up_off, n); });
}

DUO_API int32_t duo_model_add(uint32_t y, uint64_t y_off, uint32_t x, uint64_t x_off, uint64_t n) {
  return guarded("duo_model_add", [&]() { return add(y, y_off, x, x_off, n); });
}

DUO_API int32_t duo_model_argmax(uint32_t x, uint64_t x_off, int32_t n, int32_t* out) {
  return guarded("duo_model_argmax", [&]() { return argmax(x, x_off, n, out); });
}

}  // extern "C"
