/*
 * The model kernels (wasm/model/kernels.c, compiled per SIMD set) behind checked entry points: weights are blocks of
 * duo_alloc or views of a mapped file (a row-major matrix [rows, cols] of f32, f16, bf16 or llama.cpp's Q8_0 / Q4_0 /
 * Q4_K / Q6_K blocks, host.h DUO_W_*, every one in the file's own layout: widen.h), activations are host arrays. matmul splits the output rows over the threads (each thread streams its own rows of W, which is
 * what bounds decode); the element-wise kernels run in the calling thread.
 */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static int32_t need_model(const char *fn) {
  if (isa()->model) return DUO_OK;
  return fail(DUO_E_UNSUPPORTED, "%s: the model kernels need SIMD; the \"%s\" set has none", fn, isa()->name);
}

/* (elements, bytes) of one block of each weight dtype (DUO_W_*): single elements, or llama.cpp's blocks. */
static const struct {
  int32_t elements, bytes;
} blocks[DUO_W_COUNT] = {{1, 4}, {1, 2}, {1, 2}, {32, 34}, {32, 18}, {256, 144}, {256, 210}};

/* Bytes of one row of `cols` weights of dtype (cols a multiple of its block). */
static uint64_t row_bytes(int32_t dtype, int32_t cols) { return (uint64_t)cols / blocks[dtype].elements * blocks[dtype].bytes; }

/* A weight block holding rows x cols elements of dtype, or a refusal. */
static int32_t check_weights(const char *fn, uint64_t w, int32_t dtype, int32_t rows, int32_t cols) {
  if (dtype < 0 || dtype >= DUO_W_COUNT)
    return fail(DUO_E_ARG, "%s: dtype must be 0 (f32), 1 (f16), 2 (bf16), 3 (q8_0), 4 (q4_0), 5 (q4_k) or 6 (q6_k), got %d", fn, dtype);
  if (rows < 0 || cols < 0) return fail(DUO_E_ARG, "%s: rows and cols must be >= 0", fn);
  if (cols % blocks[dtype].elements) return fail(DUO_E_ARG, "%s: rows of dtype %d are blocks of %d weights, got cols = %d", fn, dtype, blocks[dtype].elements, cols);
  const uint64_t bytes = heap_block_bytes(w), want = (uint64_t)rows * row_bytes(dtype, cols);
  if (!bytes) return fail(DUO_E_HANDLE, "%s: 0x%llx is not a live block of duo_alloc", fn, (unsigned long long)w);
  if (want > bytes) return fail(DUO_E_ARG, "%s: [%d, %d] elements need %llu bytes, the block has %llu", fn, rows, cols, (unsigned long long)want, (unsigned long long)bytes);
  return DUO_OK;
}

typedef struct {
  float *y;
  const float *x, *bias;
  const uint8_t *w;
  int32_t T, nin, nout, dtype, parts;
  float *tmp; /* T > 1: [parts][T][rows of the part], scattered into y afterwards */
} matmul_job;

/* Output rows [o0, o1) of part i: even boundaries (the kernel works on row pairs). */
static void part_rows(const matmul_job *m, int i, int *o0, int *o1) {
  *o0 = (int)((int64_t)m->nout / 2 * i / m->parts * 2);
  *o1 = i == m->parts - 1 ? m->nout : (int)((int64_t)m->nout / 2 * (i + 1) / m->parts * 2);
}

static void matmul_task(void *ctx, int i) {
  const matmul_job *m = ctx;
  int o0, o1;
  part_rows(m, i, &o0, &o1);
  if (o0 >= o1) return;
  float *y = m->T == 1 ? m->y + o0 : m->tmp + (size_t)m->T * o0;
  isa()->model->matmul[m->dtype](y, m->x, m->w + (uint64_t)o0 * row_bytes(m->dtype, m->nin), m->bias ? m->bias + o0 : NULL,
                                 m->T, m->nin, o1 - o0);
}

int32_t duo_model_matmul(float *y, const float *x, uint64_t w, const float *bias, int32_t T, int32_t nin, int32_t nout,
                         int32_t dtype) {
  int32_t rc = need_model("duo_model_matmul");
  if (rc == DUO_OK) rc = check_weights("duo_model_matmul", w, dtype, nout, nin);
  if (rc != DUO_OK) return rc;
  if (T < 0) return fail(DUO_E_ARG, "duo_model_matmul: T must be >= 0");
  if (T == 0 || nout == 0) return DUO_OK;
  if (!y || !x) return fail(DUO_E_ARG, "duo_model_matmul: y and x must not be NULL");
  const int threads = pool_threads(), parts = nout / 2 < threads ? (nout / 2 > 0 ? nout / 2 : 1) : threads;
  matmul_job m = {y, x, bias, (const uint8_t *)(uintptr_t)w, T, nin, nout, dtype, parts, NULL};
  if (parts > 1 && T > 1) {
    m.tmp = malloc(sizeof(float) * (size_t)T * nout);
    if (!m.tmp) return fail(DUO_E_CAPACITY, "duo_model_matmul: no memory for %d x %d outputs", T, nout);
  } else if (parts == 1 && T > 1) { /* one part: straight into y */
    isa()->model->matmul[dtype](y, x, m.w, bias, T, nin, nout);
    return DUO_OK;
  }
  pool_run(threads, parts, matmul_task, &m);
  if (m.tmp) {
    for (int i = 0; i < parts; i++) {
      int o0, o1;
      part_rows(&m, i, &o0, &o1);
      for (int t = 0; t < T; t++)
        memcpy(y + (size_t)t * nout + o0, m.tmp + (size_t)T * o0 + (size_t)t * (o1 - o0), sizeof(float) * (o1 - o0));
    }
    free(m.tmp);
  }
  return DUO_OK;
}

int32_t duo_model_embed(float *y, const int32_t *ids, uint64_t table, int32_t T, int32_t rows, int32_t cols, int32_t dtype) {
  int32_t rc = need_model("duo_model_embed");
  if (rc == DUO_OK) rc = check_weights("duo_model_embed", table, dtype, rows, cols);
  if (rc != DUO_OK) return rc;
  if (T < 0 || (T > 0 && (!y || !ids))) return fail(DUO_E_ARG, "duo_model_embed: T must be >= 0, y and ids not NULL");
  for (int32_t t = 0; t < T; t++)
    if (ids[t] < 0 || ids[t] >= rows) return fail(DUO_E_ARG, "duo_model_embed: ids[%d] = %d is outside the table's %d rows", t, ids[t], rows);
  isa()->model->embed[dtype](y, ids, (const void *)(uintptr_t)table, T, cols);
  return DUO_OK;
}

int32_t duo_model_rmsnorm(float *y, const float *x, const float *w, int32_t T, int32_t n, float eps) {
  int32_t rc = need_model("duo_model_rmsnorm");
  if (rc != DUO_OK) return rc;
  if (T < 0 || n <= 0 || (T > 0 && (!y || !x || !w))) return fail(DUO_E_ARG, "duo_model_rmsnorm: T >= 0, n > 0 and no NULL arrays");
  isa()->model->rmsnorm(y, x, w, T, n, eps);
  return DUO_OK;
}

int32_t duo_model_rope(float *x, const float *cos, const float *sin, int32_t T, int32_t heads, int32_t head_dim) {
  int32_t rc = need_model("duo_model_rope");
  if (rc != DUO_OK) return rc;
  if (T < 0 || heads < 0 || head_dim <= 0 || head_dim % 2 || (T > 0 && (!x || !cos || !sin)))
    return fail(DUO_E_ARG, "duo_model_rope: T, heads >= 0, head_dim even and > 0, no NULL arrays");
  isa()->model->rope(x, cos, sin, T, heads, head_dim);
  return DUO_OK;
}

int32_t duo_model_swiglu(float *y, const float *gate, const float *up, int32_t n) {
  int32_t rc = need_model("duo_model_swiglu");
  if (rc != DUO_OK) return rc;
  if (n < 0 || (n > 0 && (!y || !gate || !up))) return fail(DUO_E_ARG, "duo_model_swiglu: n >= 0 and no NULL arrays");
  isa()->model->swiglu(y, gate, up, n);
  return DUO_OK;
}
