/*
 * Mid-size host blocks (SLAB_MIN .. SLAB_MAX bytes) carved out of 2 MiB chunks that ask for transparent huge pages.
 *
 * Why: the engine's KV pages are small (256 rows by default: bf16 at 8 KV heads 512 KiB, int4 at 4 heads 68 KiB), so
 * from malloc each is its own run of 4 KiB pages somewhere in the heap, and decode, which streams them all, pays a
 * page walk and a hardware-prefetcher restart every 4 KiB. Blocks of 2 MiB and more get huge pages of their own
 * (heap.c); these share them. Measured (`bench/wasm-kernels.ts --backend native`, one Llama-3-8B layer, bf16, G = 4,
 * 64K tokens, one thread): 1024-row pages (2 MiB, huge pages) 16.9 ms, 256-row pages from malloc 25.4 ms.
 *
 * Layout: a chunk serves one size class (sizes rounded up to SLAB_STEP): 2 MiB of blocks of the class's size one after
 * another, on a 2 MiB boundary, and its header in the 4 KiB page just after (so a 512 KiB class gets 4 blocks, not 3
 * beside an in-chunk header): a block's header is its address rounded down to 2 MiB, plus 2 MiB. A class keeps a list
 * of its chunks that have room. Fresh blocks are zero (a new mapping); a freed block goes on its chunk's free
 * list and is zeroed when handed out again. A chunk whose blocks are all free is unmapped.
 * The cost: with huge pages a chunk is committed whole at its first touch, so each size class in use holds up to one
 * partly filled chunk (< 2 MiB) beyond its blocks, and a freed block stays committed until its chunk empties; duo_memory
 * counts the blocks, not the chunks. KV pages of one cache come in a few sizes (one per retrieval-head count of a
 * layer), so this is a few MiB against caches of GiBs.
 */
#define _GNU_SOURCE /* munmap under -std=c11 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include "internal.h"

#define CHUNK HUGE_PAGE
#define HEADER 4096u /* the page after a chunk's blocks */
#define CLASSES (SLAB_MAX / SLAB_STEP + 1)

typedef struct chunk {
  struct chunk *prev, *next; /* in its class's list of chunks with room (both NULL when full and unlisted) */
  void *free;                /* freed blocks, each holding the next one's address in its first 8 bytes */
  uint32_t fresh;            /* offset of the first never-used byte */
  uint32_t live, listed;     /* blocks handed out; whether on the class list */
} chunk;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static chunk *room[CLASSES]; /* per class: chunks with a free or fresh block */

static void unlist(chunk *c, chunk **head) {
  if (c->prev) c->prev->next = c->next;
  else *head = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  c->listed = 0;
}

static void enlist(chunk *c, chunk **head) {
  c->prev = NULL;
  c->next = *head;
  if (*head) (*head)->prev = c;
  *head = c;
  c->listed = 1;
}

static chunk *header(const void *block) { return (chunk *)(void *)(((uintptr_t)block & ~(uintptr_t)(CHUNK - 1)) + CHUNK); }

static uint8_t *blocks(chunk *c) { return (uint8_t *)c - CHUNK; }

/* A new chunk: 2 MiB of blocks with its header page after them (heap_pages: fresh, 2 MiB aligned, huge pages asked
 * for); its zero header is an empty chunk. NULL when the host has no memory. */
static chunk *chunk_new(void) {
  uint8_t *a = heap_pages(CHUNK + HEADER);
  return a ? header(a) : NULL;
}

void *slab_alloc(uint64_t bytes) {
  const uint32_t k = (uint32_t)((bytes + SLAB_STEP - 1) / SLAB_STEP), size = k * SLAB_STEP;
  pthread_mutex_lock(&mu);
  chunk *c = room[k];
  if (!c) {
    c = chunk_new();
    if (!c) {
      pthread_mutex_unlock(&mu);
      return NULL;
    }
    enlist(c, &room[k]);
  }
  void *p;
  int reused = 0;
  if (c->free) {
    p = c->free;
    memcpy(&c->free, p, sizeof c->free);
    reused = 1;
  } else {
    p = blocks(c) + c->fresh;
    c->fresh += size;
  }
  c->live++;
  if (!c->free && c->fresh + size > CHUNK) unlist(c, &room[k]);
  pthread_mutex_unlock(&mu);
  if (reused) memset(p, 0, size);
  return p;
}

void slab_free(void *p, uint64_t bytes) {
  const uint32_t k = (uint32_t)((bytes + SLAB_STEP - 1) / SLAB_STEP);
  chunk *c = header(p);
  pthread_mutex_lock(&mu);
  memcpy(p, &c->free, sizeof c->free);
  c->free = p;
  if (--c->live == 0) {
    if (c->listed) unlist(c, &room[k]);
    pthread_mutex_unlock(&mu);
    munmap(blocks(c), CHUNK + HEADER);
    return;
  }
  if (!c->listed) enlist(c, &room[k]);
  pthread_mutex_unlock(&mu);
}
