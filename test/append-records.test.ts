// Append writes int8 / int4 records byte for byte as src/quant.ts on every CPU backend (the CUDA backend's twin of
// this test is in cuda-backend.test.ts): ties, a min that is a zero of both signs in either order (Math.min's -0 wins),
// constant rows, ±65504, small and large ranges.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createBackend, probeBackend } from "../src/backend/registry.ts";
import type { AppendOp, Backend } from "../src/backend/types.ts";
import { headBytes } from "../src/dtype.ts";
import { quantizeRecord } from "../src/quant.ts";

const KINDS: ((d: number) => number)[] = [
  (d) => (d === 0 ? 127 : (d % 8) - 3.5), // int8: scale 1, codes at .5 ties (RNE)
  (d) => (d === 0 ? 0 : d === 1 ? 15 : ((d * 7) % 15) + 0.5), // int4: scale 1, ties (roundf: away from zero)
  (d) => (d === 1 ? -0 : d % 5), // min: +0 first, then -0: the record keeps -0
  (d) => (d === 1 ? 0 : d === 0 ? -0 : (d % 5) + 1), // min: -0 first, then +0: still -0
  () => 0.375, () => 0, // constant rows
  (d) => (d % 2 ? 65504 : -65504), (d) => Math.sin(d) * 1e-3, (d) => Math.cos(d * 1.3) * 50 + 7,
];

async function check(b: Backend) {
  for (const D of [64, 128, 36]) {
    const N = KINDS.length, src = new Float32Array(N * D);
    for (let t = 0; t < N; t++) for (let d = 0; d < D; d++) src[t * D + d] = KINDS[t]!(d);
    for (const dtype of ["int8", "int4"] as const) {
      const hb = headBytes(dtype, D), h = b.alloc(0, N * hb);
      const op: AppendOp = { kind: "append", dst: h, dtype, rowHeads: 1, headDim: D, src, srcHeads: 1, heads: Int32Array.of(0), rows: Int32Array.from(KINDS, (_, t) => t) };
      await b.run(0, [op]);
      const want = new Uint8Array(N * hb);
      for (let t = 0; t < N; t++) quantizeRecord(dtype, src.subarray(t * D, (t + 1) * D), D, want, t * hb);
      const got = await b.read(0, h, 0, N * hb);
      const k = got.findIndex((x, i) => x !== want[i]);
      assert.equal(k, -1, `${b.name} ${dtype} D=${D}: byte ${k} (row ${Math.floor(k / hb)}, offset ${k % hb}) is ${got[k]}, src/quant.ts writes ${want[k]}`);
      b.free(0, h);
    }
  }
}

for (const name of ["reference", "wasm", "native"] as const) {
  const probe = await probeBackend(name);
  test(`${name}: append writes int8 / int4 records byte for byte as src/quant.ts (ties, signed-zero mins, constant rows, ±65504)`, { skip: probe.usable ? false : `skipped: ${name} backend not usable: ${probe.reason}` }, async () => {
    const b = await createBackend(name, { threads: name === "native" ? 2 : 0 });
    try {
      await check(b);
    } finally {
      await b.dispose();
    }
  });
}
