// Error messages, the context singleton and its staging memory.
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "context.h"
#include "error.h"

namespace {
thread_local char last_message[1024] = "";
}

const char* last_error_message() { return last_message; }

int32_t fail(int32_t status, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  vsnprintf(last_message, sizeof last_message, fmt, args);
  va_end(args);
  return status;
}

int32_t fail_cuda(cudaError_t e, const char* what) {
  cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  int32_t status = DUO_ERR_CUDA;
  if (e == cudaErrorMemoryAllocation) status = DUO_ERR_CAPACITY;
  if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice || e == cudaErrorInitializationError ||
      e == cudaErrorCompatNotSupportedOnDevice) {
    status = DUO_ERR_NO_DEVICE;
  }
  const char* paren = strchr(what, '(');  // "cudaMalloc(&p, n)" -> "cudaMalloc"
  const int name_len = paren ? static_cast<int>(paren - what) : static_cast<int>(strlen(what));
  return fail(status, "%.*s: %s: %s (%d)", name_len, what, cudaGetErrorName(e), cudaGetErrorString(e),
              static_cast<int>(e));
}

std::mutex& api_lock() {
  static std::mutex m;
  return m;
}

Context& ctx() {
  static Context c;
  return c;
}

int32_t require_init(const char* fn) {
  Context& c = ctx();
  if (c.device < 0) return fail(DUO_ERR_NO_DEVICE, "%s: no device initialized (call duo_init first)", fn);
  DUO_CUDA(cudaSetDevice(c.device));
  return DUO_OK;
}

int32_t lookup(uint32_t handle, const char* fn, const char* what, Buffer** out) {
  auto it = ctx().buffers.find(handle);
  if (it == ctx().buffers.end()) return fail(DUO_ERR_HANDLE, "%s: %s: unknown buffer handle %u", fn, what, handle);
  *out = &it->second;
  return DUO_OK;
}

int32_t device_f32(const char* fn, const char* what, uint32_t handle, uint64_t offset, uint64_t count, float** out) {
  Buffer* b = nullptr;
  DUO_TRY(lookup(handle, fn, what, &b));
  const uint64_t elems = b->bytes / 4;
  if (offset > elems || count > elems - offset) {
    return fail(DUO_ERR_CAPACITY, "%s: %s: elements [%llu, %llu) are past the end of buffer %u (%llu f32 elements)", fn,
                what, (unsigned long long)offset, (unsigned long long)(offset + count), handle,
                (unsigned long long)elems);
  }
  *out = static_cast<float*>(b->ptr) + offset;
  return DUO_OK;
}

namespace {
size_t grown(size_t cap, size_t bytes) { return bytes > cap + cap / 2 ? bytes : cap + cap / 2; }

// Grow a pinned host block to at least `bytes`, 1.5x at a time; its old contents are dropped. The caller has made
// sure no copy still uses it.
int32_t grow_pinned(void** block, size_t* cap, size_t bytes) {
  const size_t want = grown(*cap, bytes);
  if (*block) DUO_CUDA(cudaFreeHost(*block));
  *block = nullptr;
  *cap = 0;
  DUO_CUDA(cudaMallocHost(block, want));
  *cap = want;
  return DUO_OK;
}
}  // namespace

int32_t reserve_pinned_up(size_t bytes, void** out) {
  Context& c = ctx();
  DUO_CUDA(cudaEventSynchronize(c.upload_done));
  if (bytes > c.pinned_up_cap) {
    DUO_TRY(grow_pinned(&c.pinned_up, &c.pinned_up_cap, bytes));
  }
  *out = c.pinned_up;
  return DUO_OK;
}

int32_t reserve_pinned_down(size_t bytes, void** out) {
  Context& c = ctx();
  if (bytes > c.pinned_down_cap) {
    DUO_CUDA(cudaStreamSynchronize(c.stream));
    DUO_TRY(grow_pinned(&c.pinned_down, &c.pinned_down_cap, bytes));
  }
  *out = c.pinned_down;
  return DUO_OK;
}

// The old block is freed and the new one allocated in stream order (the device's memory pool): queued work still
// using the old block finishes first, and nothing waits for the device.
int32_t reserve_scratch(size_t bytes, void** out) {
  Context& c = ctx();
  if (bytes > c.scratch_cap) {
    const size_t want = grown(c.scratch_cap, bytes);
    if (c.scratch) DUO_CUDA(cudaFreeAsync(c.scratch, c.stream));
    c.scratch = nullptr;
    c.scratch_cap = 0;
    DUO_CUDA(cudaMallocAsync(&c.scratch, want, c.stream));
    c.scratch_cap = want;
  }
  *out = c.scratch;
  return DUO_OK;
}
