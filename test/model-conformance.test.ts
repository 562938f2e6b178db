// The model-op grid (test/helpers/model-conformance.ts) on the kernel set of every backend present, taken the way the
// model runner takes it (Backend.modelKernels): wasm in this thread and over 2 model workers (wasm-parallel), native
// with 1 and 2 threads (matmul rows split) on every SIMD instruction set this CPU runs (each its own widening of
// 16-bit rows in file order, wasm/model/widen.h), cuda on a GPU or the emulation build. The reference backend's set
// is the reference itself.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createBackend, probeBackend } from "../src/backend/registry.ts";
import type { Backend } from "../src/backend/types.ts";
import type { KernelsName, ModelKernels, ModelKernelsOptions } from "../src/model/kernels.ts";
import { parallelUnusable } from "../src/model/kernels-parallel.ts";
import { cudaTarget } from "./helpers/cuda-target.ts";
import { conformModel, modelCases } from "./helpers/model-conformance.ts";
import { onEachNativeIsa } from "./helpers/native-isa.ts";

const wasm = await probeBackend("wasm"), native = await probeBackend("native");

interface SetSpec {
  name: string;
  /** the kernel set the backend must give for these options */
  kernels: KernelsName;
  options: ModelKernelsOptions;
}

async function grid(backend: Backend, sets: SetSpec[]) {
  const made: { name: string; kn: ModelKernels }[] = [];
  try {
    for (const s of sets) {
      const kn = await backend.modelKernels!(s.options);
      made.push({ name: s.name, kn });
      assert.equal(kn.name, s.kernels, s.name);
    }
    const ran = await conformModel(modelCases(), made);
    assert.equal(ran, modelCases().length * sets.length);
  } finally {
    for (const { kn } of made) kn.dispose();
    await backend.dispose();
  }
}

test("model ops of the wasm backend, in this thread and over 2 model workers, match the reference kernels", { skip: wasm.usable ? false : `skipped: wasm backend not usable: ${wasm.reason}` }, async () => {
  const parallel = parallelUnusable();
  const sets: SetSpec[] = [{ name: "wasm", kernels: "wasm", options: { modelThreads: 0 } }];
  if (parallel === null) sets.push({ name: "wasm-parallel x2", kernels: "wasm-parallel", options: { modelThreads: 2, weightBytes: Infinity } });
  else console.log(`# wasm-parallel not run: ${parallel}`);
  await grid(await createBackend("wasm", { threads: 0 }), sets);
});

test("model ops of the native backend, 1 and 2 threads, on every SIMD set this CPU runs, match the reference kernels", { skip: native.usable ? false : `skipped: native backend not usable: ${native.reason}` }, async () => {
  const ran = await onEachNativeIsa(["avx512", "avx2", "sse41", "neon"], async (isa) => {
    await grid(await createBackend("native", { threads: 2 }), [
      { name: `native ${isa} 1t`, kernels: "native", options: { threads: 1 } },
      { name: `native ${isa} 2t`, kernels: "native", options: { threads: 2 } },
    ]);
  });
  assert.ok(ran.length >= 1, "at least one SIMD set ran");
});

test(`model ops of the cuda backend (${cudaTarget.label}) match the reference kernels`, { skip: cudaTarget.skip }, async () => {
  await grid(await createBackend("cuda", { cudaLibrary: cudaTarget.library }), [{ name: "cuda", kernels: "cuda", options: {} }]);
});
