/** duo-attention: DuoAttention (retrieval + streaming heads) for TypeScript. The package root. */
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
