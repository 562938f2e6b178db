/*
 * The exported entry points: the instruction set chosen once at load, then duo.h's ops, each validated against the
 * registered blocks (host.h) before any kernel runs, so that a refused call writes nothing and says why.
 * The kernels of each instruction set are the wasm/src drivers and twins, compiled by native/build.sh with every
 * symbol suffixed (duo_attend_avx2, k_pv_m4_avx2, ...); KERNELS(s) declares one set and its table.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "../../wasm/src/quant.h" /* kv_head_bytes: a row head's bytes per KV dtype */

/* The model kernels of a SIMD set (wasm/model/kernels.c; the entry points take typed weight pointers, called here
 * through void pointers of the same representation), by weight dtype (host.h DUO_W_*). */
#define QUANT_KERNELS(t, s)                                                                                          \
  void matmul_##t##_##s(float *, const float *, const uint8_t *, const float *, int, int, int);                      \
  void embed_##t##_##s(float *, const int32_t *, const uint8_t *, int, int);
#define MODEL_KERNELS(s)                                                                                             \
  void matmul_f32_##s(float *, const float *, const float *, const float *, int, int, int);                          \
  void matmul_f16_##s(float *, const float *, const uint16_t *, const float *, int, int, int);                       \
  void matmul_bf16_##s(float *, const float *, const uint16_t *, const float *, int, int, int);                      \
  void embed_f32_##s(float *, const int32_t *, const float *, int, int);                                             \
  void embed_f16_##s(float *, const int32_t *, const uint16_t *, int, int);                                          \
  void embed_bf16_##s(float *, const int32_t *, const uint16_t *, int, int);                                         \
  QUANT_KERNELS(q8_0, s) QUANT_KERNELS(q4_0, s) QUANT_KERNELS(q4_k, s) QUANT_KERNELS(q6_k, s)                       \
  void rmsnorm_##s(float *, const float *, const float *, int, int, float);                                          \
  void rope_##s(float *, const float *, const float *, int, int, int);                                               \
  void swiglu_##s(float *, const float *, const float *, int);                                                       \
  static const model_kernels model_##s = {                                                                           \
      {(matmul_fn *)matmul_f32_##s, (matmul_fn *)matmul_f16_##s, (matmul_fn *)matmul_bf16_##s,                        \
       (matmul_fn *)matmul_q8_0_##s, (matmul_fn *)matmul_q4_0_##s, (matmul_fn *)matmul_q4_k_##s,                     \
       (matmul_fn *)matmul_q6_k_##s},                                                                                \
      {(embed_fn *)embed_f32_##s, (embed_fn *)embed_f16_##s, (embed_fn *)embed_bf16_##s,                              \
       (embed_fn *)embed_q8_0_##s, (embed_fn *)embed_q4_0_##s, (embed_fn *)embed_q4_k_##s,                           \
       (embed_fn *)embed_q6_k_##s},                                                                                  \
      rmsnorm_##s, rope_##s, swiglu_##s};

#define KERNELS(s, model)                                                                                            \
  __typeof__(duo_append) duo_append_##s;                                                                             \
  __typeof__(duo_attend) duo_attend_##s;                                                                             \
  __typeof__(duo_attend_workspace) duo_attend_workspace_##s;                                                         \
  __typeof__(duo_merge) duo_merge_##s;                                                                               \
  __typeof__(duo_bench_read) duo_bench_read_##s;                                                                     \
  __typeof__(duo_bench_mad) duo_bench_mad_##s;                                                                       \
  static const isa_kernels kernels_##s = {#s, duo_append_##s, duo_attend_##s, duo_attend_workspace_##s,             \
                                          duo_merge_##s, duo_bench_read_##s, duo_bench_mad_##s, model};

KERNELS(scalar, NULL)

/* A kernel set and whether this CPU runs it; best first. */
typedef struct {
  const isa_kernels *k;
  int ok;
} choice;

#if defined(__x86_64__)
MODEL_KERNELS(sse41)
MODEL_KERNELS(avx2)
MODEL_KERNELS(avx512)
KERNELS(sse41, &model_sse41)
KERNELS(avx2, &model_avx2)
KERNELS(avx512, &model_avx512)
/* x86-64-v4 / v3 / v2: the levels build.sh compiles the sets for (-march). */
static int choices(choice *c) {
  __builtin_cpu_init();
  c[0] = (choice){&kernels_avx512, __builtin_cpu_supports("x86-64-v4")};
  c[1] = (choice){&kernels_avx2, __builtin_cpu_supports("x86-64-v3")};
  c[2] = (choice){&kernels_sse41, __builtin_cpu_supports("x86-64-v2")};
  c[3] = (choice){&kernels_scalar, 1};
  return 4;
}
#elif defined(__aarch64__)
MODEL_KERNELS(neon)
KERNELS(neon, &model_neon)
static int choices(choice *c) {
  c[0] = (choice){&kernels_neon, 1};
  c[1] = (choice){&kernels_scalar, 1};
  return 2;
}
#else
static int choices(choice *c) {
  c[0] = (choice){&kernels_scalar, 1};
  return 1;
}
#endif

static const isa_kernels *_Atomic chosen;

int32_t duo_select_isa(const char *name) {
  choice c[4];
  const int n = choices(c);
  for (int i = 0; i < n; i++)
    if (c[i].ok && (!name || !*name || strcmp(name, c[i].k->name) == 0)) {
      chosen = c[i].k;
      return DUO_OK;
    }
  return fail(DUO_E_UNSUPPORTED, "duo_select_isa: \"%s\" is not an instruction set this build has and this CPU runs", name);
}

/* At load: the best set the CPU runs, or the one DUO_NATIVE_ISA names when the CPU runs it too. */
__attribute__((constructor)) static void choose(void) {
  if (duo_select_isa(getenv("DUO_NATIVE_ISA")) != DUO_OK) duo_select_isa(NULL);
}

const isa_kernels *isa(void) { return chosen; }
const char *duo_isa(void) { return chosen->name; }
int32_t duo_api_version(void) { return DUO_API_VERSION; }

static _Thread_local char last_error[256];
const char *duo_last_error(void) { return last_error; }

int32_t fail(int32_t status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return status;
}

int32_t duo_append(void *dst, int32_t dtype, int32_t row_heads, int32_t head_dim, const float *src, int32_t src_heads,
                   const int32_t *heads, const int32_t *rows, int32_t n, int32_t layout, int32_t buffer_rows) {
  last_error[0] = 0;
  const uint64_t bytes = heap_owned_bytes((uint64_t)(uintptr_t)dst);
  if (!bytes) return fail(DUO_E_HANDLE, "duo_append: dst %p is not a live block of duo_alloc (a view of a mapped file is read-only)", dst);
  if (dtype < DUO_F32 || dtype > DUO_INT4) return fail(DUO_E_ARG, "duo_append: dtype must be 0 (f32), 1 (f16), 2 (bf16), 3 (int8) or 4 (int4), got %d", dtype);
  if (layout < DUO_NHD || layout > DUO_V64) return fail(DUO_E_ARG, "duo_append: layout must be 0 (NHD), 1 (K64) or 2 (V64), got %d", layout);
  if (is_quantized(dtype) && layout != DUO_NHD) return fail(DUO_E_ARG, "duo_append: int8 / int4 buffers are token-major (layout 0, NHD) only, got layout %d", layout);
  if (row_heads < 0 || src_heads < 0 || n < 0) return fail(DUO_E_ARG, "duo_append: row_heads, src_heads and n must be >= 0");
  if (head_dim <= 0 || head_dim % (layout == DUO_NHD ? 4 : 8))
    return fail(DUO_E_ARG, "duo_append: head_dim must be a positive multiple of %d, got %d", layout == DUO_NHD ? 4 : 8, head_dim);
  if (n > 0 && row_heads > 0 && (!src || !heads || !rows)) return fail(DUO_E_ARG, "duo_append: src, heads and rows must not be NULL");
  const uint64_t row_bytes = (uint64_t)row_heads * kv_head_bytes(dtype, (uint32_t)head_dim);
  uint64_t capacity = row_bytes ? bytes / row_bytes : 0;
  if (layout != DUO_NHD) {
    if (buffer_rows <= 0 || buffer_rows % DUO_TILE) return fail(DUO_E_ARG, "duo_append: buffer_rows must be a positive multiple of 64 for a tiled buffer, got %d", buffer_rows);
    if ((uint64_t)buffer_rows * row_bytes * 2 > bytes)
      return fail(DUO_E_ARG, "duo_append: a tiled buffer of %d rows needs %llu bytes, the block has %llu", buffer_rows,
                  (unsigned long long)((uint64_t)buffer_rows * row_bytes * 2), (unsigned long long)bytes);
    capacity = (uint64_t)buffer_rows;
  }
  if (row_bytes * (capacity < 1 ? 1 : capacity) > 0xffffffffull * (layout == DUO_NHD ? 1 : 2))
    return fail(DUO_E_UNSUPPORTED, "duo_append: buffers hold less than 4 GiB (32-bit offsets)");
  for (int32_t j = 0; j < row_heads && n > 0; j++)
    if (heads[j] < 0 || heads[j] >= src_heads) return fail(DUO_E_ARG, "duo_append: heads[%d] = %d is outside [0, %d)", j, heads[j], src_heads);
  for (int32_t t = 0; t < n && row_heads > 0; t++)
    if (rows[t] >= 0 && (uint64_t)rows[t] >= capacity) return fail(DUO_E_ARG, "duo_append: rows[%d] = %d is past the buffer's %llu rows", t, rows[t], (unsigned long long)capacity);
  int32_t rc = isa()->append(dst, dtype, row_heads, head_dim, src, src_heads, heads, rows, n, layout, buffer_rows);
  return rc < 0 ? fail(rc, "duo_append: the kernel refused its arguments") : rc;
}

/* A segment's rows, buffers and slots against the blocks it names (the buffers' extent per layout: duo.h). */
static int32_t check_segment(const duo_segment *sg, int i, int32_t D, const int32_t *kv_slots, int32_t J) {
  const int32_t dt = sg->dtype & DUO_DTYPE_MASK;
  if (dt > DUO_INT4 || (sg->dtype & ~(DUO_DTYPE_MASK | DUO_NONFINITE))) return fail(DUO_E_ARG, "duo_attend: segment %d: dtype %d is not a DUO_F32/F16/BF16/INT8/INT4 code (| DUO_NONFINITE)", i, sg->dtype);
  if (sg->row_heads < 1 || sg->row_start < 0 || sg->row_count < 0) return fail(DUO_E_ARG, "duo_attend: segment %d: row_heads must be >= 1, row_start and row_count >= 0", i);
  if (sg->row_count > 0 && !sg->positions && (int64_t)sg->pos0 + sg->row_count - 1 > INT32_MAX) return fail(DUO_E_ARG, "duo_attend: segment %d: positions pass 2^31 - 1", i);
  for (int32_t j = 0; j < J; j++)
    if (kv_slots[j] < 0 || kv_slots[j] >= sg->row_heads) return fail(DUO_E_ARG, "duo_attend: kv_slots[%d] = %d is outside segment %d's %d row heads", j, kv_slots[j], i, sg->row_heads);
  const uint64_t row_bytes = (uint64_t)sg->row_heads * kv_head_bytes(dt, (uint32_t)D);
  uint64_t need, kb = heap_block_bytes(sg->k), vb = heap_block_bytes(sg->v);
  if (!kb || !vb) return fail(DUO_E_HANDLE, "duo_attend: segment %d: its %s buffer is not a live block of duo_alloc", i, kb ? "v" : "k");
  if (sg->layout == DUO_T64) {
    if (is_quantized(dt)) return fail(DUO_E_ARG, "duo_attend: segment %d: int8 / int4 buffers are token-major (layout 0, NHD) only", i);
    if (sg->k != sg->v) return fail(DUO_E_ARG, "duo_attend: segment %d is T64: k and v must be the one tiled buffer", i);
    if (D % 8 || sg->buffer_rows <= 0 || sg->buffer_rows % DUO_TILE || sg->row_count > sg->buffer_rows - sg->row_start)
      return fail(DUO_E_ARG, "duo_attend: segment %d is T64: head_dim must be a multiple of 8 and buffer_rows a positive multiple of 64 holding rows [%d, %d), got head_dim %d, buffer_rows %d", i, sg->row_start, sg->row_start + sg->row_count, D, sg->buffer_rows);
    need = (uint64_t)sg->buffer_rows * row_bytes * 2;
  } else if (sg->layout == DUO_NHD) need = (uint64_t)(sg->row_start + sg->row_count) * row_bytes;
  else return fail(DUO_E_ARG, "duo_attend: segment %d: layout must be 0 (NHD) or 1 (T64), got %d", i, sg->layout);
  if (need > kb || need > vb) return fail(DUO_E_ARG, "duo_attend: segment %d needs %llu bytes of its buffers, they have %llu and %llu", i, (unsigned long long)need, (unsigned long long)kb, (unsigned long long)vb);
  if (need > 0xffffffffull * (sg->layout == DUO_T64 ? 2 : 1)) return fail(DUO_E_UNSUPPORTED, "duo_attend: segment %d: buffers hold less than 4 GiB (32-bit offsets)", i);
  return DUO_OK;
}

int32_t duo_attend(const float *q, int32_t t, int32_t num_heads, int32_t head_dim, int32_t group, int32_t n_heads,
                   const int32_t *q_heads, const int32_t *kv_slots, const duo_segment *segments, int32_t n_segments,
                   int32_t q_pos0, int32_t windowed, int32_t sink, int32_t recent, float *out, float *lse, void *work) {
  (void)work; /* each task allocates its own (attend_mt.c) */
  last_error[0] = 0;
  if (t < 0 || num_heads < 0 || group <= 0 || n_heads < 0 || n_segments < 0)
    return fail(DUO_E_ARG, "duo_attend: t, num_heads, n_heads and n_segments must be >= 0 and group > 0");
  if (head_dim <= 0 || head_dim % 4) return fail(DUO_E_ARG, "duo_attend: head_dim must be a positive multiple of 4, got %d", head_dim);
  if (windowed && (sink < 0 || recent < 0)) return fail(DUO_E_ARG, "duo_attend: sink and recent must be >= 0 in window mode");
  if (t == 0 || n_heads == 0) return DUO_OK;
  if ((int64_t)q_pos0 + t - 1 > INT32_MAX || q_pos0 < 0) return fail(DUO_E_ARG, "duo_attend: query positions [%d, %d] must lie in [0, 2^31)", q_pos0, q_pos0 + t - 1);
  if (!q || !q_heads || !kv_slots || !out || (n_segments > 0 && !segments)) return fail(DUO_E_ARG, "duo_attend: q, q_heads, kv_slots, out and segments must not be NULL");
  for (int32_t j = 0; j < n_heads; j++)
    if (q_heads[j] < 0 || ((int64_t)q_heads[j] + 1) * group > num_heads)
      return fail(DUO_E_ARG, "duo_attend: q_heads[%d] = %d selects query heads past num_heads = %d", j, q_heads[j], num_heads);
  for (int32_t i = 0; i < n_segments; i++) {
    int32_t rc = check_segment(&segments[i], i, head_dim, kv_slots, n_heads);
    if (rc != DUO_OK) return rc;
  }
  return attend_mt(q, t, num_heads, head_dim, group, n_heads, q_heads, kv_slots, segments, n_segments, q_pos0, windowed,
                   sink, recent, out, lse);
}

uint32_t duo_attend_workspace(int32_t t, int32_t group, int32_t n_heads, int32_t head_dim) {
  return isa()->attend_workspace(t, group, n_heads, head_dim);
}

void duo_merge(float *o, float *lse, const float *o_a, const float *lse_a, const float *o_b, const float *lse_b,
               int32_t n, int32_t head_dim) {
  if (n > 0 && head_dim > 0 && head_dim % 4 == 0 && o && lse && o_a && lse_a && o_b && lse_b)
    isa()->merge(o, lse, o_a, lse_a, o_b, lse_b, n, head_dim);
}

/* The benchmark ceilings over the threads: each thread streams its share of the bytes (64-byte pieces), or runs
 * `iters` multiply-add steps of its own (so the FLOP count is threads x iters x 96). */
typedef struct {
  const uint8_t *p;
  uint32_t bytes;
  int32_t iters;
  int parts;
  float sums[DUO_MAX_THREADS];
} bench_job;

static void bench_read_task(void *ctx, int i) {
  bench_job *b = ctx;
  uint64_t lo = (uint64_t)b->bytes / 64 * i / b->parts * 64, hi = (uint64_t)b->bytes / 64 * (i + 1) / b->parts * 64;
  b->sums[i] = isa()->bench_read(b->p + lo, (uint32_t)(hi - lo));
}

static void bench_mad_task(void *ctx, int i) {
  bench_job *b = ctx;
  b->sums[i] = isa()->bench_mad(b->iters);
}

float duo_bench_read(const void *ptr, uint32_t bytes) {
  bench_job b = {.p = ptr, .bytes = bytes & ~63u, .parts = pool_threads()};
  pool_run(b.parts, b.parts, bench_read_task, &b);
  float s = 0;
  for (int i = 0; i < b.parts; i++) s += b.sums[i];
  return s;
}

float duo_bench_mad(int32_t iters) {
  bench_job b = {.iters = iters, .parts = pool_threads()};
  pool_run(b.parts, b.parts, bench_mad_task, &b);
  float s = 0;
  for (int i = 0; i < b.parts; i++) s += b.sums[i];
  return s;
}
