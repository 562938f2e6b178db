/**
 * Stands in for kernels-native.ts in the builds that must reach no FFI module (dist/wasm.js and the model worker;
 * scripts/build.mjs swaps it in, as cuda-absent.ts and native-absent.ts for the backends).
 */
import { DuoError } from "../errors.ts";
import type { ModelKernels } from "./kernels.ts";

export async function createNativeKernels(_opts: { nativeLibrary?: string; threads?: number } = {}): Promise<ModelKernels> {
  throw new DuoError("BACKEND_UNAVAILABLE", "the native model kernels are not part of this build (browsers, edge runtimes and the model workers load no native library): use kernels \"wasm\"");
}
