/*
 * duo_attend over threads. The work of one call is cut into tasks, each one call of the single-threaded driver
 * (wasm/src/attend.c) with its own workspace and its own compact output:
 *   rows of decode over token-major segments (every quantized one, float NHD): each thread takes all heads of
 *     1 / threads of the rows (split-KV, below). A token-major row holds every head's record side by side, and decode
 *     reads each row across all heads (attend.c), so a split by heads had both threads stream the same rows with
 *     gaps (quantized: the two halves share lines, and each core's prefetchers run on into the other's records; int8
 *     decode with 2 threads took longer than with 1; bf16 G = 1 ran 1.62-1.74x one thread, rows 1.9x);
 *   heads: otherwise, when the call's KV heads divide evenly over the threads, each thread takes J / threads of them
 *     (tiled buffers keep each head's rows together);
 *   KV rows (split-KV): otherwise each head is a task of its own and its rows are also cut into `parts` pieces (at
 *     segment-local multiples of 64 rows, so tiled segments keep their tile boundaries), whose normalised partial
 *     states are merged by log-sum-exp (duo_merge) afterwards.
 * Task outputs are [t][heads * G][D] (+ lse [t][heads * G]); they are merged and copied into the caller's compact
 * out/lse [t][J * G][D] at the end. Decode reads far more KV than it writes output, so the copy costs little.
 */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define PART_MIN_ROWS 1024 /* a KV piece below this is not worth a thread */

typedef struct {
  int j0, j1;            /* KV heads [j0, j1) of the call */
  const duo_segment *sg; /* the segments (or pieces of them) this task reads */
  int nseg;
  float *out, *lse;      /* [t][(j1 - j0) * G][D], [t][(j1 - j0) * G] */
  int32_t rc;
} task;

typedef struct {
  const float *q;
  int32_t t, num_heads, D, G, q_pos0, windowed, sink, recent;
  const int32_t *q_heads, *kv_slots;
  task *tasks;
} job;

static void run_task(void *ctx, int i) {
  const job *b = ctx;
  task *k = &b->tasks[i];
  const int n = k->j1 - k->j0;
  void *work = aligned_alloc(64, (isa()->attend_workspace(b->t, b->G, n, b->D) + 63) & ~63u);
  if (!work) { k->rc = DUO_E_CAPACITY; return; }
  k->rc = isa()->attend(b->q, b->t, b->num_heads, b->D, b->G, n, b->q_heads + k->j0, b->kv_slots + k->j0, k->sg,
                        k->nseg, b->q_pos0, b->windowed, b->sink, b->recent, k->out, k->lse, work);
  free(work);
}

static uint64_t round64(uint64_t x) { return (x + 63) & ~63ull; }

/* Segment pieces of KV part p of `parts`: global rows [total*p/parts, total*(p+1)/parts), each segment cut at local
 * multiples of 64. Returns how many pieces were written to dst. */
static int cut(const duo_segment *segs, int n, int p, int parts, uint64_t total, duo_segment *dst) {
  const uint64_t lo = total * p / parts, hi = total * (p + 1) / parts;
  uint64_t base = 0;
  int m = 0;
  for (int s = 0; s < n; s++) {
    const uint64_t count = (uint64_t)(segs[s].row_count > 0 ? segs[s].row_count : 0);
    uint64_t a = lo > base ? round64(lo - base) : 0, e = hi > base ? round64(hi - base) : 0;
    if (p == parts - 1) e = count;
    a = a < count ? a : count;
    e = e < count ? e : count;
    base += count;
    if (a >= e) continue;
    duo_segment x = segs[s];
    x.row_start += (int32_t)a;
    x.row_count = (int32_t)(e - a);
    if (x.positions) x.positions += a * 4;
    else x.pos0 += (int32_t)a;
    dst[m++] = x;
  }
  return m;
}

int32_t attend_mt(const float *q, int32_t t, int32_t num_heads, int32_t head_dim, int32_t group, int32_t n_heads,
                  const int32_t *q_heads, const int32_t *kv_slots, const duo_segment *segments, int32_t n_segments,
                  int32_t q_pos0, int32_t windowed, int32_t sink, int32_t recent, float *out, float *lse) {
  const int threads = pool_threads(), J = n_heads, G = group, D = head_dim;
  uint64_t total = 0;
  for (int s = 0; s < n_segments; s++) total += (uint64_t)(segments[s].row_count > 0 ? segments[s].row_count : 0);
  int groups, parts = 1, rowwise = t == 1;
  for (int s = 0; s < n_segments; s++) rowwise &= segments[s].layout == DUO_NHD;
  if (rowwise && n_segments > 0 && total / PART_MIN_ROWS >= (uint64_t)threads) {
    groups = 1;
    parts = threads;
  } else if (J >= threads && J % threads == 0) groups = threads;
  else {
    const uint64_t by_rows = total / PART_MIN_ROWS;
    groups = J;
    parts = by_rows >= (uint64_t)threads ? threads : by_rows < 1 ? 1 : (int)by_rows;
  }
  if (threads <= 1 || (groups == 1 && parts == 1)) { /* one task: straight into the caller's arrays */
    void *work = aligned_alloc(64, (isa()->attend_workspace(t, G, J, D) + 63) & ~63u);
    if (!work) return fail(DUO_E_CAPACITY, "duo_attend: no memory for the workspace");
    int32_t rc = isa()->attend(q, t, num_heads, D, G, J, q_heads, kv_slots, segments, n_segments, q_pos0, windowed,
                               sink, recent, out, lse, work);
    free(work);
    return rc;
  }
  const int ntasks = groups * parts;
  const size_t rows = (size_t)t * J * G; /* output vectors of the whole call */
  task *tasks = calloc((size_t)ntasks, sizeof *tasks);
  duo_segment *pieces = parts > 1 ? malloc(sizeof *pieces * (size_t)n_segments * parts) : NULL;
  float *buf = malloc(sizeof(float) * rows * (D + 1) * parts);
  if (!tasks || (parts > 1 && !pieces) || !buf) {
    free(tasks); free(pieces); free(buf);
    return fail(DUO_E_CAPACITY, "duo_attend: no memory for %d tasks", ntasks);
  }
  /* part p's outputs: out [t][J*G][D] laid out per task; task (g, p) owns the rows of its heads in part p's block */
  int npiece[DUO_MAX_THREADS]; /* parts <= threads */
  for (int p = 0; p < parts && parts > 1; p++) npiece[p] = cut(segments, n_segments, p, parts, total, pieces + (size_t)p * n_segments);
  for (int g = 0; g < groups; g++)
    for (int p = 0; p < parts; p++) {
      task *k = &tasks[g * parts + p];
      k->j0 = J * g / groups;
      k->j1 = J * (g + 1) / groups;
      k->sg = parts > 1 ? pieces + (size_t)p * n_segments : segments;
      k->nseg = parts > 1 ? npiece[p] : n_segments;
      float *o = buf + rows * (D + 1) * p;
      k->out = o + (size_t)t * k->j0 * G * D;      /* [t][(j1 - j0) G][D] */
      k->lse = o + rows * D + (size_t)t * k->j0 * G; /* [t][(j1 - j0) G] */
    }
  job b = {q, t, num_heads, D, G, q_pos0, windowed, sink, recent, q_heads, kv_slots, tasks};
  pool_run(threads, ntasks, run_task, &b);
  int32_t rc = DUO_OK;
  for (int i = 0; i < ntasks; i++) if (tasks[i].rc < 0 && rc == DUO_OK) rc = tasks[i].rc;
  if (rc == DUO_OK)
    for (int g = 0; g < groups; g++) {
      task *k0 = &tasks[g * parts];
      const int n = (k0->j1 - k0->j0) * G;
      for (int p = 1; p < parts; p++) {
        task *k = &tasks[g * parts + p];
        isa()->merge(k0->out, k0->lse, k0->out, k0->lse, k->out, k->lse, t * n, D);
      }
      for (int r = 0; r < t; r++) {
        memcpy(out + ((size_t)r * J * G + (size_t)k0->j0 * G) * D, k0->out + (size_t)r * n * D, sizeof(float) * n * D);
        if (lse) memcpy(lse + (size_t)r * J * G + (size_t)k0->j0 * G, k0->lse + (size_t)r * n, sizeof(float) * n);
      }
    }
  free(tasks);
  free(pieces);
  free(buf);
  return rc < 0 ? fail(rc, "duo_attend: a task failed (status %d)", rc) : DUO_OK;
}
