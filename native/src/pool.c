/*
 * The thread pool: workers started on first use and kept (a decode step is a few hundred microseconds: starting
 * threads per call would cost as much), woken by a generation counter under one mutex, taking tasks from an atomic
 * counter (the caller takes tasks too, so `threads` = workers + 1). One run at a time: a second caller waits.
 * Shared memory, no messages: tasks read their inputs and write their own outputs in place.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include "internal.h"

static pthread_mutex_t run_mu = PTHREAD_MUTEX_INITIALIZER; /* one run at a time */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t go = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static pthread_t tid[DUO_MAX_THREADS];
static unsigned seen[DUO_MAX_THREADS]; /* the last generation each worker took part in (or skipped) */
static int nworkers, active, pending, quit;
static unsigned gen;
static pool_fn job_fn;
static void *job_ctx;
static int job_n;
static atomic_int job_next;
static _Atomic int threads = 1;

static void drain(void) {
  for (int i; (i = atomic_fetch_add(&job_next, 1)) < job_n;) job_fn(job_ctx, i);
}

static void *worker(void *arg) {
  const int idx = (int)(intptr_t)arg;
  pthread_mutex_lock(&mu);
  for (;;) {
    while (gen == seen[idx] && !quit) pthread_cond_wait(&go, &mu);
    if (quit) break;
    seen[idx] = gen;
    if (idx >= active) continue; /* not needed in this run */
    pthread_mutex_unlock(&mu);
    drain();
    pthread_mutex_lock(&mu);
    if (--pending == 0) pthread_cond_signal(&done);
  }
  pthread_mutex_unlock(&mu);
  return NULL;
}

void pool_run(int want, int n, pool_fn fn, void *ctx) {
  int helpers = (want < n ? want : n) - 1;
  if (helpers <= 0) {
    for (int i = 0; i < n; i++) fn(ctx, i);
    return;
  }
  pthread_mutex_lock(&run_mu);
  pthread_mutex_lock(&mu);
  /* An explicit stack: the AVX-512 prefill GEMM keeps ~120 KiB of tiles on the stack (wasm/model/kernels.c), more
   * than musl's 128 KiB default leaves once the frames above it are counted; glibc's default is 8 MiB. */
  if (nworkers < helpers) {
    pthread_attr_t attr;
    const int inited = pthread_attr_init(&attr) == 0, sized = inited && pthread_attr_setstacksize(&attr, 4u << 20) == 0;
    while (nworkers < helpers) { /* seen = gen before the start: a new worker waits for the next generation */
      seen[nworkers] = gen;
      if (pthread_create(&tid[nworkers], sized ? &attr : NULL, worker, (void *)(intptr_t)nworkers) != 0) break;
      nworkers++;
    }
    if (inited) pthread_attr_destroy(&attr);
  }
  if (helpers > nworkers) helpers = nworkers; /* could not start them all: fewer threads, same result */
  job_fn = fn;
  job_ctx = ctx;
  job_n = n;
  atomic_store(&job_next, 0);
  active = helpers;
  pending = helpers;
  gen++;
  pthread_cond_broadcast(&go);
  pthread_mutex_unlock(&mu);
  drain();
  pthread_mutex_lock(&mu);
  while (pending > 0) pthread_cond_wait(&done, &mu);
  pthread_mutex_unlock(&mu);
  pthread_mutex_unlock(&run_mu);
}

/* Stop and join the workers when the library is unloaded (dlclose), so that no thread runs unmapped code. */
__attribute__((destructor)) static void pool_stop(void) {
  pthread_mutex_lock(&mu);
  quit = 1;
  pthread_cond_broadcast(&go);
  pthread_mutex_unlock(&mu);
  for (int i = 0; i < nworkers; i++) pthread_join(tid[i], NULL);
  nworkers = 0;
}

int pool_threads(void) { return atomic_load(&threads); }

int32_t duo_threads(int32_t n) {
  if (n < 1 || n > DUO_MAX_THREADS) return fail(DUO_E_ARG, "duo_threads: n must be in [1, %d], got %d", DUO_MAX_THREADS, n);
  return atomic_exchange(&threads, n);
}
