// The extern "C" entry points that manage the device and buffers (kernels: append.cu, attend.cu).
#include <string>

#include "context.h"
#include "error.h"
#include "kernels.h"

extern "C" {

DUO_API int32_t duo_api_version(void) { return DUO_API_VERSION; }

DUO_API const char* duo_last_error(void) { return last_error_message(); }

DUO_API int32_t duo_device_count(void) {
  return guarded("duo_device_count", []() -> int32_t {
    int n = 0;
    DUO_CUDA(cudaGetDeviceCount(&n));
    return n;
  });
}

DUO_API int32_t duo_init(int32_t device) {
  return guarded("duo_init", [&]() -> int32_t {
    Context& c = ctx();
    if (c.device >= 0) {
      if (device == c.device) return DUO_OK;
      return fail(DUO_ERR_ARGUMENT, "duo_init: already initialized on device %d; one process drives one device, got %d",
                  c.device, device);
    }
    int n = 0;
    DUO_CUDA(cudaGetDeviceCount(&n));
    if (n == 0) return fail(DUO_ERR_NO_DEVICE, "duo_init: cudaGetDeviceCount found no CUDA device");
    if (device < 0 || device >= n) {
      return fail(DUO_ERR_ARGUMENT, "duo_init: device must be in [0, %d) on this machine, got %d", n, device);
    }
    cudaDeviceProp prop;
    DUO_CUDA(cudaGetDeviceProperties(&prop, device));
    if (prop.major < 8) {
      return fail(DUO_ERR_UNSUPPORTED, "duo_init: device %d (%s) is sm_%d%d; this build needs sm_80 or newer", device,
                  prop.name, prop.major, prop.minor);
    }
    DUO_CUDA(cudaSetDevice(device));
    if (!c.stream) DUO_CUDA(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking));  // kept if a retry follows
    if (!c.upload_done) DUO_CUDA(cudaEventCreateWithFlags(&c.upload_done, cudaEventDisableTiming));
    if (!c.t0) DUO_CUDA(cudaEventCreate(&c.t0));
    if (!c.t1) DUO_CUDA(cudaEventCreate(&c.t1));
    DUO_CUDA(configure_kernels());
    c.sm_count = prop.multiProcessorCount;
    c.device = device;
    return DUO_OK;
  });
}

DUO_API int32_t duo_memory(double* out) {
  return guarded("duo_memory", [&]() -> int32_t {
    if (!out) return fail(DUO_ERR_ARGUMENT, "duo_memory: out is NULL (expected double[3])");
    DUO_TRY(require_init("duo_memory"));
    size_t free_bytes = 0, total_bytes = 0;
    DUO_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
    out[0] = static_cast<double>(ctx().live_bytes);
    out[1] = static_cast<double>(free_bytes);
    out[2] = static_cast<double>(total_bytes);
    return DUO_OK;
  });
}

DUO_API int32_t duo_alloc(uint64_t bytes, uint32_t* handle) {
  return guarded("duo_alloc", [&]() -> int32_t {
    if (!handle) return fail(DUO_ERR_ARGUMENT, "duo_alloc: handle is NULL (expected uint32_t[1])");
    if (bytes > (1ull << 50)) {
      return fail(DUO_ERR_ARGUMENT, "duo_alloc: bytes must be at most 2^50, got %llu", (unsigned long long)bytes);
    }
    const int32_t init = require_init("duo_alloc");
    if (init != DUO_OK) {
      const std::string why = last_error_message();
      return fail(init, "%s (bytes = %llu)", why.c_str(), (unsigned long long)bytes);
    }
    Context& c = ctx();
    if (c.next_handle > 0x7fffffffu) return fail(DUO_ERR_CAPACITY, "duo_alloc: handle space exhausted");
    void* p = nullptr;
    if (bytes > 0) {
      // stream-ordered (the device's memory pool): no device-wide synchronisation, unlike cudaMalloc / cudaFree
      const cudaError_t e = cudaMallocAsync(&p, bytes, c.stream);
      if (e != cudaSuccess) {
        fail_cuda(e, "cudaMallocAsync");
        const std::string why = last_error_message();
        return fail(DUO_ERR_CAPACITY, "duo_alloc: %llu bytes do not fit on device %d: %s", (unsigned long long)bytes,
                    c.device, why.c_str());
      }
      const cudaError_t z = cudaMemsetAsync(p, 0, bytes, c.stream);
      if (z != cudaSuccess) {
        cudaFreeAsync(p, c.stream);
        return fail_cuda(z, "cudaMemsetAsync");
      }
    }
    const uint32_t h = c.next_handle++;
    c.buffers.emplace(h, Buffer{p, bytes});
    c.live_bytes += bytes;
    *handle = h;
    return DUO_OK;
  });
}

DUO_API int32_t duo_free(uint32_t handle) {
  return guarded("duo_free", [&]() -> int32_t {
    DUO_TRY(require_init("duo_free"));
    Buffer* b = nullptr;
    DUO_TRY(lookup(handle, "duo_free", "handle", &b));
    // freed in stream order: after the work already queued that uses it, without waiting for the device
    if (b->ptr) DUO_CUDA(cudaFreeAsync(b->ptr, ctx().stream));
    ctx().live_bytes -= b->bytes;
    ctx().buffers.erase(handle);
    return DUO_OK;
  });
}

namespace {
int32_t check_range(const char* fn, uint32_t handle, uint64_t offset, uint64_t bytes, const void* host, Buffer** b) {
  DUO_TRY(require_init(fn));
  DUO_TRY(lookup(handle, fn, "handle", b));
  if (offset > (*b)->bytes || bytes > (*b)->bytes - offset) {
    return fail(DUO_ERR_CAPACITY, "%s: bytes [%llu, %llu) are past the end of buffer %u (%llu bytes)", fn,
                (unsigned long long)offset, (unsigned long long)(offset + bytes), handle,
                (unsigned long long)(*b)->bytes);
  }
  if (bytes > 0 && !host) return fail(DUO_ERR_ARGUMENT, "%s: host pointer is NULL for %llu bytes", fn, (unsigned long long)bytes);
  return DUO_OK;
}
}  // namespace

DUO_API int32_t duo_read(uint32_t handle, uint64_t offset, uint64_t bytes, void* dst) {
  return guarded("duo_read", [&]() -> int32_t {
    Buffer* b = nullptr;
    DUO_TRY(check_range("duo_read", handle, offset, bytes, dst, &b));
    if (bytes == 0) return DUO_OK;
    const cudaStream_t s = ctx().stream;
    DUO_CUDA(cudaMemcpyAsync(dst, static_cast<const char*>(b->ptr) + offset, bytes, cudaMemcpyDeviceToHost, s));
    DUO_CUDA(cudaStreamSynchronize(s));
    return DUO_OK;
  });
}

DUO_API int32_t duo_write(uint32_t handle, uint64_t offset, uint64_t bytes, const void* src) {
  return guarded("duo_write", [&]() -> int32_t {
    Buffer* b = nullptr;
    DUO_TRY(check_range("duo_write", handle, offset, bytes, src, &b));
    if (bytes == 0) return DUO_OK;
    const cudaStream_t s = ctx().stream;
    DUO_CUDA(cudaMemcpyAsync(static_cast<char*>(b->ptr) + offset, src, bytes, cudaMemcpyHostToDevice, s));
    DUO_CUDA(cudaStreamSynchronize(s));
    return DUO_OK;
  });
}

DUO_API double duo_last_device_ms(void) {
  try {
    std::lock_guard<std::mutex> lock(api_lock());
    Context& c = ctx();
    if (c.device < 0 || !c.timing_valid) return -1;
    if (cudaSetDevice(c.device) != cudaSuccess || cudaEventSynchronize(c.t1) != cudaSuccess) return -1;
    float ms = 0;
    if (cudaEventElapsedTime(&ms, c.t0, c.t1) != cudaSuccess) return -1;
    return ms;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
