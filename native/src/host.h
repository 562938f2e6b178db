/*
 * The native library's exports beyond wasm/src/duo.h (whose ops it exports under the same names and signatures):
 * host memory, threads, the chosen instruction set and error messages. ffi/symbols.ts (NATIVE_SYMBOLS) declares the
 * same table for bun:ffi, Deno.dlopen and koffi.
 *
 * Memory: duo_alloc blocks are 64-byte aligned and zero-filled, from the host (mmap for large blocks, so that their
 * pages are committed lazily), counted (duo_memory) and registered: every op that names a buffer (duo_append's dst,
 * a segment's k and v) must name the address duo_alloc gave, and the op is refused unless the rows it touches lie
 * inside that block. Refused calls return DUO_E_* before writing anything; duo_last_error() then says why.
 * A view of a mapped file (duo_map_view) is a live block too, read-only: ops that read it take it, ops that write a
 * block (duo_write, duo_read_file, duo_append's dst) refuse it with DUO_E_HANDLE.
 */
#ifndef DUO_HOST_H
#define DUO_HOST_H
#include "../../wasm/src/duo.h"

#define DUO_MAX_THREADS 256

/* The message of the calling thread's last refused call ("" when none). */
DUO_EXPORT const char *duo_last_error(void);
/* The instruction set the kernels run with: "avx512", "avx2", "sse41", "neon" or "scalar" (chosen once, at load, from
 * the CPU; the environment variable DUO_NATIVE_ISA may name a lower one that the CPU supports, for tests). */
DUO_EXPORT const char *duo_isa(void);
/* Switch the kernels to the instruction set `name` (NULL or "": the best), process-wide; DUO_E_UNSUPPORTED when this
 * build lacks it or the CPU does not run it (the choice stays). For tests and benchmarks of every set. */
DUO_EXPORT int32_t duo_select_isa(const char *name);
/* Threads for the calls that follow (1 .. DUO_MAX_THREADS): heads and KV rows of duo_attend, and the benchmark
 * ceilings, are split over them. Returns the previous count, or DUO_E_ARG. */
DUO_EXPORT int32_t duo_threads(int32_t n);

/* *out = address of a fresh block of `bytes` (> 0). DUO_E_CAPACITY when the host has no memory. */
DUO_EXPORT int32_t duo_alloc(uint64_t bytes, uint64_t *out);
/* Free a block (its address as duo_alloc or duo_map_view gave it); DUO_E_HANDLE for anything else. */
DUO_EXPORT int32_t duo_free(uint64_t block);
/* out[0] = bytes in live blocks of duo_alloc, out[1] = those blocks (views of mapped files are not counted: their
 * pages are the file's page cache). */
DUO_EXPORT int32_t duo_memory(double *out);
/* Copy bytes [offset, offset + bytes) of a block out to host memory, or into it from host memory. */
DUO_EXPORT int32_t duo_read(uint64_t block, uint64_t offset, uint64_t bytes, void *dst);
DUO_EXPORT int32_t duo_write(uint64_t block, uint64_t offset, uint64_t bytes, const void *src);
/* Read bytes [file_offset, file_offset + bytes) of the file at `path` (NUL-terminated) into a block at block_offset,
 * with pread (file.c): weights go from disk to the library without a host copy, as they are (every weight dtype's
 * file layout is the kernels' own). DUO_E_ARG when the file cannot be opened or ends early (the message names the
 * path and offsets). */
DUO_EXPORT int32_t duo_read_file(const char *path, uint64_t file_offset, uint64_t bytes, uint64_t block,
                                 uint64_t block_offset);
/* Map the whole file at `path` read-only (map.c): out[0] = the mapping's address (its handle), out[1] = the file's
 * bytes. DUO_E_ARG when it cannot be opened or is empty, DUO_E_CAPACITY when it cannot be mapped. */
DUO_EXPORT int32_t duo_map_file(const char *path, uint64_t *out);
/* *out = a live, read-only block that is bytes [offset, offset + bytes) of the mapping `map` (at map + offset, any
 * alignment), its pages read into memory now; ops that read blocks accept it, ops that write one refuse it; duo_free
 * releases it, and it is not counted in duo_memory (its pages are the file's page cache). DUO_E_ARG when the range
 * is not inside the file or the file was truncated since it was mapped (both messages name the path). */
DUO_EXPORT int32_t duo_map_view(uint64_t map, uint64_t offset, uint64_t bytes, uint64_t *out);
/* Drop the handle of a mapping: it is unmapped once its last view is freed too. DUO_E_HANDLE for anything else. */
DUO_EXPORT int32_t duo_unmap(uint64_t map);

/* Model kernels (wasm/model/kernels.c, SIMD sets only: DUO_E_UNSUPPORTED on "scalar"). Weights are blocks of
 * duo_alloc holding a row-major [rows, cols] matrix of a weight dtype below (the quantized ones as llama.cpp's blocks,
 * cols a multiple of the block: 32 for Q8_0 / Q4_0, 256 for Q4_K / Q6_K) in the file's own layout, 16-bit rows too
 * (wasm/model/widen.h), so a view of a mapped checkpoint (duo_map_view) serves as well as a copy. Activations are
 * host arrays, one row per token. The codes are the model's own (the KV dtypes of duo.h are another list):
 * src/model/kernels-native.ts has the same table. */
enum { DUO_W_F32 = 0, DUO_W_F16 = 1, DUO_W_BF16 = 2, DUO_W_Q8_0 = 3, DUO_W_Q4_0 = 4, DUO_W_Q4_K = 5, DUO_W_Q6_K = 6, DUO_W_COUNT = 7 };
/* y[T, nout] = x[T, nin] . W[nout, nin]^T (+ bias[nout], or NULL); output rows split over the threads. */
DUO_EXPORT int32_t duo_model_matmul(float *y, const float *x, uint64_t w, const float *bias, int32_t T, int32_t nin,
                                    int32_t nout, int32_t dtype);
/* y[T, cols] = table[ids[t]] widened to f32 (ids checked against rows). */
DUO_EXPORT int32_t duo_model_embed(float *y, const int32_t *ids, uint64_t table, int32_t T, int32_t rows, int32_t cols,
                                   int32_t dtype);
DUO_EXPORT int32_t duo_model_rmsnorm(float *y, const float *x, const float *w, int32_t T, int32_t n, float eps);
DUO_EXPORT int32_t duo_model_rope(float *x, const float *cos, const float *sin, int32_t T, int32_t heads,
                                  int32_t head_dim);
DUO_EXPORT int32_t duo_model_swiglu(float *y, const float *gate, const float *up, int32_t n);

#endif
