/*
 * Weights at the speed of the page cache: duo_map_file maps a whole checkpoint read-only (MAP_PRIVATE, PROT_READ),
 * and duo_map_view makes a range of it (one tensor: every weight dtype's file layout is the kernels' own, f16 / bf16
 * rows included, wasm/model/widen.h) a live block that every op accepts (heap.c registers it), so a matrix needs no
 * copy at all: its pages are the file's pages in the page cache. On the Firecracker VM the load was measured on,
 * writing fresh pages runs at 1.1-3 GB/s, cat of a cached file at 5.6-6.6 GB/s, faulting a file mapping at ~15 GB/s.
 *
 * Each view is populated when it is made (MADV_POPULATE_READ, split over the pool's threads): the load then reads the
 * disk as a load should, decode never stalls on a page fault, and a file that shrank since it was mapped is an error
 * here (EFAULT) rather than a SIGBUS later. Lazy mapping (no populate, or MADV_WILLNEED alone) would make the load
 * instant and move the read into the first tokens; the model loader checks first that the weights fit in RAM, so
 * populating does not overcommit.
 * MADV_WILLNEED on each view before populating it (readahead ahead of the faults) was tried from a cold cache and
 * made no difference here (a 1.98 GB f32 checkpoint: 1.14-1.35 s without, 1.20-1.33 s with, alternating runs): the
 * threads' faults already read the file in large pieces, so it is not used.
 *
 * What is not guarded: a file truncated after its views were populated drops those pages, and the next kernel that
 * reads them gets SIGBUS (a process-wide signal handler in a library would fight the JS runtime's own); a file
 * rewritten in place after mapping changes the weights the kernels read (MAP_PRIVATE copies only pages this process
 * writes, and views are never written). Load with mapping off (LoadOptions.mmap false) for files that may change.
 *
 * A mapping is counted: its handle holds one reference and every live view one more; it is unmapped when duo_unmap
 * has dropped the handle's and duo_free the last view's.
 */
#define _GNU_SOURCE /* MADV_POPULATE_READ, O_CLOEXEC under -std=c11 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "internal.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14; older kernels answer EINVAL and the pages are touched instead */
#endif

/* Each thread populates at least this much of a view (smaller ranges are not worth a hand-off). */
#define MIN_PART (8ull << 20)

typedef struct {
  uint64_t base, bytes; /* the mapping: the whole file */
  int refs;             /* the handle's (until duo_unmap) + one per live view */
  int handle_live;
  char *path; /* for messages */
} mapping;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static mapping *maps;
static int nmaps, capmaps;

/* The mapping at `base`, under mu; NULL when none. */
static mapping *find(uint64_t base) {
  for (int i = 0; i < nmaps; i++)
    if (maps[i].base == base) return &maps[i];
  return NULL;
}

int32_t duo_map_file(const char *path, uint64_t *out) {
  if (!path || !*path || !out) return fail(DUO_E_ARG, "duo_map_file: path (NUL-terminated, not empty) and out must not be NULL");
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(DUO_E_ARG, "duo_map_file: cannot open %s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
    close(fd);
    return fail(DUO_E_ARG, "duo_map_file: %s is not a regular file of at least one byte", path);
  }
  void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  close(fd); /* the mapping keeps the file */
  if (p == MAP_FAILED) return fail(DUO_E_CAPACITY, "duo_map_file: cannot map %s (%lld bytes): %s", path, (long long)st.st_size, strerror(err));
  char *name = strdup(path);
  pthread_mutex_lock(&mu);
  if (nmaps == capmaps) {
    const int c = capmaps ? capmaps * 2 : 16;
    mapping *m = name ? realloc(maps, sizeof *m * (size_t)c) : NULL;
    if (m) maps = m, capmaps = c;
  }
  if (!name || nmaps == capmaps) {
    pthread_mutex_unlock(&mu);
    free(name);
    munmap(p, (size_t)st.st_size);
    return fail(DUO_E_CAPACITY, "duo_map_file: no memory for the mapping table");
  }
  maps[nmaps++] = (mapping){(uint64_t)(uintptr_t)p, (uint64_t)st.st_size, 1, 1, name};
  pthread_mutex_unlock(&mu);
  out[0] = (uint64_t)(uintptr_t)p;
  out[1] = (uint64_t)st.st_size;
  return DUO_OK;
}

void map_drop(uint64_t base) {
  pthread_mutex_lock(&mu);
  mapping *m = find(base);
  if (m && --m->refs == 0) {
    munmap((void *)(uintptr_t)m->base, (size_t)m->bytes);
    free(m->path);
    *m = maps[--nmaps];
  }
  pthread_mutex_unlock(&mu);
}

int32_t duo_unmap(uint64_t map) {
  pthread_mutex_lock(&mu);
  mapping *m = find(map);
  const int ok = m && m->handle_live;
  if (ok) m->handle_live = 0;
  pthread_mutex_unlock(&mu);
  if (!ok) return fail(DUO_E_HANDLE, "duo_unmap: 0x%llx is not a live mapping of duo_map_file", (unsigned long long)map);
  map_drop(map);
  return DUO_OK;
}

typedef struct {
  uint8_t *start; /* page aligned */
  uint64_t bytes;
  int parts;
  int err[DUO_MAX_THREADS]; /* per part: 0 or an errno */
} populate_job;

/* Fault in part i's pages: MADV_POPULATE_READ, or on a kernel without it (EINVAL) one read per page. */
static void populate_part(void *ctx, int i) {
  populate_job *j = ctx;
  const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), pages = (j->bytes + page - 1) / page;
  const uint64_t p0 = pages * i / j->parts * page, p1 = i == j->parts - 1 ? j->bytes : pages * (i + 1) / j->parts * page;
  if (p0 >= p1) return;
  if (madvise(j->start + p0, p1 - p0, MADV_POPULATE_READ) == 0) return;
  if (errno != EINVAL) {
    j->err[i] = errno;
    return;
  }
  volatile uint8_t sink = 0;
  for (uint64_t b = p0; b < p1; b += page) sink ^= j->start[b];
  (void)sink;
}

int32_t duo_map_view(uint64_t map, uint64_t offset, uint64_t bytes, uint64_t *out) {
  if (!out) return fail(DUO_E_ARG, "duo_map_view: out is NULL");
  pthread_mutex_lock(&mu);
  mapping *m = find(map);
  if (!m || !m->handle_live) {
    pthread_mutex_unlock(&mu);
    return fail(DUO_E_HANDLE, "duo_map_view: 0x%llx is not a live mapping of duo_map_file", (unsigned long long)map);
  }
  if (bytes == 0 || offset > m->bytes || bytes > m->bytes - offset) {
    const int32_t rc = fail(DUO_E_ARG, "duo_map_view: bytes [%llu, %llu) are not a non-empty range inside %s's %llu bytes (is the file truncated?)",
                            (unsigned long long)offset, (unsigned long long)(offset + bytes), m->path, (unsigned long long)m->bytes);
    pthread_mutex_unlock(&mu);
    return rc;
  }
  m->refs++; /* the view's reference, taken before the lock drops: a concurrent duo_unmap cannot unmap under us */
  char path[4096];
  snprintf(path, sizeof path, "%s", m->path);
  pthread_mutex_unlock(&mu);

  const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), at = map + offset, start = at & ~(page - 1);
  populate_job j = {.start = (uint8_t *)(uintptr_t)start, .bytes = at + bytes - start};
  const int threads = pool_threads();
  const uint64_t most = j.bytes / MIN_PART;
  j.parts = most < (uint64_t)threads ? (int)most : threads;
  if (j.parts < 1) j.parts = 1;
  if (j.parts == 1) populate_part(&j, 0);
  else pool_run(threads, j.parts, populate_part, &j);
  for (int i = 0; i < j.parts; i++) {
    if (!j.err[i]) continue;
    map_drop(map);
    if (j.err[i] == EFAULT)
      return fail(DUO_E_ARG, "duo_map_view: %s ends inside bytes [%llu, %llu) (the file was truncated after it was mapped)", path,
                  (unsigned long long)offset, (unsigned long long)(offset + bytes));
    return fail(DUO_E_CAPACITY, "duo_map_view: reading bytes [%llu, %llu) of %s into memory: %s", (unsigned long long)offset,
                (unsigned long long)(offset + bytes), path, strerror(j.err[i]));
  }
  const int32_t rc = heap_register_view(at, bytes, map);
  if (rc != DUO_OK) {
    map_drop(map);
    return rc;
  }
  *out = at;
  return DUO_OK;
}
