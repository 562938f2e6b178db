/*
 * The backward kernels of gate identification (wasm/model/backward.c, compiled per SIMD set by native/build.sh with
 * the set's suffix) behind checked entry points, for src/identify/backward-kernels.ts. Weights are the model
 * kernels' blocks (model.c: f32, f16 or bf16 rows as the file stores them); activations are host arrays. The
 * transposed matmul splits dx's columns over the threads, the attention forward its query heads, the attention
 * backward its KV heads (each thread owns its heads' rows of dk and dv: no atomics, the same sums whatever the
 * thread count); the element-wise kernels run in the calling thread. Nothing is written by a refused call.
 */
#include <string.h>
#include "internal.h"
#include "../../wasm/model/backward.h"

/* One SIMD set's build of backward.c. */
typedef struct {
  const char *isa;
  void (*linear[3])(float *, const float *, const void *, int, int, int, int, int, int); /* by DUO_W_F32/F16/BF16 */
  __typeof__(bwd_rms_inv) *rms_inv;
  __typeof__(bwd_rmsnorm) *rmsnorm;
  __typeof__(bwd_swiglu) *swiglu;
  __typeof__(bwd_rope) *rope;
  __typeof__(bwd_attend) *attend;
  __typeof__(bwd_attend_backward) *attend_backward;
  __typeof__(bwd_mix) *mix;
} backward_kernels;

#define BACKWARD_KERNELS(s)                                                                                          \
  void bwd_linear_f32_##s(float *, const float *, const float *, int, int, int, int, int, int);                      \
  void bwd_linear_f16_##s(float *, const float *, const uint16_t *, int, int, int, int, int, int);                   \
  void bwd_linear_bf16_##s(float *, const float *, const uint16_t *, int, int, int, int, int, int);                  \
  __typeof__(bwd_rms_inv) bwd_rms_inv_##s;                                                                           \
  __typeof__(bwd_rmsnorm) bwd_rmsnorm_##s;                                                                           \
  __typeof__(bwd_swiglu) bwd_swiglu_##s;                                                                             \
  __typeof__(bwd_rope) bwd_rope_##s;                                                                                 \
  __typeof__(bwd_attend) bwd_attend_##s;                                                                             \
  __typeof__(bwd_attend_backward) bwd_attend_backward_##s;                                                           \
  __typeof__(bwd_mix) bwd_mix_##s;                                                                                   \
  static const backward_kernels backward_##s = {                                                                     \
      #s,                                                                                                            \
      {(void *)bwd_linear_f32_##s, (void *)bwd_linear_f16_##s, (void *)bwd_linear_bf16_##s},                         \
      bwd_rms_inv_##s, bwd_rmsnorm_##s, bwd_swiglu_##s, bwd_rope_##s, bwd_attend_##s, bwd_attend_backward_##s,       \
      bwd_mix_##s};

#if defined(__x86_64__)
BACKWARD_KERNELS(sse41)
BACKWARD_KERNELS(avx2)
BACKWARD_KERNELS(avx512)
static const backward_kernels *const sets[] = {&backward_avx512, &backward_avx2, &backward_sse41};
#elif defined(__aarch64__)
BACKWARD_KERNELS(neon)
static const backward_kernels *const sets[] = {&backward_neon};
#endif

/* The build of the instruction set the library runs now (duo_select_isa may change it), or NULL on "scalar". */
static const backward_kernels *bwd(const char *fn) {
  for (size_t i = 0; i < sizeof sets / sizeof *sets; i++)
    if (!strcmp(sets[i]->isa, isa()->name)) return sets[i];
  fail(DUO_E_UNSUPPORTED, "%s: the backward kernels need SIMD; the \"%s\" set has none", fn, isa()->name);
  return NULL;
}

/* Subnormal operands and results make x86 multiply-adds take microcode assists: a [1000, 896] x [896, 896]
 * transposed matmul went from 21 ms to 3.1 s with dy around 1e-36, and one optimize step of a 0.5B model from ~3x to
 * 15-22x a plain forward (its gradients pass through softmax weights far below 2^-126). The two heavy kernels (the
 * transposed matmul, attention) therefore run with subnormals flushed to zero — FTZ + DAZ on x86, FZ on aarch64 —
 * set in whichever thread runs a part and restored after it: a difference below 2^-126 absolute per operation, far
 * inside every tolerance of the backward (the float64 reference keeps them). */
static inline uint64_t flush_subnormals(void) {
#if defined(__x86_64__)
  const unsigned m = __builtin_ia32_stmxcsr();
  __builtin_ia32_ldmxcsr(m | 0x8040); /* FTZ (bit 15) | DAZ (bit 6) */
  return m;
#elif defined(__aarch64__)
  uint64_t f;
  __asm__ volatile("mrs %0, fpcr" : "=r"(f));
  __asm__ volatile("msr fpcr, %0" : : "r"(f | (1ull << 24))); /* FZ */
  return f;
#else
  return 0;
#endif
}

static inline void restore_fp_mode(uint64_t m) {
#if defined(__x86_64__)
  __builtin_ia32_ldmxcsr((unsigned)m);
#elif defined(__aarch64__)
  __asm__ volatile("msr fpcr, %0" : : "r"(m));
#else
  (void)m;
#endif
}

typedef struct {
  const backward_kernels *k;
  float *dx;
  const float *dy;
  const void *w;
  int32_t T, nin, nout, dtype, accumulate, parts;
} linear_job;

/* Columns [k0, k1) of part i: multiples of 32 (the AVX-512 GEMM's runs of columns), the last part takes the tail. */
static void linear_task(void *ctx, int i) {
  const linear_job *m = ctx;
  const int64_t groups = (m->nin + 31) / 32;
  int k0 = (int)(groups * i / m->parts * 32), k1 = (int)(groups * (i + 1) / m->parts * 32);
  if (k1 > m->nin) k1 = m->nin;
  if (k0 >= k1) return;
  const uint64_t mode = flush_subnormals();
  m->k->linear[m->dtype](m->dx, m->dy, m->w, m->T, m->nin, m->nout, k0, k1, m->accumulate);
  restore_fp_mode(mode);
}

/* dx[T, nin] (+)= dy[T, nout] · W[nout, nin]; W a block of dtype 0 (f32), 1 (f16) or 2 (bf16). */
DUO_EXPORT int32_t duo_bwd_linear(float *dx, const float *dy, uint64_t w, int32_t T, int32_t nin, int32_t nout,
                                  int32_t dtype, int32_t accumulate) {
  const backward_kernels *k = bwd("duo_bwd_linear");
  if (!k) return DUO_E_UNSUPPORTED;
  if (dtype < DUO_W_F32 || dtype > DUO_W_BF16)
    return fail(DUO_E_ARG, "duo_bwd_linear: dtype must be 0 (f32), 1 (f16) or 2 (bf16), got %d", dtype);
  if (T < 0 || nin <= 0 || nout <= 0) return fail(DUO_E_ARG, "duo_bwd_linear: T >= 0, nin > 0 and nout > 0");
  const uint64_t have = heap_block_bytes(w), want = (uint64_t)nout * nin * (dtype == DUO_W_F32 ? 4 : 2);
  if (!have) return fail(DUO_E_HANDLE, "duo_bwd_linear: 0x%llx is not a live block of duo_alloc", (unsigned long long)w);
  if (want > have)
    return fail(DUO_E_ARG, "duo_bwd_linear: [%d, %d] weights need %llu bytes, the block has %llu", nout, nin,
                (unsigned long long)want, (unsigned long long)have);
  if (T == 0) return DUO_OK;
  if (!dx || !dy) return fail(DUO_E_ARG, "duo_bwd_linear: dx and dy must not be NULL");
  const int groups = (nin + 31) / 32, threads = pool_threads(), parts = groups < threads ? groups : threads;
  linear_job m = {k, dx, dy, (const void *)(uintptr_t)w, T, nin, nout, dtype, accumulate != 0, parts};
  pool_run(threads, parts, linear_task, &m);
  return DUO_OK;
}

/* rinv[T] = 1/sqrt(mean x² + eps), x [T, n] */
DUO_EXPORT int32_t duo_bwd_rms_inv(float *rinv, const float *x, int32_t T, int32_t n, float eps) {
  const backward_kernels *k = bwd("duo_bwd_rms_inv");
  if (!k) return DUO_E_UNSUPPORTED;
  if (T < 0 || n <= 0 || (T > 0 && (!rinv || !x))) return fail(DUO_E_ARG, "duo_bwd_rms_inv: T >= 0, n > 0 and no NULL arrays");
  k->rms_inv(rinv, x, T, n, eps);
  return DUO_OK;
}

/* dx[T, n] += rmsnorm backward of dy [T, n] at x [T, n], weight w [n], rinv [T] */
DUO_EXPORT int32_t duo_bwd_rmsnorm(float *dx, const float *dy, const float *x, const float *w, const float *rinv,
                                   int32_t T, int32_t n) {
  const backward_kernels *k = bwd("duo_bwd_rmsnorm");
  if (!k) return DUO_E_UNSUPPORTED;
  if (T < 0 || n <= 0 || (T > 0 && (!dx || !dy || !x || !w || !rinv)))
    return fail(DUO_E_ARG, "duo_bwd_rmsnorm: T >= 0, n > 0 and no NULL arrays");
  k->rmsnorm(dx, dy, x, w, rinv, T, n);
  return DUO_OK;
}

/* da, du [n] from dm, a, u [n] */
DUO_EXPORT int32_t duo_bwd_swiglu(float *da, float *du, const float *dm, const float *a, const float *u, int32_t n) {
  const backward_kernels *k = bwd("duo_bwd_swiglu");
  if (!k) return DUO_E_UNSUPPORTED;
  if (n < 0 || (n > 0 && (!da || !du || !dm || !a || !u))) return fail(DUO_E_ARG, "duo_bwd_swiglu: n >= 0 and no NULL arrays");
  k->swiglu(da, du, dm, a, u, n);
  return DUO_OK;
}

/* RoPE⁻¹ in place on x [T, heads, head_dim]; cos, sin [T, head_dim / 2] */
DUO_EXPORT int32_t duo_bwd_rope(float *x, const float *cos, const float *sin, int32_t T, int32_t heads, int32_t head_dim) {
  const backward_kernels *k = bwd("duo_bwd_rope");
  if (!k) return DUO_E_UNSUPPORTED;
  if (T < 0 || heads < 0 || head_dim <= 0 || head_dim % 2 || (T > 0 && (!x || !cos || !sin)))
    return fail(DUO_E_ARG, "duo_bwd_rope: T, heads >= 0, head_dim even and > 0, no NULL arrays");
  k->rope(x, cos, sin, T, heads, head_dim);
  return DUO_OK;
}

/* Shapes shared by the attention entry points; ranges [nq, 3] must satisfy 0 <= a <= b <= e <= nk. */
static int32_t check_attend(const char *fn, const int32_t *ranges, int32_t nq, int32_t nk, int32_t Hq, int32_t Hkv,
                            int32_t D) {
  if (nq < 0 || nk < 0 || Hq <= 0 || Hkv <= 0 || Hq % Hkv || D <= 0 || D % 4 || D > 256)
    return fail(DUO_E_ARG, "%s: nq, nk >= 0; Hq, Hkv > 0 with Hkv dividing Hq; head_dim a multiple of 4 in 4..256 (got nq %d, nk %d, Hq %d, Hkv %d, D %d)",
                fn, nq, nk, Hq, Hkv, D);
  if (nq > 0 && !ranges) return fail(DUO_E_ARG, "%s: ranges must not be NULL", fn);
  for (int32_t i = 0; i < nq; i++) {
    const int32_t a = ranges[3 * i], b = ranges[3 * i + 1], e = ranges[3 * i + 2];
    if (a < 0 || a > b || b > e || e > nk)
      return fail(DUO_E_ARG, "%s: ranges[%d] = (%d, %d, %d) must satisfy 0 <= sinks <= start <= end <= nk = %d", fn, i, a, b, e, nk);
  }
  return DUO_OK;
}

typedef struct {
  const backward_kernels *k;
  float *out, *lse, *dq, *dk, *dv;
  const float *q, *kk, *v, *dO, *O, *lse_in;
  const int32_t *ranges;
  int32_t nq, Hq, Hkv, D, parts, units; /* units: query heads (forward) or KV heads (backward) */
} attend_job;

static void attend_task(void *ctx, int i) {
  const attend_job *j = ctx;
  const int u0 = (int)((int64_t)j->units * i / j->parts), u1 = (int)((int64_t)j->units * (i + 1) / j->parts);
  if (u0 >= u1) return;
  const uint64_t mode = flush_subnormals();
  if (j->out) j->k->attend(j->out, j->lse, j->q, j->kk, j->v, j->ranges, j->nq, j->Hq, j->Hkv, j->D, u0, u1);
  else j->k->attend_backward(j->dq, j->dk, j->dv, j->dO, j->O, j->lse_in, j->q, j->kk, j->v, j->ranges, j->nq, j->Hq, j->Hkv, j->D, u0, u1);
  restore_fp_mode(mode);
}

static int parts_of(int units) {
  const int threads = pool_threads();
  return units < threads ? units : threads;
}

/* out [nq, Hq, D], lse [nq, Hq] = streaming attention of q [nq, Hq, D] over k, v [nk, Hkv, D] on the key ranges */
DUO_EXPORT int32_t duo_bwd_attend(float *out, float *lse, const float *q, const float *k, const float *v,
                                  const int32_t *ranges, int32_t nq, int32_t nk, int32_t Hq, int32_t Hkv, int32_t D) {
  const backward_kernels *kn = bwd("duo_bwd_attend");
  if (!kn) return DUO_E_UNSUPPORTED;
  int32_t rc = check_attend("duo_bwd_attend", ranges, nq, nk, Hq, Hkv, D);
  if (rc != DUO_OK || nq == 0) return rc;
  if (!out || !lse || !q || (nk > 0 && (!k || !v))) return fail(DUO_E_ARG, "duo_bwd_attend: no NULL arrays");
  attend_job j = {kn, out, lse, NULL, NULL, NULL, q, k, v, NULL, NULL, NULL, ranges, nq, Hq, Hkv, D, parts_of(Hq), Hq};
  pool_run(pool_threads(), j.parts, attend_task, &j);
  return DUO_OK;
}

/* dq [nq, Hq, D], dk, dv [nk, Hkv, D] += the backward of duo_bwd_attend given dO, O [nq, Hq, D] and lse [nq, Hq] */
DUO_EXPORT int32_t duo_bwd_attend_backward(float *dq, float *dk, float *dv, const float *dO, const float *O,
                                           const float *lse, const float *q, const float *k, const float *v,
                                           const int32_t *ranges, int32_t nq, int32_t nk, int32_t Hq, int32_t Hkv,
                                           int32_t D) {
  const backward_kernels *kn = bwd("duo_bwd_attend_backward");
  if (!kn) return DUO_E_UNSUPPORTED;
  int32_t rc = check_attend("duo_bwd_attend_backward", ranges, nq, nk, Hq, Hkv, D);
  if (rc != DUO_OK || nq == 0) return rc;
  if (!dq || !dO || !O || !lse || !q || (nk > 0 && (!dk || !dv || !k || !v)))
    return fail(DUO_E_ARG, "duo_bwd_attend_backward: no NULL arrays");
  attend_job j = {kn, NULL, NULL, dq, dk, dv, q, k, v, dO, O, lse, ranges, nq, Hq, Hkv, D, parts_of(Hkv), Hkv};
  pool_run(pool_threads(), j.parts, attend_task, &j);
  return DUO_OK;
}

/* dstr [nq, Hq, D] and dalpha [Hkv] (+=, f64) from dmix, afull, astr [nq, Hq, D] and alpha [Hkv] */
DUO_EXPORT int32_t duo_bwd_mix(float *dstr, double *dalpha, const float *dmix, const float *afull, const float *astr,
                               const float *alpha, int32_t nq, int32_t Hq, int32_t Hkv, int32_t D) {
  const backward_kernels *k = bwd("duo_bwd_mix");
  if (!k) return DUO_E_UNSUPPORTED;
  if (nq < 0 || Hq <= 0 || Hkv <= 0 || Hq % Hkv || D <= 0)
    return fail(DUO_E_ARG, "duo_bwd_mix: nq >= 0; Hq, Hkv > 0 with Hkv dividing Hq; D > 0");
  if (nq > 0 && (!dstr || !dalpha || !dmix || !afull || !astr || !alpha)) return fail(DUO_E_ARG, "duo_bwd_mix: no NULL arrays");
  k->mix(dstr, dalpha, dmix, afull, astr, alpha, nq, Hq, Hkv, D);
  return DUO_OK;
}
