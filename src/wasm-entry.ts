/**
 * `duo-attention/wasm`: the entry for browsers, edge functions and bundlers (also what `duo-attention` resolves to
 * under the `browser` and `workerd` export conditions). The package root's attention API — engine, schedules,
 * patterns, backends wasm / reference / null — without the model runner (`duo-attention/model`, which reads weight
 * files) and without the CUDA backend: the published dist/wasm.js reaches no FFI module and no node:, bun: or npm
 * import (scripts/build.mjs puts src/backend/cuda-absent.ts in cuda.ts's place).
 *
 * Where nothing can read files (edge runtimes, and bundles that move this module away from its .wasm files), pass
 * the compiled kernels yourself:
 *
 *   import { DuoAttention } from "duo-attention/wasm";
 *   import wasmModule from "duo-attention/duo.wasm";            // Cloudflare Workers, Vite `?module`-style imports
 *   // or: const wasmModule = await WebAssembly.compileStreaming(fetch("/assets/duo.wasm"));
 *   const duo = await DuoAttention.create({ shape, heads, backend: "wasm", wasmModule, threads: 0 });
 *
 * `duo-relaxed.wasm` is the faster build where the runtime has relaxed SIMD (Chromium, workerd, Deno, Bun, Node 22+).
 * `threads: 0` runs the kernels in the calling thread (edge runtimes have no workers); in a browser with cross-origin
 * isolation (COOP/COEP), `threads: navigator.hardwareConcurrency` spreads heads over workers, which load
 * wasm-worker.js from beside this module.
 */
import "./api-globals.ts";
export { DuoError, type DuoErrorCode } from "./errors.ts";
export { type KvDtype } from "./dtype.ts";
export { type ModelShape } from "./shape.ts";
export { HeadSchedule } from "./schedule/schedule.ts";
export { runtime, type RuntimeInfo } from "./runtime.ts";
export { createBackend, probeAll, probeBackend, type BackendChoice, type BackendOptions } from "./backend/registry.ts";
export type { Backend, BackendName, BackendProbe } from "./backend/types.ts";
export { DuoAttention } from "./engine/duo.ts";
export { Sequence } from "./engine/sequence.ts";
export type { DuoAttentionOptions } from "./engine/options.ts";
export type { KvBytes } from "./cache/split-cache.ts";
export type { PrefillMode } from "./cache/layer-shard.ts";
export { type HeadPattern, type PatternConfig, makePattern, parsePattern, parsePatternConfig, checkPattern, checkPatternShape } from "./pattern/pattern.ts";
export { loadPattern, formatPattern, patternUrls } from "./pattern/io.ts";
export { sparsify, retrievalCount, TIE_BREAKS, type SparsifyOptions, type TieBreak } from "./pattern/sparsify.ts";
export { MT19937 } from "./pattern/mt19937.ts";
export { scheduleToHex } from "./schedule/hex.ts";
export { kvHeadOf, queryHeads } from "./schedule/gqa.ts";
export { type AttentionWeights, permuteAttentionWeights, unpermuteAttentionWeights, permuteRowBlocks, permuteColumnBlocks, invertPermutation, checkPermutation } from "./schedule/permute.ts";
export { type ModelPreset, type RopeScaling, PRESETS, PATTERN_PRESETS, getPreset, presetForPattern } from "./schedule/presets.ts";
export { kvBytes, fullKvBytes, type KvBytesOptions } from "./schedule/kv.ts";
export { syntheticSchedule } from "./schedule/synthetic.ts";
