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

// Page-locked host staging of at least `bytes`. The upload buffer is handed out only after the previous copy from
// it finished (so callers may overwrite it at once).
int32_t reserve_pinned_up(size_t bytes, void** out);
int32_t reserve_pinned_down(size_t bytes, void** out);

// Device scratch of at least `bytes` (grows by stream-ordered reallocation; contents are not kept).
int32_t reserve_scratch(size_t bytes, void** out);

// Round `n` up to a multiple of 256 bytes (sub-buffers of the staging areas stay aligned for vector loads).
inline size_t align256(size_t n) { return (n + 255) & ~static_cast<size_t>(255); }

inline size_t dtype_bytes(int32_t dtype) { return dtype == DUO_F32 ? 4 : 2; }
inline bool dtype_valid(int32_t dtype) { return dtype == DUO_F32 || dtype == DUO_F16 || dtype == DUO_BF16; }
