// An int8 / int4 DuoAttention engine on the CUDA backend (a GPU or the host emulation build: helpers/cuda-target.ts)
// against the same engine on the reference backend: prefill chunks and decode steps through retrieval pages and the
// streaming ring, outputs within the f32 tolerance (|a - b| <= 1e-5 + 1e-4 |b|: both read the same records, see
// cuda-conformance.test.ts) except int4 prefill chunks, which take the tensor-core kernel (f16 queries and
// probabilities: |a - b| <= 2e-2 as in cuda-cases.test.ts), bytes() equal to SPEC §4.4's formula with each record's bytes, and the library's
// memory().allocated counting exactly the buffers the reference backend holds for the same cache.
import { test } from "node:test";
import assert from "node:assert/strict";
import { DuoAttention } from "../src/engine/duo.ts";
import { headBytes } from "../src/dtype.ts";
import { cudaTarget } from "./helpers/cuda-target.ts";
import { randomArray } from "./helpers/random.ts";

const { library, label, skip } = cudaTarget;

for (const kvDtype of ["int8", "int4"] as const) {
  test(`cuda (${label}): an ${kvDtype} engine matches the reference engine; bytes() and memory() count the records`, { skip }, async () => {
    const L = 2, H = 8, Hkv = 2, D = 64, S = 4, R = 16;
    // layer 0: KV head 0 retrieves, head 1 streams; layer 1 the other way round
    const opts = { shape: { numLayers: L, numHeads: H, numKvHeads: Hkv, headDim: D }, heads: [[true, false], [false, true]], sinkSize: S, recentSize: R, pageSize: 64, kvDtype };
    const [cuda, ref] = [await DuoAttention.create({ ...opts, backend: "cuda", cudaLibrary: library }), await DuoAttention.create({ ...opts, backend: "reference" })];
    try {
      const [sc, sr] = [cuda.sequence(), ref.sequence()];
      let T = 0, seed = 1;
      for (const n of [70, 1, 33, 1, 1]) { // a prefill past one page and the ring, decode, a chunk, decode
        for (let l = 0; l < L; l++) {
          const q = randomArray(n * H * D, seed++, 3), k = randomArray(n * Hkv * D, seed++, 1), v = randomArray(n * Hkv * D, seed++, 1);
          const [a, b] = [await sc.attend(l, q, k, v), await sr.attend(l, q, k, v)];
          const f16 = kvDtype === "int4" && n * (H / Hkv) > 16; // attend.cu: the tensor-core kernel
          for (let i = 0; i < b.length; i++) {
            const e = Math.abs(a[i]! - b[i]!);
            assert.ok(e <= (f16 ? 2e-2 : 1e-5 + 1e-4 * Math.abs(b[i]!)), `T=${T} +${n} layer ${l} out[${i}]: ${a[i]} vs reference ${b[i]}`);
          }
        }
        T += n;
        const bD = headBytes(kvDtype, D); // one head's K or V of a token: a record
        // per layer one retrieval and one streaming KV head
        const want = { retrieval: 2 * bD * L * T, streaming: 2 * bD * L * Math.min(T, S + R), full: 2 * bD * L * Hkv * T };
        const [bc, br] = [sc.bytes(), sr.bytes()];
        assert.deepEqual([bc.retrieval, bc.streaming, bc.fullAttention], [want.retrieval, want.streaming, want.full], `T=${T}`);
        assert.deepEqual(bc, br, `T=${T}: bytes() on cuda and on the reference`);
        assert.equal(cuda.backend.memory(0).allocated, ref.backend.memory(0).allocated, `T=${T}: bytes the cuda library holds vs the reference backend`);
        assert.ok(cuda.backend.memory(0).allocated >= bc.allocated);
      }
    } finally {
      await cuda.dispose();
      await ref.dispose();
    }
  });
}
