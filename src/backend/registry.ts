/**
 * Backend selection. One function answers both "is it usable here?" (probe) and "give me one" (create).
 * Order for "auto": cuda (library loads + device present) -> native (the CPU library of this host loads, API version
 * checked) -> wasm -> reference. A backend that cannot be used says why; when none can, the error lists every reason.
 */
import { DuoError } from "../errors.ts";
import { NullBackend } from "./null.ts";
import { ReferenceBackend } from "./reference.ts";
import type { Backend, BackendName, BackendProbe } from "./types.ts";

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

export async function createBackend(choice: BackendChoice | Backend, opts: BackendOptions = {}): Promise<Backend> {
  if (typeof choice === "object" && choice !== null) return choice;
  if (!BACKEND_CHOICES.includes(choice)) {
    throw new DuoError("INVALID_ARGUMENT", `backend must be one of ${BACKEND_CHOICES.map((b) => `"${b}"`).join(", ")}, got ${JSON.stringify(choice)}`);
  }
  if (choice === "reference") return new ReferenceBackend();
  if (choice === "null") return new NullBackend();
  const order: BackendName[] = choice === "auto" ? ["cuda", "native", "wasm", "reference"] : [choice];
  const reasons: string[] = [];
  for (const name of order) {
    const probe = await probeBackend(name, opts);
    if (!probe.usable) {
      reasons.push(`${name}: ${probe.reason}`);
      continue;
    }
    if (name === "reference") return new ReferenceBackend();
    try {
      if (name === "wasm") return await (await import("./wasm.ts")).createWasmBackend(opts);
      if (name === "native") return await (await import("./native.ts")).createNativeBackend(opts);
      return await (await import("./cuda.ts")).createCudaBackend(opts);
    } catch (e) {
      if (choice !== "auto") throw e;
      reasons.push(`${name}: ${(e as Error).message}`);
    }
  }
  throw new DuoError("BACKEND_UNAVAILABLE", `no usable backend for "${choice}": ${reasons.join("; ")}`);
}
