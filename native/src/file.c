/*
 * Weights straight from disk: duo_read_file preads a byte range of a checkpoint (a safetensors tensor) into a block of
 * duo_alloc, so a 16 GB model is read once, by the kernel, into the memory that keeps it: no second copy passes
 * through the JS heap. A file that ends early is refused naming the path and both offsets; the block keeps whatever
 * bytes were read (the caller frees it: a half-read weight is never used).
 */
#define _GNU_SOURCE /* pread, posix_fadvise, O_CLOEXEC under -std=c11 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"

/* One pread moves at most this much (Linux caps a single read at 0x7ffff000 bytes anyway). */
#define PIECE (1ull << 30)

int32_t duo_read_file(const char *path, uint64_t file_offset, uint64_t bytes, uint64_t block, uint64_t block_offset) {
  if (!path || !*path) return fail(DUO_E_ARG, "duo_read_file: path is NULL or empty");
  const uint64_t size = heap_block_bytes(block);
  if (!size) return fail(DUO_E_HANDLE, "duo_read_file: 0x%llx is not a live block of duo_alloc", (unsigned long long)block);
  if (block_offset > size || bytes > size - block_offset)
    return fail(DUO_E_ARG, "duo_read_file: bytes [%llu, %llu) are outside the block's %llu", (unsigned long long)block_offset,
                (unsigned long long)(block_offset + bytes), (unsigned long long)size);
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(DUO_E_ARG, "duo_read_file: cannot open %s: %s", path, strerror(errno));
  posix_fadvise(fd, (off_t)file_offset, (off_t)bytes, POSIX_FADV_SEQUENTIAL);
  uint8_t *dst = (uint8_t *)(uintptr_t)block + block_offset;
  uint64_t done = 0;
  while (done < bytes) {
    const uint64_t want = bytes - done < PIECE ? bytes - done : PIECE;
    const ssize_t got = pread(fd, dst + done, want, (off_t)(file_offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      const int err = errno;
      close(fd);
      if (got < 0) return fail(DUO_E_ARG, "duo_read_file: reading %s at byte %llu: %s", path, (unsigned long long)(file_offset + done), strerror(err));
      return fail(DUO_E_ARG, "duo_read_file: %s ends at byte %llu, inside bytes [%llu, %llu) (the file is truncated)", path,
                  (unsigned long long)(file_offset + done), (unsigned long long)file_offset, (unsigned long long)(file_offset + bytes));
    }
    done += (uint64_t)got;
  }
  close(fd);
  return DUO_OK;
}
