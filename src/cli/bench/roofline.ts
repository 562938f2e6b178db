/**
 * The arithmetic behind every "how close to the machine's limit" figure of `duo bench` (ANCHORS §4, SPEC §4.4).
 *
 * Decode reads every cached K and V element once per token and spends G multiply-adds on it (one per query head of
 * its GQA group), i.e. 2G FLOP per element of b bytes: intensity 2G/b FLOP per KV byte. The kernel is limited by
 * the lower of the streaming-read bandwidth and (FLOP rate ÷ intensity).
 *
 * Prefill work is counted exactly as (query, visible key) pairs: 4·D FLOP each per query head (QKᵀ and PV).
 */
import type { PrefillMode } from "../../cache/layer-shard.ts";

/** The two ceilings measured in this runtime, with the same worker count as the backend. */
export interface Ceilings {
  /** streaming-read bandwidth, GB/s (1e9 bytes) */
  readGBps: number;
  /** multiply-add throughput as FLOP/s (one multiply-add = 2 FLOP), GFLOP/s */
  gflops: number;
  workers: number;
  /** the kernel build that measured them (e.g. "relaxed", "native avx512"): see madWidth */
  kernels?: string;
}

/**
 * How many times wider than the 4-lane multiply-add of the ceiling kernel the decode kernels of `dtype` at group size
 * `group` multiply-add, in the build `kernels` names. The native library's tiled decode kernels (G = 4,
 * wasm/src/attend_simd.c) issue 16-lane bf16 and 8-lane f16 multiply-adds on AVX-512, 8-lane ones on AVX2; its fused
 * int4 / int8 kernels (G = 1 and 4, quant_simd.c) and its wide m1 kernels (float dtypes at G = 1 and other G that
 * are not multiples of 4) 16 lanes on AVX-512 and 8 on AVX2, for head dims that are a multiple of 32. Everything else,
 * and every wasm build, runs 4-lane kernels. The x86 cores these sets target have two multiply-add pipes of every
 * width, so the multiply-add ceiling of those kernels is the measured one times this.
 */
export function madWidth(kernels: string | undefined, dtype: string, group: number, headDim: number): number {
  if (!kernels?.startsWith("native") || headDim % 32 !== 0) return 1;
  const wide = /avx512/.test(kernels) ? 4 : /avx2/.test(kernels) ? 2 : 1;
  if (dtype === "int4" || dtype === "int8" || group % 4 !== 0) return wide;
  if (group !== 4) return 1;
  if (dtype === "bf16") return wide;
  return dtype === "f16" ? Math.min(wide, 2) : 1;
}

/**
 * The same for prefill tiles (16 or more query vectors per KV head and block, as chunked prefill makes them): the
 * native AVX-512 and AVX2 sets run 16- and 8-lane score and P·V kernels over f32 rows (K/V widened or dequantized
 * first) where the head dim is a multiple of 16 (AVX-512) or 8 (AVX2); everything else, and wasm, 4 lanes.
 */
export function prefillMadWidth(kernels: string | undefined, headDim: number): number {
  if (!kernels?.startsWith("native")) return 1;
  if (/avx512/.test(kernels)) return headDim % 16 === 0 ? 4 : 1;
  return /avx2/.test(kernels) && headDim % 8 === 0 ? 2 : 1;
}

/** FLOP per KV byte of decode attention with GQA group `group` and `bytesPerElem`-byte elements. */
export function decodeFlopPerByte(group: number, bytesPerElem: number): number {
  return (2 * group) / bytesPerElem;
}

/** The attainable KV read rate (GB/s) of a kernel with `flopPerByte` on a machine with these ceilings. */
export function limitGbps(c: Pick<Ceilings, "readGBps" | "gflops">, flopPerByte: number): number {
  return Math.min(c.readGBps, c.gflops / flopPerByte);
}

/** GB/s for `bytes` moved in `ms` milliseconds. */
export function gbps(bytes: number, ms: number): number {
  return bytes / (ms * 1e6);
}

export interface WindowGeometry {
  sinkSize: number;
  recentSize: number;
}

/**
 * Keys visible to query position t of a streaming head (SPEC §3): "window" sees p < S or p ≥ t − R;
 * "upstream" sees, in a call that starts at position c, p < S or p ≥ c − R (so the first call, c = 0, is dense).
 * Both are also causal (p ≤ t).
 */
export function streamingKeys(t: number, callStart: number, mode: PrefillMode, w: WindowGeometry): number {
  const from = mode === "window" ? t - w.recentSize : callStart - w.recentSize;
  const sinks = Math.min(w.sinkSize, t + 1);
  return sinks + Math.max(0, t - Math.max(from, w.sinkSize, 0) + 1);
}

/** (query, key) pairs of one KV head over a chunked prefill of `context` tokens in chunks of `chunk`. */
export function prefillPairs(context: number, chunk: number, kind: "retrieval" | "streaming", mode: PrefillMode, w: WindowGeometry): number {
  if (kind === "retrieval") return (context * (context + 1)) / 2;
  let pairs = 0;
  for (let c = 0; c < context; c += chunk) {
    for (let t = c; t < Math.min(c + chunk, context); t++) pairs += streamingKeys(t, c, mode, w);
  }
  return pairs;
}

/** FLOP of a chunked prefill of one layer with `retrieval` retrieval and `streaming` streaming KV heads. */
export function prefillFlop(
  o: { context: number; chunk: number; retrieval: number; streaming: number; group: number; headDim: number; mode: PrefillMode } & WindowGeometry,
): number {
  const perPair = 4 * o.headDim * o.group;
  return perPair * (o.retrieval * prefillPairs(o.context, o.chunk, "retrieval", o.mode, o)
    + o.streaming * prefillPairs(o.context, o.chunk, "streaming", o.mode, o));
}

/**
 * Decode KV bytes read per token, all layers: retrieval heads read their T cached tokens, streaming heads their
 * min(T, S+R) (SPEC §4.4 — the same as the bytes they hold).
 */
export function decodeBytes(
  o: { retrievalHeads: number; streamingHeads: number; context: number; headDim: number; bytesPerElem: number } & WindowGeometry,
): number {
  const perHeadToken = 2 * o.headDim * o.bytesPerElem;
  return perHeadToken * (o.retrievalHeads * o.context + o.streamingHeads * Math.min(o.context, o.sinkSize + o.recentSize));
}
