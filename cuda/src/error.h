// Status and message plumbing: every failure records a message for the calling thread and returns a duo_status.
#pragma once
#include <cuda_runtime.h>

#include <exception>
#include <mutex>
#include <new>

#include "duo.h"

// The calling thread's last message ("" if none).
const char* last_error_message();

// Record `fmt` (printf-style) as the calling thread's last error and return `status`.
int32_t fail(int32_t status, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// Record a CUDA error as "<what>: <name>: <description> (<code>)". Allocation failures map to DUO_ERR_CAPACITY,
// a missing driver or device to DUO_ERR_NO_DEVICE, everything else to DUO_ERR_CUDA.
int32_t fail_cuda(cudaError_t e, const char* what);

#define DUO_CUDA(call)                             \
  do {                                             \
    const cudaError_t duo_e_ = (call);             \
    if (duo_e_ != cudaSuccess) return fail_cuda(duo_e_, #call); \
  } while (0)

#define DUO_TRY(call)                      \
  do {                                     \
    const int32_t duo_s_ = (call);         \
    if (duo_s_ != DUO_OK) return duo_s_;   \
  } while (0)

// The one lock that serialises all calls touching the context.
std::mutex& api_lock();

// Run `body` under the lock; C++ exceptions become DUO_ERR_INTERNAL (nothing crosses the C boundary).
template <class Body>
int32_t guarded(const char* fn, Body&& body) {
  try {
    std::lock_guard<std::mutex> lock(api_lock());
    return body();
  } catch (const std::bad_alloc&) {
    return fail(DUO_ERR_INTERNAL, "%s: host memory allocation failed", fn);
  } catch (const std::exception& e) {
    return fail(DUO_ERR_INTERNAL, "%s: internal error: %s", fn, e.what());
  } catch (...) {
    return fail(DUO_ERR_INTERNAL, "%s: internal error", fn);
  }
}
