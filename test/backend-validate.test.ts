// Validation shared by every backend (src/backend/validate.ts) and each backend's declaration of what it runs:
//   - the same bad op gets the same DuoError (code and words) from the reference, null and wasm backends, and a run
//     with a bad op changes no buffer; arrays must have exact lengths (a longer q is refused too);
//   - DuoAttention.create refuses an engine the backend cannot run (head dim 66 on wasm, 96 on cuda), by the
//     backend's own declaration, before anything is allocated;
//   - backend "auto" never lands on the reference backend silently: it warns once with each reason, or refuses
//     with strict: true.
import { test } from "node:test";
import assert from "node:assert/strict";
import { CUDA_CAPABILITIES } from "../src/backend/cuda.ts";
import { NullBackend } from "../src/backend/null.ts";
import { createNativeBackend } from "../src/backend/native.ts";
import { createBackend, probeBackend } from "../src/backend/registry.ts";
import { ReferenceBackend } from "../src/backend/reference.ts";
import type { AttendOp, Backend, Op } from "../src/backend/types.ts";
import { unsupported } from "../src/backend/validate.ts";
import { createWasmBackend, probeWasm, WASM_CAPABILITIES } from "../src/backend/wasm.ts";
import { DuoAttention } from "../src/engine/duo.ts";
import type { DuoErrorCode } from "../src/errors.ts";
import { isDuo } from "./helpers/errors.ts";
import { randomArray } from "./helpers/random.ts";

const wasmUsable = (await probeWasm({})).usable;
const nativeUsable = (await probeBackend("native")).usable;

/** The backends that run here without a device; each checks ops with validate.ts. */
async function backends(): Promise<Backend[]> {
  return [new ReferenceBackend(), new NullBackend(), ...(wasmUsable ? [await createWasmBackend({ threads: 0 })] : []),
    ...(nativeUsable ? [await createNativeBackend({ threads: 2 })] : [])];
}

test("every backend refuses the same bad ops with the same DuoError, and a refused run changes no buffer", async () => {
  const D = 8;
  for (const b of await backends()) {
    const k = b.alloc(0, 4 * 2 * D * 4), v = b.alloc(0, 4 * 2 * D * 4);
    const good: AttendOp = {
      kind: "attend", q: randomArray(2 * D, 1), T: 1, numHeads: 2, headDim: D, group: 1, qHeads: Int32Array.of(0), kvSlots: Int32Array.of(1),
      segments: [{ k, v, dtype: "f32", rowHeads: 2, rowStart: 0, rowCount: 4, positions: 0 }], qPos0: 3, window: null, out: new Float32Array(2 * D),
    };
    const append = (o: object): Op => ({ kind: "append", dst: k, dtype: "f32", rowHeads: 2, headDim: D, src: randomArray(2 * D, 2), srcHeads: 2, heads: Int32Array.of(0, 1), rows: Int32Array.of(0), ...o });
    await b.run(0, [append({}), good]);
    const snapshot = await b.read(0, k, 0, 4 * 2 * D * 4);
    const cases: [string, Op, DuoErrorCode, RegExp][] = [
      ["q one row short", { ...good, q: new Float32Array(D) }, "SHAPE_MISMATCH", /^ops\[1\] \(attend\): q has 8 floats, expected T × numHeads × headDim = 1 × 2 × 8 = 16$/],
      ["q longer than T rows", { ...good, q: new Float32Array(3 * D) }, "SHAPE_MISMATCH", /q has 24 floats, expected .* = 16/],
      ["out longer than T rows", { ...good, out: new Float32Array(3 * D) }, "SHAPE_MISMATCH", /out has 24 floats/],
      ["append src longer than its rows", append({ src: new Float32Array(3 * D) }), "SHAPE_MISMATCH", /src has 24 floats, expected rows.length × srcHeads × headDim = 1 × 2 × 8 = 16/],
      ["positions longer than the segment", { ...good, segments: [{ ...good.segments[0]!, positions: new Int32Array(5) }] }, "SHAPE_MISMATCH", /segment 0: positions must be a number or an Int32Array of rowCount = 4/],
      ["segment past its buffer", { ...good, segments: [{ ...good.segments[0]!, rowStart: 2, rowCount: 3 }] }, "SHAPE_MISMATCH", /segment 0: rows 2\.\.4 .* need 320 bytes of k buffer/],
      ["kv slot outside the rows", { ...good, kvSlots: Int32Array.of(2) }, "INVALID_ARGUMENT", /kvSlots entry 2 is outside the segment's 2 row heads/],
      ["query head outside numHeads", { ...good, qHeads: Int32Array.of(2) }, "INVALID_ARGUMENT", /qHeads entry 2 selects query heads 2\.\.2, outside the 2 query heads/],
      ["unknown dtype", append({ dtype: "f8" }), "UNSUPPORTED", /dtype must be one of "f32", "f16", "bf16", "int8", "int4", got "f8"/],
      ["int4 append into a tiled half", append({ dtype: "int4", layout: "K64" }), "INVALID_ARGUMENT", /layout must be one of "NHD", got "K64"/],
      ["int8 segment declared tiled", { ...good, segments: [{ ...good.segments[0]!, dtype: "int8", layout: "T64", v: k }] }, "INVALID_ARGUMENT", /segment 0 layout must be one of "NHD", got "T64"/],
      ["append past the buffer", append({ rows: Int32Array.of(4) }), "CAPACITY", /row 4 is past the buffer's 4 rows/],
      ["append source head out of range", append({ heads: Int32Array.of(0, 2) }), "INVALID_ARGUMENT", /heads entry 2 is outside the 2 source heads/],
      ["unknown handle", append({ dst: 999 }), "INVALID_ARGUMENT", /unknown buffer handle 999/],
      ["unknown kind", { kind: "matmul" } as unknown as Op, "INVALID_ARGUMENT", /ops\[1\]\.kind must be "append" or "attend", got "matmul"/],
    ];
    for (const [what, op, code, message] of cases) {
      // the bad op comes after a valid append that would change the buffer: nothing may run
      await assert.rejects(b.run(0, [append({ src: new Float32Array(2 * D).fill(7) }), op]), isDuo(code, message), `${b.name}: ${what}`);
    }
    assert.deepEqual(await b.read(0, k, 0, 4 * 2 * D * 4), snapshot, `${b.name}: a refused run changed a buffer`);
    await b.dispose();
  }
});

test("each backend declares its head dims once: the declaration refuses an engine, in words", () => {
  assert.equal(unsupported("wasm", WASM_CAPABILITIES, { dtype: "bf16", headDim: 128 }), null);
  assert.equal(unsupported("wasm", WASM_CAPABILITIES, { dtype: "bf16", headDim: 66 }),
    "the wasm backend cannot run this engine: its kernels take head dims that are multiples of 4, not 66 (shape.headDim)");
  assert.equal(unsupported("cuda", CUDA_CAPABILITIES, { dtype: "f16", headDim: 64 }), null);
  assert.equal(unsupported("cuda", CUDA_CAPABILITIES, { dtype: "f16", headDim: 96 }),
    "the cuda backend cannot run this engine: its kernels take head dims 64 or 128, not 96 (shape.headDim)");
  assert.equal(unsupported("reference", new ReferenceBackend().capabilities, { dtype: "f32", headDim: 66 }), null);
  assert.equal(unsupported("wasm", WASM_CAPABILITIES, { dtype: "int4", headDim: 128 }), null);
  assert.equal(unsupported("cuda", CUDA_CAPABILITIES, { dtype: "int4", headDim: 128 }), null);
  assert.equal(unsupported("cuda", CUDA_CAPABILITIES, { dtype: "int8", headDim: 64 }), null);
  assert.equal(unsupported("cuda", CUDA_CAPABILITIES, { dtype: "int4", headDim: 96 }),
    "the cuda backend cannot run this engine: its kernels take head dims 64 or 128, not 96 (shape.headDim)");
});

test("DuoAttention.create refuses a head dim the backend does not run, before the first attend", { skip: !wasmUsable && "skipped: wasm backend not usable here" }, async () => {
  const shape = { numLayers: 1, numHeads: 2, numKvHeads: 1, headDim: 66 };
  await assert.rejects(DuoAttention.create({ shape, heads: [[true]], backend: "wasm", threads: 0 }),
    isDuo("UNSUPPORTED", /^the wasm backend cannot run this engine: its kernels take head dims that are multiples of 4, not 66 \(shape\.headDim\)$/));
  // A Backend instance is held to its own declaration too (here a reference backend that says it runs 64 and 128).
  const picky: Backend = Object.assign(new ReferenceBackend(), { capabilities: CUDA_CAPABILITIES });
  await assert.rejects(DuoAttention.create({ shape, heads: [[true]], backend: picky }), isDuo("UNSUPPORTED", /head dims 64 or 128, not 66/));
  const ref = await DuoAttention.create({ shape, heads: [[true]], backend: "reference" });
  const out = await ref.sequence().attend(0, randomArray(2 * 66, 3), randomArray(66, 4), randomArray(66, 5));
  assert.equal(out.length, 2 * 66, "the reference backend runs any head dim");
  await ref.dispose();
});

test('backend "auto" says once why it falls back to the reference backend, and refuses with strict: true', async () => {
  // Nothing faster can run head dim 66 here: cuda's library is not at this path, wasm takes multiples of 4.
  const shape = { numLayers: 1, numHeads: 2, numKvHeads: 1, headDim: 66 };
  const options = { shape, heads: [[true]], backend: "auto" as const, cudaLibrary: "/nonexistent/libduo_cuda.so", threads: 0 };
  await assert.rejects(DuoAttention.create({ ...options, strict: true }), isDuo("BACKEND_UNAVAILABLE",
    /^backend "auto" found no backend faster than the reference one, and strict is set: cuda: library not found at \/nonexistent\/libduo_cuda\.so.*; wasm: /));
  const warnings: string[] = [];
  const warn = console.warn;
  console.warn = (...a: unknown[]) => void warnings.push(a.join(" "));
  try {
    const first = await DuoAttention.create(options);
    const second = await DuoAttention.create(options);
    assert.deepEqual([first.backendName, second.backendName], ["reference", "reference"]);
    assert.equal(warnings.length, 1, `one warning for the same reasons, got ${JSON.stringify(warnings)}`);
    assert.match(warnings[0]!, /^duo-attention: backend "auto" is using the reference backend \(plain TypeScript, an order of magnitude slower\) because cuda: library not found .*; wasm: .*Pass strict: true to refuse instead, or name a backend\.$/);
    if (wasmUsable) assert.match(warnings[0]!, /wasm: the wasm backend cannot run this engine: its kernels take head dims that are multiples of 4, not 66/);
    await Promise.all([first.dispose(), second.dispose()]);
    // A usable faster backend is taken without a word.
    if (wasmUsable) {
      const fine = await createBackend("auto", { cudaLibrary: "/nonexistent/libduo_cuda.so", threads: 0 }, { dtype: "bf16", headDim: 64 });
      assert.equal(fine.name, nativeUsable ? "native" : "wasm"); // auto order: cuda, native, wasm
      await fine.dispose();
      assert.equal(warnings.length, 1);
    }
  } finally {
    console.warn = warn;
  }
});
