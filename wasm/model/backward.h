/*
 * The activation-only backward kernels of gate identification (IDENTIFICATION.md §1.2; src/identify/backward.ts is
 * the float64 twin, src/identify/backward-kernels.ts the TypeScript interface over them). Built into duo-model.wasm
 * beside the model kernels (wasm/model/build.sh compiles every .c here) and, per SIMD set, into libduo.so
 * (native/build.sh; native/src/backward.c holds the checked entry points). f32 activations, row-major, one row per
 * token; f32 accumulation inside a row, f64 for the dα sums. Freestanding: no libc, no allocation, nothing returned
 * but through the output arrays (the callers validate the shapes). Every gradient written is flushed to 0 below 2^-90
 * in magnitude (no subnormals: backward.c explains; callers scale a step's gradients to about 1).
 */
#ifndef DUO_MODEL_BACKWARD_H
#define DUO_MODEL_BACKWARD_H
#include <stdint.h>

/* dx[T, nin] (+)= dy[T, nout] · W[nout, nin] on the columns [k0, k1) of dx (k0 a multiple of 8): the input gradient of
 * y = x·Wᵀ. W is the model kernels' matrix: f32, or f16 / bf16 rows in the layout the forward kernels read (widen.h:
 * file order on native; in the wasm build packed by pack_u16, groups of 8 stored as [0,4,1,5,2,6,3,7], the nin % 8
 * tail unpacked). accumulate = 0 overwrites those columns, 1 adds to them. */
void bwd_linear_f32(float *dx, const float *dy, const float *w, int T, int nin, int nout, int k0, int k1, int accumulate);
void bwd_linear_f16(float *dx, const float *dy, const uint16_t *w, int T, int nin, int nout, int k0, int k1, int accumulate);
void bwd_linear_bf16(float *dx, const float *dy, const uint16_t *w, int T, int nin, int nout, int k0, int k1, int accumulate);

/* rinv[T] = 1 / sqrt(mean(x[t, :]²) + eps), x [T, n]: the factor the model's rmsnorm applied (same f32 formula). */
void bwd_rms_inv(float *rinv, const float *x, int T, int n, float eps);

/* dx[T, n] += (w⊙dy)·ri − x·ri³·Σ_i (w⊙dy⊙x)_i / n per row t, ri = rinv[t]; dy, x [T, n], w [n]. */
void bwd_rmsnorm(float *dx, const float *dy, const float *x, const float *w, const float *rinv, int T, int n);

/* m = silu(a)⊙u backward, elementwise over n: da = dm⊙u⊙σ(a)(1 + a(1 − σ(a))), du = dm⊙silu(a); σ(a) < 2^-50 is
 * flushed to 0 (backward.c FLUSH_LOG2). */
void bwd_swiglu(float *da, float *du, const float *dm, const float *a, const float *u, int n);

/* RoPE⁻¹ in place on x [T, H, D] (rotate-half layout): (a, b) ← (a·c + b·s, b·c − a·s), cos/sin [T, D/2], i.e. the
 * rotation by −θ, which is RoPE's transpose and so its backward. */
void bwd_rope(float *x, const float *cos, const float *sin, int T, int H, int D);

/* Streaming attention over explicit key ranges, for query heads [h0, h1):
 *   out[i, h] = softmax_j(q[i, h]·k[j, h/G]/√D) v[j, h/G],  lse[i, h] = log Σ_j exp(q·k_j/√D)   (natural log)
 * over the key rows j ∈ [0, ranges[3i]) ∪ [ranges[3i+1], ranges[3i+2]) (indices into k, v; the Λ window of the
 * query's position, src/identify/window.ts). q, out [nq, Hq, D]; k, v [nk, Hkv, D]; lse [nq, Hq]; D ≤ 256, a multiple
 * of 4. A row with no key gets out = 0, lse = −Inf. Keys whose weight is below 2^-50 of the row's largest are
 * flushed (left out of both sums: backward.c FLUSH_LOG2). */
void bwd_attend(float *out, float *lse, const float *q, const float *k, const float *v, const int32_t *ranges, int nq,
                int Hq, int Hkv, int D, int h0, int h1);

/* Its backward for the KV heads [g0, g1) (and their query heads), accumulating into dq [nq, Hq, D] and dk, dv
 * [nk, Hkv, D] (GQA: summed over the group); dO, O [nq, Hq, D], lse [nq, Hq] from bwd_attend. Per query row and head:
 * Δ = dO·O (the pre-pass), then per visible key P = exp(q·k/√D − lse), dS = P(dO·v − Δ)/√D;
 * dq += dS k, dk += dS q, dv += P dO; keys with P < 2^-50 are flushed (skipped). Rows whose dO is all zero (outside
 * the cone) are skipped. Queries run in ascending i, so every key's sums see their terms in one order whatever thread
 * runs them. */
void bwd_attend_backward(float *dq, float *dk, float *dv, const float *dO, const float *O, const float *lse,
                         const float *q, const float *k, const float *v, const int32_t *ranges, int nq, int Hq, int Hkv,
                         int D, int g0, int g1);

/* The mix A_mix = (1 − α)A_str + α·A_full backward with the fused dα reduction, for rows [nq] of [Hq, D]:
 *   dstr[i, h] = (1 − alpha[h/G])·dmix[i, h];  dalpha[g] += Σ_i Σ_{h ∈ group g} Σ_d dmix ⊙ (afull − astr)
 * dmix, afull, astr, dstr [nq, Hq, D]; alpha [Hkv] (already clamped); dalpha [Hkv] f64 (each row's dot in f32). */
void bwd_mix(float *dstr, double *dalpha, const float *dmix, const float *afull, const float *astr, const float *alpha,
             int nq, int Hq, int Hkv, int D);

#endif
