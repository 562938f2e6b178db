/*
 * The module's allocator: first fit over a doubly linked free list, boundary tags for coalescing, memory.grow when
 * nothing fits (up to the 4 GiB wasm32 limit). Every block is [64-byte header][payload], block addresses and sizes
 * are multiples of 64, so payloads are 64-byte aligned. Blocks tile [heap_lo, heap_hi) with no gaps.
 *
 * Zero-filling: memory at or above `dirty_hi` has never been handed out, so it is still zero from memory.grow except
 * for free-block headers, which are cleared whenever a header is absorbed into a neighbour. duo_alloc therefore only
 * clears the part of a payload below dirty_hi: a large first allocation costs no memset (the OS commits pages lazily).
 */
#include "duo.h"

#define HDR 64u
#define PAGE 65536u

typedef struct {
  uint32_t size;      /* whole block, header included */
  uint32_t prev_size; /* size of the block just below, 0 for the first block */
  uint32_t free;
  uint32_t next_free, prev_free;
} header;

extern unsigned char __heap_base;
static uint64_t heap_lo, heap_hi, dirty_hi;
static uint32_t last, free_head; /* highest block; first free block (0 = none) */

static header *H(uint32_t b) { return (header *)(uintptr_t)b; }

static void unlink_free(uint32_t b) {
  header *h = H(b);
  if (h->prev_free) H(h->prev_free)->next_free = h->next_free; else free_head = h->next_free;
  if (h->next_free) H(h->next_free)->prev_free = h->prev_free;
  h->free = 0;
}

static void link_free(uint32_t b) {
  header *h = H(b);
  h->free = 1;
  h->prev_free = 0;
  h->next_free = free_head;
  if (free_head) H(free_head)->prev_free = b;
  free_head = b;
}

/* Block b swallows the block just above it (which must be free and unlinked). */
static void absorb_next(uint32_t b) {
  uint32_t n = b + H(b)->size;
  H(b)->size += H(n)->size;
  __builtin_memset(H(n), 0, HDR);
  if (n == last) last = b;
  else H(b + H(b)->size)->prev_size = H(b)->size;
}

static void init(void) {
  heap_lo = ((uint64_t)(uintptr_t)&__heap_base + 63) & ~63ull;
  heap_hi = heap_lo;
  dirty_hi = heap_lo;
}

/* Add `bytes` (a multiple of PAGE) of fresh memory at heap_hi as a free block, merged with a free last block. */
static int grow(uint64_t bytes) {
  uint64_t mem = (uint64_t)__builtin_wasm_memory_size(0) * PAGE;
  if (heap_hi + bytes > mem && __builtin_wasm_memory_grow(0, (uint32_t)((heap_hi + bytes - mem + PAGE - 1) / PAGE)) == (__SIZE_TYPE__)-1)
    return 0;
  uint32_t b = (uint32_t)heap_hi;
  H(b)->size = (uint32_t)bytes;
  H(b)->prev_size = last ? H(last)->size : 0;
  uint32_t below = last;
  last = b;
  heap_hi += bytes;
  if (below && H(below)->free) {
    unlink_free(below);
    absorb_next(below);
    b = below;
  }
  link_free(b);
  return 1;
}

uint32_t duo_alloc(uint32_t bytes) {
  if (!heap_lo) init();
  uint64_t need = (((uint64_t)bytes + 63) & ~63ull) + HDR;
  uint32_t b = free_head;
  while (b && H(b)->size < need) b = H(b)->next_free;
  if (!b) {
    uint64_t have = last && H(last)->free ? H(last)->size : 0;
    uint64_t add = (need - have + PAGE - 1) / PAGE * PAGE;
    if (heap_hi + add > (1ull << 32)) return 0;
    /* Grow geometrically (16 MiB or 1/8 of the heap at least): every memory.grow makes the JS engine re-examine its
     * external memory (V8 runs a GC), so a cache growing page by page would spend most of its time collecting. Near
     * the 4 GiB limit fall back to exactly what is needed. */
    uint64_t ahead = heap_hi / 8 > (16u << 20) ? heap_hi / 8 : (16u << 20);
    uint64_t more = add > ahead ? add : (ahead + PAGE - 1) / PAGE * PAGE;
    if (!((heap_hi + more <= (1ull << 32) && grow(more)) || grow(add))) return 0;
    b = last;
  }
  unlink_free(b);
  if (H(b)->size - need >= 2 * HDR) { /* split: the rest becomes a free block above */
    uint32_t rest = b + (uint32_t)need;
    H(rest)->size = H(b)->size - (uint32_t)need;
    H(rest)->prev_size = (uint32_t)need;
    H(b)->size = (uint32_t)need;
    if (b == last) last = rest;
    else H(rest + H(rest)->size)->prev_size = H(rest)->size;
    link_free(rest);
  }
  uint64_t lo = (uint64_t)b + HDR, hi = (uint64_t)b + H(b)->size;
  if (lo < dirty_hi) __builtin_memset((void *)(uintptr_t)lo, 0, (uint32_t)((hi < dirty_hi ? hi : dirty_hi) - lo));
  if (hi > dirty_hi) dirty_hi = hi;
  return b + HDR;
}

void duo_free(uint32_t ptr) {
  if (!ptr) return;
  uint32_t b = ptr - HDR;
  if (b != last) {
    uint32_t n = b + H(b)->size;
    if (H(n)->free) { unlink_free(n); absorb_next(b); }
  }
  if (H(b)->prev_size) {
    uint32_t p = b - H(b)->prev_size;
    if (H(p)->free) { unlink_free(p); absorb_next(p); b = p; }
  }
  link_free(b);
}

int32_t duo_api_version(void) { return DUO_API_VERSION; }
