/**
 * The machine's two ceilings as this runtime sees them — streaming-read bandwidth and multiply-add throughput —
 * measured by the native backend's own ceiling kernels over its threads when that is the backend benchmarked, else
 * by the wasm backend's (src/backend/wasm-ceilings.ts) with the same worker count as the backend being benchmarked (threads: 0, i.e. this thread, for the single-threaded reference and null
 * backends). They run in a wasm backend of their own, disposed afterwards: the read test's buffers stay in a
 * worker's wasm memory, outside the benchmarked backend's accounting, and would eat into its KV capacity.
 */
import type { Backend } from "../../backend/types.ts";
import type { Ceilings } from "./roofline.ts";

export async function measureCeilings(backend: Backend): Promise<{ ceilings: Ceilings | null; why?: string }> {
  if (backend.name === "cuda") return { ceilings: null, why: "the ceilings are the CPU's (wasm SIMD); a GPU's limits are not measured here" };
  const { measureWasmCeilings } = await import("../../backend/wasm-ceilings.ts");
  if (backend.name === "native") return { ceilings: await measureWasmCeilings(backend as import("../../backend/native.ts").NativeBackend) };
  const { createWasmBackend } = await import("../../backend/wasm.ts");
  let own;
  try {
    own = await createWasmBackend({ threads: backend.name === "wasm" ? backend.shards : 0 });
  } catch (e) {
    return { ceilings: null, why: `the wasm kernels that measure them do not load here: ${(e as Error).message}` };
  }
  try {
    return { ceilings: await measureWasmCeilings(own) };
  } finally {
    await own.dispose();
  }
}
