// The process-wide CUDA context: device, stream, timing events, buffer handle table and staging memory.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <unordered_map>

#include "duo.h"

struct Buffer {
  void* ptr;       // device memory (nullptr for a 0-byte buffer)
  uint64_t bytes;
};

struct Context {
  int device = -1;  // -1 until duo_init succeeds
  int sm_count = 0;
  cudaStream_t stream = nullptr;
  cudaEvent_t upload_done = nullptr;        // recorded after each copy out of `pinned_up`
  cudaEvent_t t0 = nullptr, t1 = nullptr;   // around the kernels of the last append / attend
  bool timing_valid = false;

  std::unordered_map<uint32_t, Buffer> buffers;
  uint32_t next_handle = 1;  // handles are never reused, so a stale handle cannot reach a newer buffer
  uint64_t live_bytes = 0;

  void* pinned_up = nullptr;    // host -> device staging (page-locked)
  size_t pinned_up_cap = 0;
  void* pinned_down = nullptr;  // device -> host staging (page-locked)
  size_t pinned_down_cap = 0;
  void* scratch = nullptr;      // device scratch: uploaded inputs, split-KV partials, outputs
  size_t scratch_cap = 0;
};

Context& ctx();

// DUO_ERR_NO_DEVICE unless duo_init succeeded; makes the context's device current on this thread.
int32_t require_init(const char* fn);

// The buffer behind `handle`, or DUO_ERR_HANDLE naming `what` (e.g. "segment 2 k").
int32_t lookup(uint32_t handle, const char* fn, const char* what, Buffer** out);

// A device tensor: f32 elements [offset, offset + count) of buffer `handle` (duo.h); DUO_ERR_HANDLE for an unknown
// handle, DUO_ERR_CAPACITY when the elements pass the buffer's end, each naming `what`.
int32_t device_f32(const char* fn, const char* what, uint32_t handle, uint64_t offset, uint64_t count, float** out);

// The uint64_t element offset of a device tensor from its two params words (low at p[lo], high at p[lo + 1]).
inline uint64_t param_offset(const int32_t* p, int lo) {
  return static_cast<uint64_t>(static_cast<uint32_t>(p[lo])) | static_cast<uint64_t>(static_cast<uint32_t>(p[lo + 1])) << 32;
}

// Page-locked host staging of at least `bytes`. The upload buffer is handed out only after the previous copy from
// it finished (so callers may overwrite it at once).
int32_t reserve_pinned_up(size_t bytes, void** out);
int32_t reserve_pinned_down(size_t bytes, void** out);

// Device scratch of at least `bytes` (grows by stream-ordered reallocation; contents are not kept).
int32_t reserve_scratch(size_t bytes, void** out);

// Round `n` up to a multiple of 256 bytes (sub-buffers of the staging areas stay aligned for vector loads).
inline size_t align256(size_t n) { return (n + 255) & ~static_cast<size_t>(255); }

// KV dtypes: enum duo_dtype, DUO_F32 .. DUO_INT4.
constexpr int DUO_DTYPES = 5;
inline bool dtype_valid(int32_t dtype) { return dtype >= DUO_F32 && dtype <= DUO_INT4; }
inline bool dtype_quantized(int32_t dtype) { return dtype == DUO_INT8 || dtype == DUO_INT4; }
inline const char* dtype_name(int32_t dtype) {
  static const char* const names[DUO_DTYPES] = {"f32", "f16", "bf16", "int8", "int4"};
  return dtype_valid(dtype) ? names[dtype] : "?";
}
// Bytes of one head's head_dim values of one row in a KV buffer of `dtype` (duo.h: a record for int8 / int4).
inline uint64_t head_bytes(int32_t dtype, int32_t head_dim) {
  const uint64_t D = static_cast<uint64_t>(head_dim);
  switch (dtype) {
    case DUO_F32: return 4 * D;
    case DUO_INT8: return D + 4;
    case DUO_INT4: return D / 2 + 4;
    default: return 2 * D;
  }
}
