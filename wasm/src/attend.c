/*
 * duo_attend: flash-attention style driver, shared by the SIMD and the scalar build (the kernels are the twins).
 *
 * Query rows are processed in tiles of BQ rows; a tile of one KV head is M = BQ * G query vectors (its G query heads
 * share every K/V load). For each tile:
 *   for each segment, for each run of rows that can be visible to the tile (computed from the positions, so in window
 *   mode the rows between the sinks and the recent window are never touched), in chunks of CHUNK rows:
 *     for each block of BK rows (skipped when no row of the tile sees any of its keys):
 *       for each KV head j: scores -> mask (only for partly visible blocks) -> online softmax -> P.V
 *     merge the chunk's partial state (m, l, acc) into the tile's total (log-sum-exp merge, split-KV style)
 *   out = acc / l, lse = ln 2 * (m + log2 l)
 * Decode (T = 1) has one tile of M = G vectors, and each page of the retrieval store is one chunk. The block loop runs
 * over all KV heads of the call, so that every block of rows is read while it is hot, except on the eo path below,
 * which walks each chunk head by head (run_rows).
 *
 * Mode "m4" (M a multiple of 4) vectorises across query vectors; decode with G not a multiple of 4 runs "m1" (one
 * query vector at a time, vectorised across keys). In builds with the wide m1 kernels (AVX-512 and AVX2: kernels.h
 * K_M1_WIDE), m1 decode over finite f32 / f16 / bf16 token-major rows (D a multiple of their lanes) takes every query
 * vector of the call at once instead, each block's rows read front to back across all heads (k_scores_heads,
 * k_softmax_m4 over the vectors, k_pv_heads): one stream, no touch, f16 not widened. Elsewhere f16 blocks, and bf16
 * blocks shared by M >= 16 query vectors, are widened to f32 once per block and head (k_widen). Quantized blocks
 * (token-major records, quant.h): in decode (M < 16) int8 rows are read as codes by the kernels themselves (scale_rows
 * applies each row's scale); int4 blocks, and int8 blocks shared by many query vectors (prefill), are dequantized
 * (k_dequant): BK rows of one head into L1-resident f32 rows, read from the packed records every time. In builds with
 * the fused quantized kernels (AVX-512 and AVX2: kernels.h K_QUANT_FUSED), decode with G = 1 or a multiple of 4 reads
 * int4 and int8 records with those instead (k_scores_quant_heads, k_pv_quant_heads: each block's rows front to back
 * across all heads, as the wide float path).
 *
 * Tiled segments (T64, duo.h): G = 4 decode over bf16 or f16 tiles is the "eo" fast path (k_scores_k64, k_pv_v64:
 * both walk their tile front to back, and the accumulators hold each 8 elements as even/odd halves, put back in order
 * at the end). Every other tiled block (prefill, other G, Inf/NaN, a block off the tile boundary) is widened out of its
 * 16-bit tiles into token-major f32 rows (k_widen_k64/v64; f32 tiles are copied out) and then takes the paths above;
 * in an eo call the V rows come out in even/odd order, so that every block adds into the same accumulator layout.
 *
 * Memory: without a prefetch instruction in wasm, a compute loop that misses in cache keeps only a few lines in
 * flight unless the hardware prefetcher runs ahead of it, and that needs a front-to-back walk. Over token-major rows
 * one head is a 256-byte run every row_heads * 256 bytes (measured here: 1.7-3.3 GB/s from DRAM, against 8 GB/s from
 * L2 and 20-27 GB/s for a plain read loop), so each such block's K and V rows are first read with one load per cache
 * line (touch), a loop the CPU runs at streaming bandwidth, and the kernels then find them in L2. Tiles need no such
 * touch: both tiled kernels walk their tile front to back (touching every line ahead of them measured slower: a touch
 * that misses stalls retirement where the prefetcher would not), and a head's V tile follows its K tile, so that the
 * whole decode is one stream (K and V tiles in separate buffers, two streams taking turns, measured 12-15 % slower from
 * DRAM). But the prefetcher stops at each 4 KiB page, and wasm memory has no larger pages: so in wasm each block
 * first loads one word in each page of the next block's tiles (open_next_tiles), which opens those pages together.
 */
#include "duo.h"
#include "kernels.h"
#include "math.h"
#include "quant.h"

#define BK 64      /* key rows per block */
#define CHUNK 1024 /* rows per partial state (split-KV chunk); a multiple of BK */
#define NEG_INF (-__builtin_inff())

enum { SKIP, FULL, PARTIAL };

typedef struct {
  int T, G, J, D, BQ, M, m4;
  int eo; /* the tiled fast path is on for this call (duo_attend sets it: eo-capable and some segment is T64) */
  int z;  /* the fused quantized kernels serve this shape (quant_fused) */
  uint32_t qp, tacc, pacc, tm, tl, pm, pl, alpha, s, kw, vw, rows, q4, qz, end; /* workspace offsets in bytes */
} plan;

/* G = 4 decode with D % 8 == 0: the shape the tiled kernels serve. */
static int eo_capable(int T, int G, int D) { return T == 1 && G == 4 && D % 8 == 0; }

/* Decode with G = 1 or a multiple of 4 (nq = 1 or 4 query vectors per kernel pass) and D % 32 == 0, where the build
 * has the fused quantized kernels (kernels.h K_QUANT_FUSED). */
static int quant_fused(int T, int G, int D) {
#ifdef K_QUANT_FUSED
  return T == 1 && (G == 1 || G % 4 == 0) && D % 32 == 0;
#else
  (void)T; (void)G; (void)D;
  return 0;
#endif
}

static uint32_t align64(uint32_t x) { return (x + 63u) & ~63u; }

static plan make_plan(int T, int G, int J, int D) {
  plan p;
  p.T = T; p.G = G; p.J = J; p.D = D;
  p.m4 = T > 1 || G % 4 == 0;
  if (T == 1) p.BQ = 1;
  else {
    int bq = (32 / G) & ~3;
    bq = bq < 4 ? 4 : bq;
    int t4 = (T + 3) & ~3;
    p.BQ = bq < t4 ? bq : t4;
  }
  p.M = p.BQ * G;
  uint32_t vec = (uint32_t)J * p.M * D * 4, row = align64((uint32_t)J * p.M * 4);
  uint32_t o = 0;
  p.qp = o; o += align64(vec);
  p.tacc = o; o += align64(vec);
  p.pacc = o; o += align64(vec);
  p.tm = o; o += row;
  p.tl = o; o += row;
  p.pm = o; o += row;
  p.pl = o; o += row;
  p.z = quant_fused(T, G, D);
#ifdef K_M1_WIDE /* m1 decode (wide) and fused quantized decode: every vector of the call at once */
  const uint32_t sm = p.m4 && !p.z ? (uint32_t)p.M : ((uint32_t)J * p.M + 3) & ~3u;
#else
  const uint32_t sm = (uint32_t)p.M;
#endif
  p.alpha = o; o += align64(sm * 4);
  p.s = o; o += align64((uint32_t)BK * sm * 4);
  p.kw = o; o += align64((uint32_t)BK * D * 4);
  p.vw = o; o += align64((uint32_t)BK * D * 4);
  p.rows = o; o += align64((uint32_t)BK * D * 4); /* a block copied out of its tile */
  p.eo = 0;
  p.q4 = o;
  if (eo_capable(T, G, D)) o += align64((uint32_t)J * D * 4 * 4); /* [J][D][4 vectors] */
  p.qz = o;
  if (p.z) o += align64((uint32_t)2 * J * G * D * 4); /* [int4, int8][J][G][D], in each dtype's order (k_quant_query) */
  p.end = o;
  return p;
}

uint32_t duo_attend_workspace(int32_t t, int32_t group, int32_t n_heads, int32_t head_dim) {
  return make_plan(t, group, n_heads, head_dim).end;
}

static int64_t seg_pos(const duo_segment *sg, int32_t r) {
  return sg->positions ? ((const int32_t *)(uintptr_t)sg->positions)[r] : (int64_t)sg->pos0 + r;
}

static int visible(int64_t p, int64_t t, int windowed, int64_t sink, int64_t recent) {
  return p <= t && (!windowed || p < sink || p >= t - recent);
}

/* Whether the keys at positions [pmin, pmax] are invisible to every query row in [tmin, tmax], visible to all of
 * them, or neither. */
static int classify(int64_t pmin, int64_t pmax, int64_t tmin, int64_t tmax, int windowed, int64_t sink,
                    int64_t recent) {
  if (pmin > tmax || (windowed && pmin >= sink && pmax < tmin - recent)) return SKIP;
  if (pmax <= tmin && (!windowed || pmax < sink || pmin >= tmax - recent)) return FULL;
  return PARTIAL;
}

static void reset_state(float *acc, float *m, float *l, int n, int D) {
  __builtin_memset(acc, 0, (uint32_t)n * D * 4);
  for (int i = 0; i < n; i++) { m[i] = NEG_INF; l[i] = 0.0f; }
}

/* total <- total (+) partial for n query vectors (unnormalised states, log2 units). */
static void merge_partial(float *tacc, float *tm, float *tl, const float *pacc, const float *pm, const float *pl,
                          int n, int D) {
  for (int i = 0; i < n; i++) {
    if (pm[i] == NEG_INF) continue; /* the chunk had no visible key for this vector */
    float top = tm[i] > pm[i] ? tm[i] : pm[i];
    float wa = exp2_f32(tm[i] - top), wb = exp2_f32(pm[i] - top);
    k_axpby(tacc + i * D, tacc + i * D, wa, pacc + i * D, wb, D);
    tl[i] = tl[i] * wa + pl[i] * wb;
    tm[i] = top;
  }
}

typedef struct {
  const plan *p;
  uint8_t *w; /* workspace base */
  const int32_t *slots;
  const duo_segment *sg;
  int64_t tmin, tmax, sink, recent;
  int windowed;
} tile_ctx;

#define WS(c, field) ((float *)((c)->w + (c)->p->field))

/* Set the scores of invisible (key, query vector) pairs of a block to -Inf. Vectors vec0 + m of the tile belong to
 * query row (vec0 + m) / G: each row's run of up to G vectors is tested once, without a division per vector (window
 * prefill masks most of its blocks). */
static void mask_block(const tile_ctx *c, float *s, int r0, int n, int M, int G, int vec0) {
  for (int i = 0; i < n; i++) {
    const int64_t pos = seg_pos(c->sg, r0 + i);
    int64_t t = c->tmin + vec0 / G;
    for (int m = 0, g = vec0 % G; m < M; g = 0, t++) {
      const int run = G - g < M - m ? G - g : M - m; /* this query row's vectors in [m, M) */
      if (!visible(pos, t, c->windowed, c->sink, c->recent))
        for (int k = 0; k < run; k++) s[i * M + m + k] = NEG_INF;
      m += run;
    }
  }
}

static volatile uint32_t touched;

/* Read one word every `step` bytes of [p, p + bytes), from p's 64-byte line on: with step 64, every line (pulls them
 * into cache at streaming speed); with step 4096, every 4 KiB page (opens the pages: open_next_tiles). */
static void touch(duo_ptr p, uint32_t bytes, uint32_t step) {
  uint32_t t = 0;
  for (duo_ptr a = p & ~(duo_ptr)63; a < p + bytes; a += step) t += *(const uint32_t *)(uintptr_t)a;
  touched = t;
}

/* 64-row blocks in a T64 segment's buffer: with the head slot, where a head's tiles start (kernels.h tile_start). */
static uint32_t seg_blocks(const duo_segment *sg) { return (uint32_t)sg->buffer_rows / DUO_TILE; }

/* wasm: one load in each 4 KiB page of the K and V tiles after those of head `slot`'s block at row0 (the next block
 * of the walk, 32 KiB at bf16 and D = 128), if the buffer has them. wasm memory lies on 4 KiB pages, where the
 * hardware prefetcher stops at every page end and each page costs a TLB walk: 8 loads issued together open the next
 * 8 pages at once, while this block computes. One worker, bf16, G = 4 (bench/wasm-kernels.ts, Node 20, alternating
 * runs): 16K 20.3-21.2 -> 10.0-14.1 ms, 64K 85.7-86.0 -> 55.0-55.9 ms; one load per 2 or 1 KiB measured between.
 * Native host memory is on huge pages (heap.c, slab.c), where the same loads only stall (64K 16-17 -> 23 ms), and
 * prefetches instead of loads as well (17.7-18.0 -> 22.8-24.0 ms). */
static void open_next_tiles(const duo_segment *sg, uint32_t slot, uint32_t row0, uint32_t nb, int D) {
#ifdef __wasm__
  const uint32_t at = (slot * nb + row0 / DUO_TILE + 1) * 2, tile = DUO_TILE * (uint32_t)D * 2; /* bytes per tile */
  if (at + 2 <= (uint32_t)sg->row_heads * nb * 2) touch(sg->k + (duo_ptr)at * tile, 2 * tile, 4096); /* K64 + V64 */
#else
  (void)sg; (void)slot; (void)row0; (void)nb; (void)D;
#endif
}

/* Rows [row0, row0 + n) of head `slot` of a tiled buffer of `blocks` 64-row blocks, copied out into token-major rows
 * of D elements of es bytes. */
static void untile(uint8_t *dst, duo_ptr buf, int layout, uint32_t blocks, uint32_t slot, uint32_t row0, int n, int D,
                   uint32_t es) {
  const uint8_t *b = (const uint8_t *)(uintptr_t)buf;
  for (int i = 0; i < n; i++, dst += (uint32_t)D * es) {
    uint32_t at = tile_row_start(layout, row0 + i, slot, blocks, (uint32_t)D);
    if (layout == DUO_K64)
      for (int d = 0; d < D; d++) __builtin_memcpy(dst + d * es, b + (at + (uint32_t)d * 8) * es, es);
    else
      for (int d = 0; d < D; d += 8) __builtin_memcpy(dst + d * es, b + (at + (uint32_t)d * DUO_TILE) * es, 8 * es);
  }
}

/* n rows of D floats: each 8 elements into the even/odd order of the eo accumulators (kernels.h). */
static void to_even_odd(float *x, int n, int D) {
  for (int e = 0; e < n * D; e += 8) {
    float t[8];
    __builtin_memcpy(t, x + e, sizeof t);
    for (int k = 0; k < 4; k++) { x[e + k] = t[2 * k]; x[e + 4 + k] = t[2 * k + 1]; }
  }
}

/* Inverse of to_even_odd for one row. */
static void from_even_odd(float *x, int D) {
  for (int e = 0; e < D; e += 8) {
    float t[8];
    __builtin_memcpy(t, x + e, sizeof t);
    for (int k = 0; k < 4; k++) { x[e + 2 * k] = t[k]; x[e + 2 * k + 1] = t[4 + k]; }
  }
}

/* The eo fast path for one KV head over its tile of rows [row0, row0 + n) (n <= 64, row0 on a tile boundary). */
static void run_tile(const tile_ctx *c, int j, uint32_t row0, int r0, int n, int cls) {
  const plan *p = c->p;
  const int D = p->D;
  const uint32_t nb = seg_blocks(c->sg), slot = (uint32_t)c->slots[j];
  float *s = WS(c, s), *alpha = WS(c, alpha);
  const uint8_t *k = (const uint8_t *)(uintptr_t)(c->sg->k + tile_start(DUO_K64, row0, slot, nb, (uint32_t)D) * 2);
  const uint8_t *v = (const uint8_t *)(uintptr_t)(c->sg->v + tile_start(DUO_V64, row0, slot, nb, (uint32_t)D) * 2);
  open_next_tiles(c->sg, slot, row0, nb, D);
  k_scores_k64(WS(c, q4) + j * D * 4, D, k, c->sg->dtype, n, s);
  if (cls == PARTIAL) mask_block(c, s, r0, n, 4, p->G, 0);
  k_softmax_m4(s, n, 4, WS(c, pm) + j * 4, WS(c, pl) + j * 4, alpha);
  k_pv_v64(WS(c, pacc) + j * 4 * D, alpha, s, D, v, c->sg->dtype, n);
}

/* Whether the current segment takes the eo fast path (its blocks on tile boundaries; run_block falls back for others). */
static int eo_segment(const tile_ctx *c) {
  const duo_segment *sg = c->sg;
  const int dt = sg->dtype & DUO_DTYPE_MASK;
  return sg->layout == DUO_T64 && c->p->eo && (dt == DUO_F16 || dt == DUO_BF16) && !(sg->dtype & DUO_NONFINITE);
}

/* s[i*M + m] *= the scale of int8 record i (the f32 after its D codes), for i < n, m < M: the kernels read int8 rows
 * as their codes (kernels.h), so the scores get each key's scale after the dot product, and the weights p each
 * value's scale before P.V. Versus dequantizing first, this only reassociates one f32 product per term. */
static void scale_rows(float *s, const uint8_t *rec, uint32_t stride, int D, int n, int M) {
  for (int i = 0; i < n; i++, rec += stride) {
    float sc;
    __builtin_memcpy(&sc, rec + D, 4);
    for (int m = 0; m < M; m++) s[i * M + m] *= sc;
  }
}

/* One block of n rows starting at segment row r0, for KV heads [j0, j1) of the call. */
static void run_block(const tile_ctx *c, int r0, int n, int cls, int j0, int j1) {
  const plan *p = c->p;
  const duo_segment *sg = c->sg;
  const int D = p->D, M = p->M, dt0 = sg->dtype & DUO_DTYPE_MASK, es = dt0 == DUO_F32 ? 4 : 2, quant = is_quantized(dt0);
  const int guard = sg->dtype & DUO_NONFINITE, tiled = sg->layout == DUO_T64;
  const uint32_t row0 = (uint32_t)(sg->row_start + r0), hb = kv_head_bytes(dt0, (uint32_t)D);
  const uint32_t stride = (uint32_t)sg->row_heads * hb, first = row0 * stride;
  float *s = WS(c, s), *alpha = WS(c, alpha);
  if (eo_segment(c) && row0 % DUO_TILE == 0) {
    for (int j = j0; j < j1; j++)
      run_tile(c, j, row0, r0, n, cls);
    return;
  }
  /* int8 rows read as codes where few query vectors share each row (decode, small prefill tiles); not in a segment
   * flagged DUO_NONFINITE (a record whose code * scale overflows: only the dequantized row has its Inf, and masked
   * weights must skip it exactly), nor in an eo call (its V accumulators are in even/odd order) */
  const int codes = dt0 == DUO_INT8 && !guard && !p->eo && M < 16;
  /* records read by the fused kernels where the build has them (p->z), under the same conditions as int8 codes */
#ifdef K_QUANT_FUSED
  const int fused = quant && !guard && !p->eo && p->z;
#else
  const int fused = 0;
#endif
  /* int4 m1 decode read as records by the 4-lane builds' kernels (kernels.h K_INT4_M1), under the same conditions */
#ifdef K_INT4_M1
  const int int4m1 = dt0 == DUO_INT4 && !guard && !p->eo && M == 1 && D % 16 == 0;
#else
  const int int4m1 = 0;
#endif
  /* m1 decode (G = 1, or G not a multiple of 4) over finite float rows: the wide kernels where the build has them
   * (kernels.h K_M1_WIDE), every vector at once below; f16 read directly instead of widened into the workspace */
#ifdef K_M1_WIDE
  const int wide = !p->m4 && !tiled && !quant && !guard && D % K_M1_WIDE == 0;
#else
  const int wide = 0;
#endif
  const int widen =
      tiled || (quant && !codes && !fused && !int4m1) || p->eo || (dt0 == DUO_F16 && !wide) || (dt0 == DUO_BF16 && M >= 16);
  if (!tiled && !fused && !wide) { /* fused blocks ask for their rows ahead as they read them; wide blocks are read
                                    * front to back, which the hardware prefetcher follows */
    touch(sg->k + first, (uint32_t)n * stride, 64);
    touch(sg->v + first, (uint32_t)n * stride, 64);
  }
#ifdef K_M1_WIDE
  if (wide || fused) { /* every query vector of heads [j0, j1) at once (M each), the block's rows read in the order
                        * they lie: one stream. Float rows: the wide m1 kernels; quantized records (G = 1 or a multiple
                        * of 4): the fused ones. */
    const int nv = (j1 - j0) * M, sm = (nv + 3) & ~3;
    uint32_t off[nv];
    for (int v = 0; v < nv; v++) off[v] = (uint32_t)c->slots[j0 + v / M] * hb;
    float *mx = WS(c, pm) + j0 * M, *l = WS(c, pl) + j0 * M, *acc = WS(c, pacc) + j0 * M * D;
    const uint8_t *kb = (const uint8_t *)(uintptr_t)(sg->k + first), *vb = (const uint8_t *)(uintptr_t)(sg->v + first);
    if (wide) k_scores_heads(WS(c, qp) + j0 * M * D, nv, sm, off, D, kb, stride, dt0, n, s);
    else k_scores_quant_heads(WS(c, qz) + ((dt0 == DUO_INT4 ? 0 : p->J) + j0) * M * D, nv, sm, M, off, D, kb, stride, dt0, n, s);
    if (cls == PARTIAL) mask_block(c, s, r0, n, sm, sm, 0); /* T = 1: every vector's query at position tmin */
    for (int v = nv; v < sm; v++) { mx[v] = NEG_INF; l[v] = 0.0f; } /* the padding's scratch state */
    k_softmax_m4(s, n, sm, mx, l, alpha);
    if (wide) k_pv_heads(acc, alpha, s, sm, nv, off, D, vb, stride, dt0, n);
    else k_pv_quant_heads(acc, alpha, s, sm, nv, M, off, D, vb, stride, dt0, n);
    return;
  }
#endif
  for (int j = j0; j < j1; j++) {
    uint32_t off = (row0 * sg->row_heads + c->slots[j]) * hb;
    const uint8_t *k = (const uint8_t *)(uintptr_t)(sg->k + off), *v = (const uint8_t *)(uintptr_t)(sg->v + off);
    float *qp = WS(c, qp) + j * M * D, *acc = WS(c, pacc) + j * M * D, *mx = WS(c, pm) + j * M, *l = WS(c, pl) + j * M;
    const int kdt = widen ? DUO_F32 : dt0, vdt = (widen ? DUO_F32 : dt0) | guard;
    const uint8_t *kb = widen ? (const uint8_t *)WS(c, kw) : k, *vb = widen ? (const uint8_t *)WS(c, vw) : v;
    const uint32_t bs = widen ? (uint32_t)D * 4 : stride;
    if (widen && tiled && dt0 != DUO_F32) { /* tile by tile (a block off the tile boundary spans two) */
      for (int i = 0; i < n;) {
        uint32_t r = row0 + i, nb = seg_blocks(sg), slot = (uint32_t)c->slots[j];
        uint32_t kt = tile_start(DUO_K64, r, slot, nb, (uint32_t)D) * 2, vt = tile_start(DUO_V64, r, slot, nb, (uint32_t)D) * 2;
        int i0 = (int)(r % DUO_TILE), m = DUO_TILE - i0 < n - i ? DUO_TILE - i0 : n - i;
        k_widen_k64(WS(c, kw) + i * D, (const uint8_t *)(uintptr_t)(sg->k + kt), sg->dtype, i0, m, D);
        k_widen_v64(WS(c, vw) + i * D, (const uint8_t *)(uintptr_t)(sg->v + vt), sg->dtype, i0, m, D, p->eo);
        i += m;
      }
    } else if (quant && !codes && !fused && !int4m1) { /* this block's records of head j, dequantized into the workspace (quant.h) */
      k_dequant(WS(c, kw), k, stride, dt0, n, D);
      k_dequant(WS(c, vw), v, stride, dt0, n, D);
      if (p->eo) to_even_odd(WS(c, vw), n, D);
    } else if (widen) {
      uint8_t *rows = (uint8_t *)WS(c, rows);
      if (tiled) untile(rows, sg->k, DUO_K64, seg_blocks(sg), (uint32_t)c->slots[j], row0, n, D, (uint32_t)es);
      k_widen(WS(c, kw), tiled ? rows : k, tiled ? (uint32_t)D * es : stride, sg->dtype, n, D);
      if (tiled) untile(rows, sg->v, DUO_V64, seg_blocks(sg), (uint32_t)c->slots[j], row0, n, D, (uint32_t)es);
      k_widen(WS(c, vw), tiled ? rows : v, tiled ? (uint32_t)D * es : stride, sg->dtype, n, D);
      if (p->eo) to_even_odd(WS(c, vw), n, D);
    }
    if (p->m4) {
      k_scores_m4(qp, M, D, kb, bs, kdt, n, s);
      if (codes) scale_rows(s, k, stride, D, n, M);
      if (cls == PARTIAL) mask_block(c, s, r0, n, M, p->G, 0);
      k_softmax_m4(s, n, M, mx, l, alpha);
      if (codes) scale_rows(s, v, stride, D, n, M);
      k_pv_m4(acc, alpha, s, M, D, vb, bs, vdt, n);
    } else {
      for (int g = 0; g < M; g++) {
#ifdef K_INT4_M1
        if (int4m1) k_scores_int4_m1(qp + g * D, D, k, stride, n, s);
        else
#endif
          k_scores_m1(qp + g * D, D, kb, bs, kdt, n, s);
        if (codes) scale_rows(s, k, stride, D, n, 1);
        if (cls == PARTIAL) mask_block(c, s, r0, n, 1, p->G, g);
        k_softmax_m1(s, n, mx + g, l + g, alpha);
        if (codes) scale_rows(s, v, stride, D, n, 1);
#ifdef K_INT4_M1
        if (int4m1) k_pv_int4_m1(acc + g * D, *alpha, s, D, v, stride, n);
        else
#endif
          k_pv_m1(acc + g * D, *alpha, s, D, vb, bs, vdt, n);
      }
    }
  }
}

/* Rows [lo, hi) of the current segment: chunks of partial state, blocks, merge. An eo segment is walked head by head
 * inside each chunk: one head's tiles of a buffer lie one after another (duo.h), so the walk is one front-to-back
 * stream, and only that head's query and accumulators (4 KB at D = 128) share L1 with it. Block by block over all
 * heads (their accumulators, 32 KB for 8 heads, as large as L1) measured 7-10 % slower from DRAM on V8. */
static void run_rows(const tile_ctx *c, int lo, int hi) {
  const plan *p = c->p;
  const int JM = p->J * p->M, head_major = eo_segment(c);
  for (int c0 = lo; c0 < hi; c0 += CHUNK) {
    int c1 = hi - c0 < CHUNK ? hi : c0 + CHUNK, nblk = 0;
    int cls[CHUNK / BK];
    for (int b0 = c0; b0 < c1; b0 += BK, nblk++) {
      int n = c1 - b0 < BK ? c1 - b0 : BK;
      int64_t pmin, pmax;
      if (c->sg->positions) {
        pmin = pmax = seg_pos(c->sg, b0);
        for (int i = 1; i < n; i++) {
          int64_t q = seg_pos(c->sg, b0 + i);
          pmin = q < pmin ? q : pmin;
          pmax = q > pmax ? q : pmax;
        }
      } else {
        pmin = (int64_t)c->sg->pos0 + b0;
        pmax = pmin + n - 1;
      }
      cls[nblk] = classify(pmin, pmax, c->tmin, c->tmax, c->windowed, c->sink, c->recent);
    }
    int any = 0;
    for (int b = 0; b < nblk; b++) any |= cls[b] != SKIP;
    if (!any) continue;
    reset_state(WS(c, pacc), WS(c, pm), WS(c, pl), JM, p->D);
    const int step = head_major ? 1 : p->J; /* KV heads per pass over the chunk's blocks */
    for (int j0 = 0; j0 < p->J; j0 += step)
      for (int b = 0, b0 = c0; b < nblk; b++, b0 += BK)
        if (cls[b] != SKIP) run_block(c, b0, c1 - b0 < BK ? c1 - b0 : BK, cls[b], j0, j0 + step);
    merge_partial(WS(c, tacc), WS(c, tm), WS(c, tl), WS(c, pacc), WS(c, pm), WS(c, pl), JM, p->D);
  }
}

/* Rows of a consecutive-position segment that some query row of the tile may see: one or two runs. */
static void run_consecutive(const tile_ctx *c) {
  const int64_t p0 = c->sg->pos0, count = c->sg->row_count;
  int64_t end = c->tmax - p0 + 1;
  end = end < count ? end : count;
  if (end <= 0) return;
  if (!c->windowed) { run_rows(c, 0, (int)end); return; }
  int64_t sinks = c->sink - p0, recent0 = c->tmin - c->recent - p0; /* rows [0, sinks) and [recent0, end) */
  sinks = sinks < 0 ? 0 : sinks < end ? sinks : end;
  recent0 = recent0 < 0 ? 0 : recent0;
  if (recent0 <= sinks) { run_rows(c, 0, (int)end); return; }
  if (sinks > 0) run_rows(c, 0, (int)sinks);
  if (recent0 < end) run_rows(c, (int)recent0, (int)end);
}

int32_t duo_attend(const float *q, int32_t t, int32_t num_heads, int32_t head_dim, int32_t group, int32_t n_heads,
                   const int32_t *q_heads, const int32_t *kv_slots, const duo_segment *segments, int32_t n_segments,
                   int32_t q_pos0, int32_t windowed, int32_t sink, int32_t recent, float *out, float *lse, void *work) {
  const int D = head_dim, G = group, J = n_heads;
  if (t < 0 || D <= 0 || D % 4 || G <= 0 || J < 0 || n_segments < 0 || ((uintptr_t)work & 15)) return DUO_E_ARG;
  if (t == 0 || J == 0) return DUO_OK;
  plan p = make_plan(t, G, J, D);
#ifdef K_QUANT_FUSED
  int any_quant = 0;
#endif
  const int32_t *qh = q_heads;
  const duo_segment *segs = segments;
  for (int si = 0; si < n_segments; si++) {
    const duo_segment *sg = &segs[si];
    if (sg->layout != DUO_NHD && (sg->layout != DUO_T64 || D % 8 || is_quantized(sg->dtype) || sg->buffer_rows <= 0 || sg->buffer_rows % DUO_TILE ||
                                  sg->row_start < 0 || sg->row_count > sg->buffer_rows - sg->row_start))
      return DUO_E_ARG;
    if (sg->layout == DUO_T64 && eo_capable(t, G, D)) p.eo = 1;
#ifdef K_QUANT_FUSED
    any_quant |= is_quantized(sg->dtype);
#endif
  }
#ifdef K_QUANT_FUSED
  p.z &= any_quant; /* no quantized segment: no fused-kernel queries to lay out */
#endif
  const float *qf = q;
  float *of = out, *lf = lse;
  const float scale = (float)LOG2E / __builtin_sqrtf((float)D);
  tile_ctx c = {.p = &p, .w = (uint8_t *)work, .slots = kv_slots, .sink = sink, .recent = recent, .windowed = windowed};
  const int JM = J * p.M;
  for (int t0 = 0; t0 < t; t0 += p.BQ) {
    const int rows = t - t0 < p.BQ ? t - t0 : p.BQ;
    c.tmin = (int64_t)q_pos0 + t0;
    c.tmax = c.tmin + rows - 1;
    /* queries of the tile, scaled, query vector m = r*G + g of head j at qp + j*M*D: in m4 mode quads interleaved by
     * 4 elements (kernels.h), in m1 mode one after the other; rows past T stay zero */
    float *qp = WS(&c, qp);
    __builtin_memset(qp, 0, (uint32_t)JM * D * 4);
    for (int j = 0; j < J; j++)
      for (int r = 0; r < rows; r++)
        for (int g = 0; g < G; g++) {
          const float *src = qf + ((uint32_t)(t0 + r) * num_heads + qh[j] * G + g) * D;
          const int m = r * G + g;
          float *dst = qp + (uint32_t)j * p.M * D;
          if (p.m4)
            for (int d = 0; d < D; d++) dst[(((m / 4) * (D / 4) + d / 4) * 4 + m % 4) * 4 + d % 4] = src[d] * scale;
          else
            for (int d = 0; d < D; d++) dst[m * D + d] = src[d] * scale;
          if (p.eo) /* the same query for the tiled kernels (kernels.h): q4[j][d][g] */
            for (int d = 0; d < D; d++) WS(&c, q4)[((uint32_t)j * D + d) * 4 + g] = src[d] * scale;
#ifdef K_QUANT_FUSED
          if (p.z) { /* and for the fused quantized kernels: qz[int4, int8][j][g][D] */
            k_quant_query(WS(&c, qz) + ((uint32_t)j * G + g) * D, src, scale, D, DUO_INT4);
            k_quant_query(WS(&c, qz) + ((uint32_t)(J + j) * G + g) * D, src, scale, D, DUO_INT8);
          }
#endif
        }
    reset_state(WS(&c, tacc), WS(&c, tm), WS(&c, tl), JM, D);
    for (int si = 0; si < n_segments; si++) {
      c.sg = &segs[si];
      if (c.sg->row_count <= 0) continue;
      if (c.sg->positions) run_rows(&c, 0, c.sg->row_count);
      else run_consecutive(&c);
    }
    /* out[t][j*G + g] = acc / l (acc back from even/odd order in an eo call); lse in natural log */
    const float *acc = WS(&c, tacc), *tm = WS(&c, tm), *tl = WS(&c, tl);
    for (int j = 0; j < J; j++)
      for (int r = 0; r < rows; r++)
        for (int g = 0; g < G; g++) {
          int v = j * p.M + r * G + g;
          uint32_t o = (uint32_t)(t0 + r) * J * G + j * G + g;
          k_scale(of + o * D, acc + v * D, tl[v] > 0.0f ? 1.0f / tl[v] : 0.0f, D);
          if (p.eo) from_even_odd(of + o * D, D);
          if (lf) lf[o] = tl[v] > 0.0f ? (float)(tm[v] * LN2 + log_f64(tl[v])) : NEG_INF;
        }
  }
  return DUO_OK;
}
