/*
 * Weights straight from disk, where they are not mapped (LoadOptions.mmap false, or rows reordered at load):
 * duo_read_file preads a byte range of a checkpoint (a safetensors tensor) into a block of duo_alloc, so a 16 GB model
 * is read once, by the kernel, into the memory that keeps it: no second copy passes through the JS heap. Every weight
 * dtype is used in its file layout (f16 / bf16 too: wasm/model/widen.h), so the bytes land as they are. The range is
 * split over the pool's threads (the copies from the page cache run in parallel; the page faults of the fresh block
 * may not, see below). What bounds the read is the first touch of the fresh pages: on the Firecracker VM this was
 * measured on, 1.1-1.5 GB/s however many threads fault (the host backs guest memory as it is first touched), against
 * 3-7 GB/s for `cat` of the same cached file into one small buffer (bench/model-load.ts). Neither MAP_POPULATE (the
 * same faults, in one thread) nor MADV_HUGEPAGE (2 MiB faults were 2-9x slower there: the host still backs them
 * 4 KiB at a time, and THP defrag "madvise" may compact synchronously) helps; only pages already in the page cache
 * (a file mapping, map.c) do, which is why a load maps what it can. A file that ends early is refused naming the path
 * and both offsets; the block keeps whatever bytes were read (the caller frees it: a half-read weight is never used).
 */
#define _GNU_SOURCE /* pread, posix_fadvise, O_CLOEXEC under -std=c11 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"

/* One pread moves at most this much (Linux moves at most 2 GiB - 4 KiB per call anyway), so a short read costs little
 * to resume and syscalls still cost nothing. */
#define PIECE (64ull << 20)
/* Each thread reads at least this much (smaller ranges are not worth a hand-off). */
#define MIN_PART (8ull << 20)

typedef struct {
  int fd;
  uint8_t *dst;
  uint64_t file_offset, bytes;
  int parts;
  /* per part: 0, or the errno of a failed pread, or -1 when the file ended; and where */
  int err[DUO_MAX_THREADS];
  uint64_t at[DUO_MAX_THREADS];
} read_job;

static void read_part(void *ctx, int i) {
  read_job *r = ctx;
  const uint64_t b0 = r->bytes / r->parts * i, b1 = i == r->parts - 1 ? r->bytes : r->bytes / r->parts * (i + 1);
  for (uint64_t done = b0; done < b1;) {
    const uint64_t n = b1 - done < PIECE ? b1 - done : PIECE;
    const ssize_t got = pread(r->fd, r->dst + done, n, (off_t)(r->file_offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      r->err[i] = got < 0 ? errno : -1;
      r->at[i] = r->file_offset + done;
      return;
    }
    done += (uint64_t)got;
  }
}

int32_t duo_read_file(const char *path, uint64_t file_offset, uint64_t bytes, uint64_t block, uint64_t block_offset) {
  if (!path || !*path) return fail(DUO_E_ARG, "duo_read_file: path is NULL or empty");
  const uint64_t size = heap_owned_bytes(block);
  if (!size) return fail(DUO_E_HANDLE, "duo_read_file: 0x%llx is not a live block of duo_alloc%s", (unsigned long long)block,
                         heap_block_bytes(block) ? " (it is a read-only view of a mapped file)" : "");
  if (block_offset > size || bytes > size - block_offset)
    return fail(DUO_E_ARG, "duo_read_file: bytes [%llu, %llu) are outside the block's %llu", (unsigned long long)block_offset,
                (unsigned long long)(block_offset + bytes), (unsigned long long)size);
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(DUO_E_ARG, "duo_read_file: cannot open %s: %s", path, strerror(errno));
  posix_fadvise(fd, (off_t)file_offset, (off_t)bytes, POSIX_FADV_SEQUENTIAL);
  read_job r = {.fd = fd, .dst = (uint8_t *)(uintptr_t)block + block_offset, .file_offset = file_offset, .bytes = bytes};
  const int threads = pool_threads();
  const uint64_t most = bytes / MIN_PART;
  r.parts = most < (uint64_t)threads ? (int)most : threads;
  if (r.parts < 1) r.parts = 1;
  if (r.parts == 1) read_part(&r, 0);
  else pool_run(threads, r.parts, read_part, &r);
  close(fd);
  for (int i = 0; i < r.parts; i++) {
    if (!r.err[i]) continue;
    if (r.err[i] > 0) return fail(DUO_E_ARG, "duo_read_file: reading %s at byte %llu: %s", path, (unsigned long long)r.at[i], strerror(r.err[i]));
    return fail(DUO_E_ARG, "duo_read_file: %s ends at byte %llu, inside bytes [%llu, %llu) (the file is truncated)", path,
                (unsigned long long)r.at[i], (unsigned long long)file_offset, (unsigned long long)(file_offset + bytes));
  }
  return DUO_OK;
}
