/*
 * Weights straight from disk: duo_read_file preads a byte range of a checkpoint (a safetensors tensor) into a block of
 * duo_alloc, so a 16 GB model is read once, by the kernel, into the memory that keeps it: no second copy passes
 * through the JS heap. The range is split over the pool's threads (the copies from the page cache run in parallel;
 * the page faults of the fresh block may not, see below). Each thread reads its part in pieces of about
 * 1 MiB; with pack_cols > 0 (a 16-bit matrix in whole rows) each piece is packed for the model kernels (pack_u16)
 * right after its pread, while it is still in the core's L2: a separate pack pass over the whole matrix would read
 * and write it from DRAM once more (it took a sixth of a bf16 load's time). What bounds the read is the first touch of
 * the fresh pages: on the Firecracker VM this was measured on, 1.1-1.5 GB/s however many threads fault (the host
 * backs guest memory as it is first touched), against 3-7 GB/s for `cat` of the same cached file into one small
 * buffer (bench/model-load.ts). Neither MAP_POPULATE (the same faults, in one thread) nor MADV_HUGEPAGE (2 MiB
 * faults were 2-9x slower there: the host still backs them 4 KiB at a time, and THP defrag "madvise" may compact
 * synchronously) helps; only pages already in the page cache (a file mapping) would, and 16-bit matrices are
 * rewritten (packed), so they cannot stay there. A file that ends early is refused naming the path and both
 * offsets; the block keeps whatever bytes were read (the caller frees it: a half-read weight is never used).
 */
#define _GNU_SOURCE /* pread, posix_fadvise, O_CLOEXEC under -std=c11 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"

/* One pread moves about this much: small enough that a piece is still in L2 when it is packed, large enough that
 * syscalls cost nothing (2400 of them for 2.5 GB). */
#define PIECE (1ull << 20)
/* Each thread reads at least this much (smaller ranges are not worth a hand-off). */
#define MIN_PART (8ull << 20)

typedef struct {
  int fd;
  uint8_t *dst;
  uint64_t file_offset, bytes;
  /* bytes of one unit that parts and pieces never split: a row of pack_cols 16-bit weights, else 1 */
  uint64_t unit;
  int32_t pack_cols;
  int parts;
  /* per part: 0, or the errno of a failed pread, or -1 when the file ended; and where */
  int err[DUO_MAX_THREADS];
  uint64_t at[DUO_MAX_THREADS];
} read_job;

static void read_part(void *ctx, int i) {
  read_job *r = ctx;
  const uint64_t units = r->bytes / r->unit;
  const uint64_t b0 = units / r->parts * i * r->unit, b1 = i == r->parts - 1 ? r->bytes : units / r->parts * (i + 1) * r->unit;
  const uint64_t piece = PIECE > r->unit ? PIECE - PIECE % r->unit : r->unit;
  for (uint64_t p0 = b0; p0 < b1; p0 += piece) {
    const uint64_t p1 = b1 - p0 < piece ? b1 : p0 + piece;
    for (uint64_t done = p0; done < p1;) {
      const ssize_t got = pread(r->fd, r->dst + done, p1 - done, (off_t)(r->file_offset + done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        r->err[i] = got < 0 ? errno : -1;
        r->at[i] = r->file_offset + done;
        return;
      }
      done += (uint64_t)got;
    }
    if (r->pack_cols) isa()->model->pack_u16((uint16_t *)(void *)(r->dst + p0), (int)((p1 - p0) / r->unit), r->pack_cols);
  }
}

int32_t duo_read_file(const char *path, uint64_t file_offset, uint64_t bytes, uint64_t block, uint64_t block_offset,
                      int32_t pack_cols) {
  if (!path || !*path) return fail(DUO_E_ARG, "duo_read_file: path is NULL or empty");
  const uint64_t size = heap_owned_bytes(block);
  if (!size) return fail(DUO_E_HANDLE, "duo_read_file: 0x%llx is not a live block of duo_alloc%s", (unsigned long long)block,
                         heap_block_bytes(block) ? " (it is a read-only view of a mapped file)" : "");
  if (block_offset > size || bytes > size - block_offset)
    return fail(DUO_E_ARG, "duo_read_file: bytes [%llu, %llu) are outside the block's %llu", (unsigned long long)block_offset,
                (unsigned long long)(block_offset + bytes), (unsigned long long)size);
  const uint64_t unit = pack_cols > 0 ? 2ull * (uint64_t)pack_cols : 1;
  if (pack_cols < 0 || block_offset % unit || bytes % unit)
    return fail(DUO_E_ARG, "duo_read_file: pack_cols must be 0 (no packing) or > 0 with whole rows of %llu bytes; got %d, bytes [%llu, %llu)",
                (unsigned long long)unit, pack_cols, (unsigned long long)block_offset, (unsigned long long)(block_offset + bytes));
  if (pack_cols && !isa()->model)
    return fail(DUO_E_UNSUPPORTED, "duo_read_file: packing needs the model kernels; the \"%s\" set has none", isa()->name);
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(DUO_E_ARG, "duo_read_file: cannot open %s: %s", path, strerror(errno));
  posix_fadvise(fd, (off_t)file_offset, (off_t)bytes, POSIX_FADV_SEQUENTIAL);
  read_job r = {.fd = fd, .dst = (uint8_t *)(uintptr_t)block + block_offset, .file_offset = file_offset, .bytes = bytes,
                .unit = unit, .pack_cols = pack_cols};
  const int threads = pool_threads();
  const uint64_t most = bytes / (MIN_PART > unit ? MIN_PART : unit);
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
