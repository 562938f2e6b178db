// Host emulation of the CUDA runtime and device builtins that cuda/src uses (built with -DDUO_EMU, see
// cuda/emu/README.md). Device code compiles as plain C++: every CUDA thread of a block runs as a fiber on one host
// thread; barriers, warp collectives and the tensor-core / cp.async operations of cuda/src/ptx.h are resolved by the
// scheduler in cuda/emu/runtime.cpp. Device pointers are host pointers.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// One block runs at a time on the emulator's device thread, so a function-local static is exactly block-shared.
#define __shared__ static

struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return float2{x, y}; }
// Rounded single-precision products and differences that are never fused into an FMA (the host build does not fuse:
// x86-64 without -mfma, and g++ in ISO mode does not contract).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fsub_rn(float a, float b) { return a - b; }
// CUDA's device overloads of min / max for int.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorLaunchFailure = 719,
  cudaErrorCompatNotSupportedOnDevice = 804,
};
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
#define cudaStreamNonBlocking 0x01u
#define cudaEventDisableTiming 0x02u

namespace emu {
struct Stream;
struct Event;
}  // namespace emu
typedef emu::Stream* cudaStream_t;
typedef emu::Event* cudaEvent_t;

struct cudaDeviceProp {
  char name[256];
  int major, minor;
  int multiProcessorCount;
  size_t totalGlobalMem;
};

cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t s);
cudaError_t cudaFree(void* p);
cudaError_t cudaFreeAsync(void* p, cudaStream_t s);
cudaError_t cudaMallocHost(void** p, size_t bytes);
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaGetLastError();
const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);
template <class T> inline cudaError_t cudaMalloc(T** p, size_t bytes) { return cudaMalloc(reinterpret_cast<void**>(p), bytes); }
template <class T> inline cudaError_t cudaMallocAsync(T** p, size_t bytes, cudaStream_t s) {
  return cudaMallocAsync(reinterpret_cast<void**>(p), bytes, s);
}

// ------------------------------------------------------------------------------------------- the emulator's hooks
namespace emu {
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
void fault(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void check_align(const void* p, size_t align, const char* what);
void syncthreads(int line);
int syncthreads_or(int predicate, int line);
float shfl_xor(unsigned mask, float v, int lane_mask, int line);
float shfl(unsigned mask, float v, int src_lane, int line);
unsigned char* dynamic_smem();
// cuda/src/ptx.h's instructions: see the PTX ISA sections named there.
void cp_async16(void* dst_smem, const void* src, int src_bytes);
void cp_async_commit();
void cp_async_wait(int pending);
void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row, int line);
void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, bool bf16, int line);

cudaError_t set_attribute(const void* kernel, cudaFuncAttribute attr, int value);
int max_active_blocks(const void* kernel, int threads, size_t dynamic_smem);
cudaError_t launch(const void* kernel, const char* name, dim3 grid, dim3 block, size_t dynamic_smem, cudaStream_t s,
                   std::function<void()> body);
}  // namespace emu

template <class F> inline cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
  return emu::set_attribute(reinterpret_cast<const void*>(kernel), attr, value);
}
template <class F>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, F* kernel, int threads, size_t dynamic_smem) {
  *n = emu::max_active_blocks(reinterpret_cast<const void*>(kernel), threads, dynamic_smem);
  return cudaSuccess;
}
// The launch behind cuda/src/kernels.h's DUO_LAUNCH: the kernel's arguments are copied, as a real launch does.
template <class... P, class... A>
inline cudaError_t emu_launch(void (*kernel)(P...), const char* name, dim3 grid, dim3 block, size_t dynamic_smem,
                              cudaStream_t s, A... args) {
  return emu::launch(reinterpret_cast<const void*>(kernel), name, grid, block, dynamic_smem, s,
                     [=]() { kernel(args...); });
}

#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::block_idx())
#define blockDim (::emu::block_dim())
#define gridDim (::emu::grid_dim())
#define __syncthreads() ::emu::syncthreads(__LINE__)
#define __syncthreads_or(...) ::emu::syncthreads_or((__VA_ARGS__), __LINE__)
#define __shfl_xor_sync(mask, v, m) ::emu::shfl_xor((mask), (v), (m), __LINE__)
#define __shfl_sync(mask, v, lane) ::emu::shfl((mask), (v), (lane), __LINE__)
template <class T> inline T __ldg(const T* p) {
  ::emu::check_align(p, alignof(T), "__ldg");
  return *p;
}
