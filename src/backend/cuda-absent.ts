/**
 * Stands in for cuda.ts in the browser and edge build (dist/wasm.js, `duo-attention/wasm`; scripts/build.mjs swaps
 * it in): that build must reach no FFI module (bun:ffi, Deno.dlopen, koffi), and no browser or edge runtime can load
 * a native library anyway. Same exports as cuda.ts, so the registry needs no second code path.
 */
import { DuoError } from "../errors.ts";
import type { CudaBackendOptions } from "./cuda.ts";
import type { BackendOptions } from "./registry.ts";
import type { Backend, BackendProbe } from "./types.ts";

const REASON = 'the CUDA backend is not part of "duo-attention/wasm" (browsers and edge runtimes cannot load native libraries): import "duo-attention" in Node, Bun or Deno to use it';

export async function probeCuda(_opts: BackendOptions): Promise<BackendProbe> {
  return { name: "cuda", usable: false, reason: REASON };
}

export async function createCudaBackend(_opts: CudaBackendOptions): Promise<Backend> {
  throw new DuoError("BACKEND_UNAVAILABLE", REASON);
}
