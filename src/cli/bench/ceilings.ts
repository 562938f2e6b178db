/**
 * The machine's two ceilings as this runtime sees them — streaming-read bandwidth and multiply-add throughput —
 * measured by the wasm backend's own ceiling kernels (src/backend/wasm-ceilings.ts) with the same worker count as
 * the backend being benchmarked (threads: 0, i.e. this thread, for the single-threaded reference and null
 * backends). They run in a wasm backend of their own, disposed afterwards: the read test's buffers stay in a
 * worker's wasm memory, outside the benchmarked backend's accounting, and would eat into its KV capacity.
 */
import type { Backend } from "../../backend/types.ts";
import type { Ceilings } from "./roofline.ts";

export async function measureCeilings(backend: Backend): Promise<{ ceilings: Ceilings | null; why?: string }> {
  if (backend.name === "cuda") return { ceilings: null, why: "the ceilings are the CPU's (wasm SIMD); a GPU's limits are not measured here" };
  const { createWasmBackend } = await import("../../backend/wasm.ts");
  const { measureWasmCeilings } = await import("../../backend/wasm-ceilings.ts");
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
