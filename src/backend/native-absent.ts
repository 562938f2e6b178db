/**
 * Stands in for native.ts in the browser and edge build (dist/wasm.js, `duo-attention/wasm`; scripts/build.mjs swaps
 * it in, as cuda-absent.ts for cuda.ts): that build must reach no FFI module, and no browser or edge runtime can load
 * a native library anyway. The exports the registry uses, so it needs no second code path.
 */
import { DuoError } from "../errors.ts";
import type { NativeBackend } from "./native.ts";
import type { BackendOptions } from "./registry.ts";
import type { BackendProbe } from "./types.ts";

const REASON = 'the native backend is not part of "duo-attention/wasm" (browsers and edge runtimes cannot load native libraries): import "duo-attention" in Node, Bun or Deno to use it';

export async function probeNative(_opts: BackendOptions = {}): Promise<BackendProbe> {
  return { name: "native", usable: false, reason: REASON };
}

export async function createNativeBackend(_opts: BackendOptions = {}): Promise<NativeBackend> {
  throw new DuoError("BACKEND_UNAVAILABLE", REASON);
}
