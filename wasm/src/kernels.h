/*
 * The kernels that come in twins: a SIMD version (*_simd.c, built into duo.wasm with -msimd128) and a scalar version
 * with the same signature (*_scalar.c, built into duo-scalar.wasm). The drivers (attend.c, append.c, merge.c) call
 * only these, so the conformance tests run both builds through the same driver code. (bench_simd.c and
 * bench_scalar.c, the benchmark ceilings, are twins of whole exports.)
 *
 * Shapes: D = head dim (a multiple of 4); a "key" or "value" row is D elements of dtype dt starting at a byte
 * pointer, and consecutive rows of one head are `stride` bytes apart (row_heads * D * element size in the cache).
 * Scores are in log2 units: the driver pre-multiplies queries by log2(e) / sqrt(D), so softmax uses exp2.
 */
#ifndef DUO_KERNELS_H
#define DUO_KERNELS_H
#include <stdint.h>
#include "duo.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Tiled buffers (duo.h): the element where the K64 (or V64) tile of rows [r - r % 64, +64) of head j starts, in a
 * buffer of `blocks` 64-row blocks and head dim D: head j's tile pairs one after another, V right after K. */
static inline uint32_t tile_start(int layout, uint32_t r, uint32_t j, uint32_t blocks, uint32_t D) {
  return ((j * blocks + r / DUO_TILE) * 2 + (layout == DUO_V64)) * DUO_TILE * D;
}

/* The element where row r of head j starts in its tile. Element d of that row then lies d*8 further on in a K64 tile,
 * and (d/8)*64*8 + d%8 further on in a V64 tile. */
static inline uint32_t tile_row_start(int layout, uint32_t r, uint32_t j, uint32_t blocks, uint32_t D) {
  uint32_t i = r % DUO_TILE;
  return tile_start(layout, r, j, blocks, D) + (layout == DUO_K64 ? (i / 8) * D * 8 + i % 8 : i * 8);
}

/* s[i*M + m] = qp[m] . key i, for i < n, m < M (M a multiple of 4), dt DUO_F32 or DUO_BF16 (f16 is widened first),
 * or DUO_INT8: the rows are int8 records (quant.h) and key i is taken as its codes, unscaled (attend.c multiplies
 * the scores by the record's scale, and the weights p of k_pv_* likewise, so that decode reads the codes directly).
 * qp holds the M query vectors in quads, each quad interleaved by 4 elements so that one pointer reaches all four:
 * element d of query 4a + b is qp[((a*D/4 + d/4)*4 + b)*4 + d%4]. For M >= 16 over f32 rows (prefill tiles) the
 * AVX-512 and AVX2 sets read 16 or 8 of those floats per vector (a quad's 4 queries x 4 elements against the row's 4
 * elements repeated per 128-bit lane), and k_pv_m4 keeps 4 queries x 64 or 16 elements of acc in registers: the same
 * sums as the 4-lane kernels, bit for bit (attend_simd.c scores_m4_wide, pv_m4_q). */
void k_scores_m4(const float *qp, int M, int D, const uint8_t *k, uint32_t stride, int dt, int n, float *s);
/* s[i] = q . key i, for i < n (one query vector, natural order), dt DUO_F32 or DUO_BF16. */
void k_scores_m1(const float *q, int D, const uint8_t *k, uint32_t stride, int dt, int n, float *s);

/* Online-softmax step over one block of scores s [n][M] (masked entries = -Inf), per query vector m:
 * mx[m] <- max(mx[m], max_i s), alpha[m] = 2^(old mx - new mx), s <- 2^(s - new mx) (the weights p),
 * l[m] <- l[m] * alpha[m] + sum_i p. A row still without any visible key keeps mx = -Inf, alpha = 0, p = 0. */
void k_softmax_m4(float *s, int n, int M, float *mx, float *l, float *alpha);
void k_softmax_m1(float *s, int n, float *mx, float *l, float *alpha);

/* acc[m][:] <- acc[m][:] * alpha[m] + sum_i p[i*M + m] * value i, for m < M (a multiple of 4), dt DUO_F32 or
 * DUO_BF16, | DUO_NONFINITE to skip zero weights exactly, or DUO_INT8 (codes, as for the scores; finite). acc: [M][D]. */
void k_pv_m4(float *acc, const float *alpha, const float *p, int M, int D, const uint8_t *v, uint32_t stride, int dt,
             int n);
/* acc[:] <- acc[:] * alpha + sum_i p[i] * value i (one query vector), dt as for k_pv_m4. */
void k_pv_m1(float *acc, float alpha, const float *p, int D, const uint8_t *v, uint32_t stride, int dt, int n);

/* The tiled fast path (T64 tiles of bf16 or f16, G = 4 decode; duo.h has the tile layouts). The 4 query vectors are
 * interleaved element by element, q4[d*4 + h] = element d of query vector h, and the weights come as k_softmax_m4
 * leaves them for M = 4, p[i*4 + h]: each multiply broadcasts one float from a small, L1-resident array (a 16-byte
 * copy per float measured slower: from DRAM, its 4x larger footprint competes with the K/V lines in L1).
 * s[i*4 + h] = query h . row i of the K64 tile at kt, for i < n (rows up to the next multiple of 8 may be written).
 * acc [4][D] is kept "even/odd" within every 8 elements: [e0 e2 e4 e6 e1 e3 e5 e7] (a 16-byte load of 8 elements splits
 * into these halves in a few lane operations); acc[h] <- acc[h] * alpha[h] + sum_{i<n} p[i*4 + h] * row i of the V64
 * tile at vt. dt: DUO_BF16 or DUO_F16 (finite values: a segment with Inf/NaN takes the widening path). */
void k_scores_k64(const float *q4, int D, const uint8_t *kt, int dt, int n, float *s);
void k_pv_v64(float *acc, const float *alpha, const float *p, int D, const uint8_t *vt, int dt, int n);

/* Fused quantized decode (T = 1, G = 1 or a multiple of 4, D a multiple of 32, records not flagged DUO_NONFINITE), in
 * the AVX-512 and AVX2 sets (K_QUANT_FUSED; quant_simd.c with simd_x86.h's VQ vectors, 16 or 8 lanes): read straight
 * from the packed records, no dequantized copy of the block, each block's rows front to back, each row across every
 * head of the call (as k_scores_heads / k_pv_heads below walk float rows). int4: each record's 16-value table
 * (quant.h, f16(f16(q * s) + z), exact) is built once per record and its codes looked up a vector at a time (AVX-512:
 * vpermps on the f32 table; AVX2: vpshufb on its byte planes, 32 codes per pass); int8: the
 * codes widened to f32, the record's scale applied to the dot product (K) and to the weight (V), which only
 * reassociates one f32 product per term. Each value is widened once and used by the g query vectors that read it.
 * Elsewhere int4 blocks go through k_dequant and the f32 kernels, int8 through the 4-lane code kernels; the
 * conformance grid runs every instruction set against the reference backend.
 * k_quant_query: qz [D] = q * scale in the order the kernels read a record of dtype dt: int8 natural; int4 on AVX-512
 *   in steps of 128 elements (quant_simd.c: the order of a step's 8 nibble lookups), then, for a head dim that is not
 *   a multiple of 128, and on AVX2 throughout, in chunks of 32 elements in simd_x86.h's VQ_INT4_AT order.
 * Query vector v (v < nv; g consecutive vectors per KV head: g = 1 or a multiple of 4) reads the record at byte offset
 * off[v] of each row (its head's slot; off[v] is the same for the g vectors of a head); qz [nv][D] in k_quant_query's
 * order. k_scores_quant_heads: s[i*sm + v] = q_v . record off[v] of row i, for i < n, v < nv; -Inf for nv <= v < sm.
 * k_pv_quant_heads: acc[v][:] <- acc[v][:] * alpha[v] + sum_{i<n} p[i*sm + v] * record off[v] of row i, acc [nv][D]
 * natural order. Any n. */
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#define K_QUANT_FUSED 1
void k_quant_query(float *qz, const float *q, float scale, int D, int dt);
void k_scores_quant_heads(const float *qz, int nv, int sm, int g, const uint32_t *off, int D, const uint8_t *k, uint32_t stride, int dt, int n, float *s);
void k_pv_quant_heads(float *acc, const float *alpha, const float *p, int sm, int nv, int g, const uint32_t *off, int D, const uint8_t *v, uint32_t stride, int dt, int n);
#endif

/* int4 m1 decode (one query vector per pass) straight from the records, in the 4-lane SIMD builds without the fused
 * kernels above (wasm SIMD128, SSE4.1, NEON; quant_simd.c): each record's 16 values as k_dequant's byte planes, every
 * 16 codes looked up into registers and used there. D % 16 == 0, records not flagged DUO_NONFINITE.
 * k_scores_int4_m1: s[i] = q . record i, for i < n (q natural order, records `stride` bytes apart).
 * k_pv_int4_m1: acc[:] <- acc[:] * alpha + sum_{i<n} p[i] * record i. */
#if !defined(K_QUANT_FUSED) && (defined(__wasm_simd128__) || defined(__SSE4_1__) || defined(__ARM_NEON))
#define K_INT4_M1 1
void k_scores_int4_m1(const float *q, int D, const uint8_t *k, uint32_t stride, int n, float *s);
void k_pv_int4_m1(float *acc, float alpha, const float *p, int D, const uint8_t *v, uint32_t stride, int n);
#endif

/* Decode with one query vector per pass (m1: G = 1, the MHA shape, or any G not a multiple of 4) over token-major f32,
 * f16 or bf16 rows in wide vectors, every query vector of the call at once (K_M1_WIDE lanes: the VQ vectors of
 * simd_x86.h, 16 on AVX-512, 8 on AVX2), for D a multiple of K_M1_WIDE and rows without Inf/NaN (a segment flagged
 * DUO_NONFINITE takes the 4-lane kernels: zero weights must skip those values exactly). Query vector h reads the head
 * at byte offset off[h] of each row (its slot), and each kernel walks the block's rows front to back, each row across
 * all its heads: the block's bytes in the order they lie, one stream the hardware prefetcher follows (per head, a row
 * is a 256-byte run every row_heads * 256 bytes, which no prefetcher follows). f16 is read directly (vcvtph2ps, exact).
 * k_scores_heads: s[i*sm + h] = q_h . key i, for i < n, h < nv (q [nv][D] natural order); s[i*sm + h] = -Inf for
 *   nv <= h < sm (the padding up to sm, a multiple of 4, for k_softmax_m4).
 * k_pv_heads: acc[h][:] <- acc[h][:] * alpha[h] + sum_{i<n} p[i*sm + h] * value i, for h < nv; acc [nv][D]. */
#ifdef K_QUANT_FUSED
#if defined(__AVX512F__)
#define K_M1_WIDE 16
#else
#define K_M1_WIDE 8
#endif
void k_scores_heads(const float *q, int nv, int sm, const uint32_t *off, int D, const uint8_t *k, uint32_t stride, int dt, int n, float *s);
void k_pv_heads(float *acc, const float *alpha, const float *p, int sm, int nv, const uint32_t *off, int D, const uint8_t *v, uint32_t stride, int dt, int n);
#endif

/* dst[i*D + d] = f32 of element d of tile row i0 + i, for i < n (i0 + n <= 64): rows of a K64 or V64 tile of bf16 or
 * f16 (| DUO_NONFINITE: exact for Inf/NaN) widened into token-major f32 rows (prefill and the other shapes that read
 * tiles through the f32 kernels). With even_odd, V rows come out in the even/odd order of the eo accumulators. */
void k_widen_k64(float *dst, const uint8_t *kt, int dt, int i0, int n, int D);
void k_widen_v64(float *dst, const uint8_t *vt, int dt, int i0, int n, int D, int even_odd);

/* dst[i*D + d] = f32 of element d of row i, any dtype (a block of keys or values widened once and reused by many
 * query vectors; f16 always goes this way, exactly when dt has DUO_NONFINITE). */
void k_widen(float *dst, const uint8_t *src, uint32_t stride, int dt, int n, int D);

/* y = a * wa + b * wb over D floats (y may alias a). */
void k_axpby(float *y, const float *a, float wa, const float *b, float wb, int D);
/* y = x * s over D floats. */
void k_scale(float *y, const float *x, float s, int D);

/* dst (dtype dt: DUO_F16 or DUO_BF16) = src rounded to nearest even, n floats (n a multiple of 4).
 * Returns how many of the written values are Inf or NaN. */
int k_convert(uint8_t *dst, const float *src, int dt, int n);
/* How many of n floats (a multiple of 4) are Inf or NaN. */
int k_nonfinite(const float *src, int n);

#endif
