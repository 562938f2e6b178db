// The CUDA backend's memory and error behaviour (needs a device; skipped elsewhere).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createCudaBackend, probeCuda } from "../src/backend/cuda.ts";
import { ReferenceBackend } from "../src/backend/reference.ts";
import { DuoError } from "../src/errors.ts";
import type { AppendOp } from "../src/backend/types.ts";

const noDevice = !(await probeCuda({})).usable;
const skip = noDevice ? "skipped: no CUDA device" : false;

function rejectsWith(code: string, pattern: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof DuoError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, pattern);
    return true;
  };
}

test("cuda: buffers are zero-filled, counted by memory(), readable in range, freed once", { skip }, async () => {
  const b = await createCudaBackend({});
  try {
    const before = b.memory(0).allocated;
    const h = b.alloc(0, 1000);
    assert.equal(b.memory(0).allocated, before + 1000);
    assert.ok(b.memory(0).capacity > b.memory(0).allocated);
    assert.deepEqual(await b.read(0, h, 0, 1000), new Uint8Array(1000));
    await assert.rejects(b.read(0, h, 900, 101), rejectsWith("CAPACITY", /past the end of buffer/));
    b.free(0, h);
    b.free(0, h); // a second free is a no-op, as in the reference backend
    assert.equal(b.memory(0).allocated, before);
    assert.throws(() => b.alloc(1, 8), rejectsWith("INVALID_ARGUMENT", /shard must be 0/));
    assert.throws(() => b.alloc(0, 2 ** 49), rejectsWith("CAPACITY", /do not fit on device/));
  } finally {
    await b.dispose();
  }
  assert.throws(() => b.alloc(0, 8), rejectsWith("DISPOSED", /after dispose/));
});

test("cuda: append rounds like the reference, the later of two tokens for one row wins, rows past the end change nothing", { skip }, async () => {
  const [cuda, ref] = [await createCudaBackend({}), new ReferenceBackend()];
  try {
    const D = 8, src = Float32Array.from({ length: 4 * 2 * D }, (_, i) => Math.sin(i) * 1000 + 1 / 3);
    for (const dtype of ["f32", "f16", "bf16"] as const) {
      const bytes = 3 * D * (dtype === "f32" ? 4 : 2);
      const [hc, hr] = [cuda.alloc(0, bytes), ref.alloc(0, bytes)];
      const op = (dst: number, rows: number[]): AppendOp => ({
        kind: "append", dst, dtype, rowHeads: 1, headDim: D, src, srcHeads: 2, heads: new Int32Array([1]), rows: new Int32Array(rows),
      });
      await cuda.run(0, [op(hc, [2, -1, 0, 2])]);
      await ref.run(0, [op(hr, [2, -1, 0, 2])]);
      assert.deepEqual(await cuda.read(0, hc, 0, bytes), await ref.read(0, hr, 0, bytes), dtype);
      const before = await cuda.read(0, hc, 0, bytes);
      await assert.rejects(cuda.run(0, [op(hc, [1, 3, -1, -1])]), rejectsWith("CAPACITY", /ops\[0\] \(append\): row 3 is past the buffer's 3 rows/));
      assert.deepEqual(await cuda.read(0, hc, 0, bytes), before, "a rejected append wrote nothing");
    }
  } finally {
    await cuda.dispose();
    await ref.dispose();
  }
});

test("cuda: handles of another backend, bad shapes and head dims are rejected with DuoError", { skip }, async () => {
  const [a, b] = [await createCudaBackend({}), await createCudaBackend({})];
  try {
    const h = a.alloc(0, 64 * 4);
    await assert.rejects(b.read(0, h, 0, 4), rejectsWith("INVALID_ARGUMENT", /not allocated by this backend/));
    const attend = (headDim: number, q: Float32Array) => a.run(0, [{
      kind: "attend", q, T: 1, numHeads: 1, headDim, group: 1, qHeads: new Int32Array([0]), kvSlots: new Int32Array([0]),
      segments: [{ k: h, v: h, dtype: "f32", rowHeads: 1, rowStart: 0, rowCount: 1, positions: 0 }], qPos0: 0, window: null,
      out: new Float32Array(headDim),
    }]);
    await assert.rejects(attend(96, new Float32Array(96)), rejectsWith("UNSUPPORTED", /the kernels take head dims 64 or 128, got 96/));
    await assert.rejects(attend(64, new Float32Array(10)), rejectsWith("SHAPE_MISMATCH", /q has 10 floats, expected T × numHeads × headDim = 1 × 1 × 64 = 64/));
  } finally {
    await a.dispose();
    await b.dispose();
  }
});
