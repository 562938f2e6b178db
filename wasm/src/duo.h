/*
 * The C ABI of the CPU kernels, one header for every build of wasm/src: duo.wasm (wasm32, pointers are u32 byte
 * offsets into the module's own memory; the TypeScript side adds `>>> 0`) and the native library (native/build.sh:
 * the same sources per instruction set behind one dispatcher, pointers are host addresses). Every export has the duo_
 * prefix; functions that can fail return a status (0 ok, negative = error, DUO_E_*). Pointers inside structs are
 * duo_ptr (64 bits in every build), so that one segment layout serves wasm, native and (next) CUDA device offsets.
 * The wasm build has no imports and no libc: clang --target=wasm32 -nostdlib.
 *
 * Tensor layouts (row-major, "NHD", unless a KV buffer is tiled; src/backend/layout.ts has the same formulas):
 *   KV buffer     NHD: [rows][row_heads][head_dim] of dtype  element (r*row_heads + j)*head_dim + d; for DUO_INT8 /
 *                 DUO_INT4 [rows][row_heads] records of kv_head_bytes(dtype, head_dim) bytes (quant.h)
 *                 T64 (tiled): K and V in one buffer of `buffer_rows` rows (a multiple of 64) cut into 64-row
 *                 blocks, head by head: block b of head j is a K64 tile then a V64 tile (each 64 x head_dim), the K
 *                 tile at element ((j*(buffer_rows/64) + b)*2)*64*head_dim and its V tile 64*head_dim after it;
 *                 inside, row i = r % 64, element d at
 *                 K64: ((i/8)*head_dim + d)*8 + i%8        V64: ((d/8)*64 + i)*8 + d%8
 *                 (decode then reads one head's rows of a buffer as one front-to-back stream)
 *   queries q     [t][num_heads][head_dim] f32              query head h*group + g reads KV head h
 *   output  out   [t][n_heads*group][head_dim] f32          compact: only the n_heads KV heads of this call
 *   lse           [t][n_heads*group] f32                    natural log-sum-exp of the scaled scores
 * Byte offsets inside one buffer are 32-bit (a buffer holds less than 4 GiB); the memory as a whole is not limited
 * in the native build.
 */
#ifndef DUO_H
#define DUO_H
#include <stdint.h>

/* Bumped on any change of an export's prototype or semantics, here or in native/src/host.h (6: duo_read_file's
 * pack_cols, duo_map_file / duo_map_view / duo_unmap, the duo_bwd_* backward kernels; 7: the native model kernels
 * read f16 / bf16 rows in file order, so duo_model_pack and duo_read_file's pack_cols are gone). */
#define DUO_API_VERSION 7
#define DUO_EXPORT __attribute__((visibility("default")))

/* Status codes, numbered as in cuda/include/duo.h. */
enum { DUO_OK = 0, DUO_E_ARG = -1, DUO_E_HANDLE = -2, DUO_E_CAPACITY = -3, DUO_E_UNSUPPORTED = -4, DUO_E_INTERNAL = -7 };

/* A byte address in the library's memory: a wasm32 offset or a native pointer, 64 bits wide in every build. */
typedef uint64_t duo_ptr;

/* KV storage dtypes, and a flag for segments whose buffers may hold Inf/NaN (duo_append reports when it writes one).
 * Without the flag f16 is widened with a multiply that is exact for finite values only, and a masked key's value row
 * is multiplied by a zero weight; with it, f16 is widened exactly and zero weights never touch a value (0 * Inf would
 * be NaN where the reference skips the key). DUO_INT8 / DUO_INT4 are the quantized records of quant.h (NHD only;
 * the flag marks records that decode to Inf). */
enum { DUO_F32 = 0, DUO_F16 = 1, DUO_BF16 = 2, DUO_INT8 = 3, DUO_INT4 = 4, DUO_DTYPE_MASK = 7, DUO_NONFINITE = 8 };

/* Buffer layouts (duo_append: NHD, or the K64 / V64 halves of a T64 buffer) and segment layouts (duo_segment.layout:
 * NHD, or T64 with k == v, the one buffer holding both). */
enum { DUO_NHD = 0, DUO_K64 = 1, DUO_V64 = 2, DUO_T64 = 1, DUO_TILE = 64 };

/* One run of cached rows, 56 bytes = 14 i32 words (the TypeScript side writes them as an Int32Array, pointers as
 * low and high words: src/backend/abi.ts). */
typedef struct {
  duo_ptr k, v;        /* K and V buffers (the same buffer for T64) */
  duo_ptr positions;   /* i32[row_count]: absolute position of each row, or 0: rows hold pos0, pos0 + 1, ... */
  int32_t dtype;       /* DUO_F32 .. DUO_INT4, | DUO_NONFINITE */
  int32_t row_heads;   /* heads per row */
  int32_t row_start;   /* first row of the run */
  int32_t row_count;   /* rows in the run */
  int32_t pos0;
  int32_t layout;      /* DUO_NHD or DUO_T64 */
  int32_t buffer_rows; /* T64: rows the buffer holds (a multiple of 64, at least row_start + row_count); NHD: unused */
  int32_t reserved;    /* 0 */
} duo_segment;

#ifdef __wasm__
/* Allocator: 64-byte aligned, zero-filled blocks; grows memory (up to 4 GiB). Returns 0 when memory cannot grow.
 * (The native build has its own, native/src/host.h.) */
DUO_EXPORT uint32_t duo_alloc(uint32_t bytes);
DUO_EXPORT void duo_free(uint32_t ptr);
#endif

/* Append rows: for token t < n with rows[t] >= 0 and dst head j < row_heads, convert
 * src[(t*src_heads + heads[j])*head_dim + d] (f32) into dst row rows[t], head j (round to nearest even; DUO_INT8 and
 * DUO_INT4 quantize each head's row into its record, NHD only, int4 with head_dim % 4 == 0), dst in
 * `layout` (DUO_NHD, DUO_K64 or DUO_V64; tiled layouts need head_dim % 8 == 0 and the buffer's row count,
 * buffer_rows, a multiple of 64 above every rows[t]; NHD ignores it). Bad arguments write nothing.
 * Returns the number of Inf/NaN values written, or DUO_E_ARG. */
DUO_EXPORT int32_t duo_append(void *dst, int32_t dtype, int32_t row_heads, int32_t head_dim, const float *src,
                              int32_t src_heads, const int32_t *heads, const int32_t *rows, int32_t n, int32_t layout,
                              int32_t buffer_rows);

/* Attention of n_heads KV heads (q_heads[j]: the caller's index of KV head j, kv_slots[j]: its head slot in the
 * segments' rows) for t query rows at absolute positions q_pos0 .. q_pos0 + t - 1 over n_segments segments.
 * Visibility (src/backend/types.ts AttendOp): p <= q and, when windowed, p < sink || p >= q - recent.
 * Rows without a visible key get zeros and lse = -Inf; lse may be NULL. work: duo_attend_workspace(...) bytes,
 * 16-byte aligned (the native library keeps a workspace per thread and ignores it: pass NULL). */
DUO_EXPORT int32_t duo_attend(const float *q, int32_t t, int32_t num_heads, int32_t head_dim, int32_t group,
                              int32_t n_heads, const int32_t *q_heads, const int32_t *kv_slots,
                              const duo_segment *segments, int32_t n_segments, int32_t q_pos0, int32_t windowed,
                              int32_t sink, int32_t recent, float *out, float *lse, void *work);
DUO_EXPORT uint32_t duo_attend_workspace(int32_t t, int32_t group, int32_t n_heads, int32_t head_dim);

/* Merge two attention states over disjoint key sets (FlashInfer merge_state, reference.ts mergeState):
 * lse = log(e^lse_a + e^lse_b), o = o_a e^(lse_a - lse) + o_b e^(lse_b - lse); both -Inf gives o = 0, lse = -Inf.
 * o*: [n][head_dim] f32, lse*: [n] f32; o/lse may alias a. */
DUO_EXPORT void duo_merge(float *o, float *lse, const float *o_a, const float *lse_a, const float *o_b,
                          const float *lse_b, int32_t n, int32_t head_dim);

/* Machine ceilings for the benchmarks: a streaming f32 sum over `bytes` (multiple of 64) and `iters` steps of a
 * register-resident multiply-add loop (48 lanes x (mul + add) = 96 FLOP per step). Results defeat dead-code removal. */
DUO_EXPORT float duo_bench_read(const void *ptr, uint32_t bytes);
DUO_EXPORT float duo_bench_mad(int32_t iters);

DUO_EXPORT int32_t duo_api_version(void);

#endif
