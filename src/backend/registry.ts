/**
 * Backend selection. One function answers both "is it usable here?" (probe) and "give me one" (create).
 * Order for "auto": cuda (library loads + device present) -> native (the CPU library of this host loads, API version
 * checked) -> wasm -> reference. A backend that cannot be used, or cannot run the engine asked for (validate.ts
 * `unsupported`), says why; when none can, the error lists every reason.
 * "auto" never lands on the reference backend silently: it warns once with the reasons, or refuses with `strict`.
 */
import { DuoError } from "../errors.ts";
import { NullBackend } from "./null.ts";
import { ReferenceBackend } from "./reference.ts";
import type { Backend, BackendName, BackendProbe } from "./types.ts";
import { type EngineNeeds, unsupported } from "./validate.ts";

export type BackendChoice = BackendName | "auto";
export const BACKEND_CHOICES: readonly BackendChoice[] = ["auto", "cuda", "native", "wasm", "reference", "null"];

export interface BackendOptions {
  /** wasm: worker count (default: the number of cores; 0 = run in this thread); native: threads of the library's
   *  pool (default: the number of cores; 0 counts as 1) */
  threads?: number;
  /** wasm: bytes each worker (shard) may hold, below its 4 GiB wasm32 limit — to leave room, or to cap a benchmark */
  memoryLimit?: number;
  /** wasm: send small runs (a decode step's) to the workers through shared memory where the runtime allows it
   *  (default true; src/backend/wasm-lane.ts); false: every request is a message */
  sharedLane?: boolean;
  /** wasm: a precompiled module (edge runtimes, bundlers) instead of reading wasm/dist from disk */
  wasmModule?: WebAssembly.Module;
  /** native: path of libduo.so (default: $DUO_NATIVE_LIB, then native/dist/<os>-<arch>/) */
  nativeLibrary?: string;
  /** cuda: path of libduo_cuda.so (default: $DUO_CUDA_LIB, then cuda/build/) */
  cudaLibrary?: string;
  /** cuda: device ordinal */
  device?: number;
  /** "auto": throw BACKEND_UNAVAILABLE, listing why each faster backend is unusable, rather than fall back to the
   *  reference backend (plain TypeScript, an order of magnitude slower); without it the fallback warns once */
  strict?: boolean;
}

export async function probeBackend(name: BackendName, opts: BackendOptions = {}): Promise<BackendProbe> {
  switch (name) {
    case "reference":
    case "null":
      return { name, usable: true };
    case "wasm":
      return (await import("./wasm.ts")).probeWasm(opts);
    case "native":
      return (await import("./native.ts")).probeNative(opts);
    case "cuda":
      return (await import("./cuda.ts")).probeCuda(opts);
  }
}

export async function probeAll(opts: BackendOptions = {}): Promise<BackendProbe[]> {
  return Promise.all((["cuda", "native", "wasm", "reference", "null"] as const).map((n) => probeBackend(n, opts)));
}

/**
 * The backend for `choice`: a Backend instance as it is, a name, or the first usable one in "auto" order. With
 * `needs` (an engine's KV dtype and head dim) a backend must also run that engine: a named one that cannot throws
 * UNSUPPORTED, "auto" passes over it.
 */
export async function createBackend(choice: BackendChoice | Backend, opts: BackendOptions = {}, needs?: EngineNeeds): Promise<Backend> {
  if (typeof choice === "object" && choice !== null) {
    const why = needs && unsupported(choice.name, choice.capabilities, needs);
    if (why) throw new DuoError("UNSUPPORTED", why);
    return choice;
  }
  if (!BACKEND_CHOICES.includes(choice)) {
    throw new DuoError("INVALID_ARGUMENT", `backend must be one of ${BACKEND_CHOICES.map((b) => `"${b}"`).join(", ")}, got ${JSON.stringify(choice)}`);
  }
  if (choice === "reference") return new ReferenceBackend();
  if (choice === "null") return new NullBackend();
  const order: BackendName[] = choice === "auto" ? ["cuda", "native", "wasm", "reference"] : [choice];
  const reasons: string[] = [];
  for (const name of order) {
    if (name === "reference") return referenceFallback(reasons, opts.strict === true);
    const probe = await probeBackend(name, opts);
    if (!probe.usable) {
      reasons.push(`${name}: ${probe.reason}`);
      continue;
    }
    let backend: Backend;
    try {
      if (name === "wasm") backend = await (await import("./wasm.ts")).createWasmBackend(opts);
      else if (name === "native") backend = await (await import("./native.ts")).createNativeBackend(opts);
      else backend = await (await import("./cuda.ts")).createCudaBackend(opts);
    } catch (e) {
      if (choice !== "auto") throw e;
      reasons.push(`${name}: ${(e as Error).message}`);
      continue;
    }
    const why = needs && unsupported(name, backend.capabilities, needs);
    if (!why) return backend;
    await backend.dispose();
    if (choice !== "auto") throw new DuoError("UNSUPPORTED", why);
    reasons.push(`${name}: ${why}`);
  }
  throw new DuoError("BACKEND_UNAVAILABLE", `no usable backend for "${choice}": ${reasons.join("; ")}`);
}

/** Fallbacks already reported, by their reasons: a program that creates many engines hears of each once. */
const reported = new Set<string>();

/** The reference backend at the end of "auto": refused with `strict`, else said once (console.warn) with `reasons`. */
function referenceFallback(reasons: string[], strict: boolean): Backend {
  const why = reasons.join("; ");
  if (strict) {
    throw new DuoError("BACKEND_UNAVAILABLE", `backend "auto" found no backend faster than the reference one, and strict is set: ${why}`);
  }
  if (!reported.has(why)) {
    reported.add(why);
    console.warn(`duo-attention: backend "auto" is using the reference backend (plain TypeScript, an order of magnitude slower) because ${why}. Pass strict: true to refuse instead, or name a backend.`);
  }
  return new ReferenceBackend();
}
