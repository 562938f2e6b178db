// The inline-PTX instructions of the tensor-core kernel, each behind one function with a host path: built with
// -DDUO_EMU (cuda/emu/build.sh) they call the emulator, which resolves them for the 32 lanes of a warp together.
// Semantics: PTX ISA, "cp.async", "ldmatrix", "mma.m16n8k16" (f16 / bf16 inputs, f32 accumulators).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#ifdef DUO_EMU
// The block's dynamic shared memory (extern __shared__ in CUDA).
#define DUO_DYNAMIC_SMEM(name) unsigned char* name = ::emu::dynamic_smem()
#else
#define DUO_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
__device__ inline uint32_t smem_addr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
#endif

// 16 bytes global -> shared (dst and src 16-byte aligned); the bytes past src_bytes are zero-filled, so src_bytes = 0
// writes 16 zero bytes and reads nothing.
__device__ inline void cp_async16(void* dst, const void* src, int src_bytes) {
#ifdef DUO_EMU
  ::emu::cp_async16(dst, src, src_bytes);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(src_bytes));
#endif
}

// Close the group of this thread's cp.async issued since the last commit.
__device__ inline void cp_async_commit() {
#ifdef DUO_EMU
  ::emu::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Wait until at most one committed group (the newest) is still in flight.
__device__ inline void cp_async_wait_prev() {
#ifdef DUO_EMU
  ::emu::cp_async_wait(1);
#else
  asm volatile("cp.async.wait_group 1;\n" ::);
#endif
}

// Four 8x8 b16 matrices, transposed: lanes 8i..8i+7 give the row addresses of matrix i, register i receives it.
__device__ inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
#ifdef DUO_EMU
  ::emu::ldmatrix_x4_trans(r, row, __LINE__);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row)));
#endif
}

// c += A (16x16, row) x B (16x8, col) with KV = __half or __nv_bfloat16 inputs and f32 accumulators.
template <typename KV>
__device__ inline void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifdef DUO_EMU
  ::emu::mma16816(c, a, b0, b1, std::is_same<KV, __nv_bfloat16>::value, __LINE__);
#else
  if constexpr (std::is_same<KV, __half>::value) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#endif
}
