/* What the native library's own files share: the kernels of one instruction set, the heap, the pool, errors. */
#ifndef DUO_NATIVE_INTERNAL_H
#define DUO_NATIVE_INTERNAL_H
#include "host.h"

/* One build of the model kernels (wasm/model/kernels.c), in the SIMD sets only. */
typedef void matmul_fn(float *y, const float *x, const void *w, const float *b, int T, int nin, int nout);
typedef void embed_fn(float *y, const int32_t *ids, const void *table, int T, int n);
typedef struct {
  matmul_fn *matmul[DUO_W_COUNT]; /* by weight dtype (host.h DUO_W_*) */
  embed_fn *embed[DUO_W_COUNT];
  void (*rmsnorm)(float *y, const float *x, const float *w, int T, int n, float eps);
  void (*rope)(float *x, const float *cos, const float *sin, int T, int H, int D);
  void (*swiglu)(float *y, const float *g, const float *u, int n);
} model_kernels;

/* One build of the wasm/src drivers and kernels (native/build.sh compiles them once per instruction set, every
 * symbol suffixed with the set's name). The types are those of duo.h's prototypes. */
typedef struct {
  const char *name;
  __typeof__(duo_append) *append;
  __typeof__(duo_attend) *attend;
  __typeof__(duo_attend_workspace) *attend_workspace;
  __typeof__(duo_merge) *merge;
  __typeof__(duo_bench_read) *bench_read;
  __typeof__(duo_bench_mad) *bench_mad;
  const model_kernels *model; /* NULL for the scalar set */
} isa_kernels;

/* The kernels chosen at load (dispatch.c). */
const isa_kernels *isa(void);

/* Bytes of the live block at `block` (memory of duo_alloc or a view of a mapped file), or 0 when no block starts
 * there (heap.c). For ops that only read the block. */
uint64_t heap_block_bytes(uint64_t block);
/* The same for blocks this library may write: memory of duo_alloc only (a view of a mapped file gives 0). */
uint64_t heap_owned_bytes(uint64_t block);
/* Register [block, block + bytes) of the file mapping at `owner` as a live read-only block (DUO_E_ARG when a live
 * block already starts there); duo_free unregisters it and calls map_drop(owner). */
int32_t heap_register_view(uint64_t block, uint64_t bytes, uint64_t owner);
/* Drop one reference to the mapping at `base`; the last one unmaps it (map.c). */
void map_drop(uint64_t base);

/* Host blocks of SLAB_MIN ..= SLAB_MAX bytes (heap.c) come from 2 MiB huge-page chunks shared by blocks of one size
 * (slab.c): zero-filled, 4 KiB aligned. slab_free takes the size the block was allocated with. */
#define HUGE_PAGE (2u << 20) /* a transparent huge page: heap.c aligns blocks of this size and more to it */
#define SLAB_MIN (16u << 10)
#define SLAB_MAX (1u << 20)
#define SLAB_STEP (4u << 10)
void *slab_alloc(uint64_t bytes);
void *heap_pages(uint64_t size); /* heap.c: fresh zero pages, 2 MiB aligned with huge pages asked for from 2 MiB on */
void slab_free(void *p, uint64_t bytes);

/* Run fn(ctx, i) for i < n on up to `threads` threads (the caller is one of them); returns when all are done. */
typedef void (*pool_fn)(void *ctx, int task);
void pool_run(int threads, int n, pool_fn fn, void *ctx);
/* The thread count set by duo_threads. */
int pool_threads(void);

/* Record the calling thread's last error (printf format) and return `status`. */
int32_t fail(int32_t status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Threaded attention over already validated arguments (attend_mt.c). */
int32_t attend_mt(const float *q, int32_t t, int32_t num_heads, int32_t head_dim, int32_t group, int32_t n_heads,
                  const int32_t *q_heads, const int32_t *kv_slots, const duo_segment *segments, int32_t n_segments,
                  int32_t q_pos0, int32_t windowed, int32_t sink, int32_t recent, float *out, float *lse);

#endif
