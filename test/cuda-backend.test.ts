// The CUDA backend's memory and error behaviour, on a GPU or on the host emulation build (helpers/cuda-target.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { CudaBackend, type CudaBackendOptions, createCudaBackend } from "../src/backend/cuda.ts";
import * as symbols from "../ffi/symbols.ts";
import { type DuoLibrary, STATUS } from "../ffi/symbols.ts";
import { cudaTarget } from "./helpers/cuda-target.ts";
import { ReferenceBackend } from "../src/backend/reference.ts";
import { DuoError } from "../src/errors.ts";
import type { AppendOp } from "../src/backend/types.ts";
import { bf16BitsToF32, f16BitsToF32, headBytes } from "../src/dtype.ts";
import { quantizeRecord } from "../src/quant.ts";

const { library, label, skip } = cudaTarget;
/** The backend on the library the tests run on (see helpers/cuda-target.ts). */
const cudaBackend = (opts: CudaBackendOptions = {}) => createCudaBackend({ cudaLibrary: library, ...opts });

function rejectsWith(code: string, pattern: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof DuoError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, pattern);
    return true;
  };
}

test(`cuda (${label}): buffers are zero-filled, counted by memory(), readable in range, freed once`, { skip }, async () => {
  const b = await cudaBackend();
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

test(`cuda (${label}): append rounds like the reference, the later of two tokens for one row wins, rows past the end change nothing`, { skip }, async () => {
  const [cuda, ref] = [await cudaBackend(), new ReferenceBackend()];
  try {
    const D = 64, src = Float32Array.from({ length: 4 * 2 * D }, (_, i) => Math.sin(i) * 1000 + 1 / 3);
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

test(`cuda (${label}): append stores NaN as NaN (sign and payload unspecified), Inf and f16 overflow as src/dtype.ts does`, { skip }, async () => {
  const [cuda, ref] = [await cudaBackend(), new ReferenceBackend()];
  try {
    // quiet, negative, signalling and payload NaNs; +-Inf; the largest f16 below the rounding edge, and past it
    const bits = [0x7fc00000, 0xffc00000, 0x7f800001, 0xff812345, 0x7fbfffff, 0x7f800000, 0xff800000, 0x477fe000, 0x47800000, 0xc7800000];
    const D = 64, src = new Float32Array(D); // the CUDA kernels take head dims 64 and 128
    new Uint32Array(src.buffer).set(bits);
    for (const dtype of ["f32", "f16", "bf16"] as const) {
      const bytes = D * (dtype === "f32" ? 4 : 2);
      const [hc, hr] = [cuda.alloc(0, bytes), ref.alloc(0, bytes)];
      const op = (dst: number): AppendOp => ({ kind: "append", dst, dtype, rowHeads: 1, headDim: D, src, srcHeads: 1, heads: new Int32Array([0]), rows: new Int32Array([0]) });
      await cuda.run(0, [op(hc)]);
      await ref.run(0, [op(hr)]);
      const [got, want] = [await cuda.read(0, hc, 0, bytes), await ref.read(0, hr, 0, bytes)];
      // as stored values: every NaN is a NaN (the GPU writes the canonical 0x7FFF; a JavaScript engine may
      // canonicalise too), every other value is bit-identical
      const decode = (b: Uint8Array) => dtype === "f32" ? [...new Float32Array(b.buffer)]
        : [...new Uint16Array(b.buffer)].map((h) => (dtype === "f16" ? f16BitsToF32(h) : bf16BitsToF32(h)));
      const [g, w] = [decode(got), decode(want)];
      g.forEach((x, i) => assert.ok(Number.isNaN(w[i]!) ? Number.isNaN(x) : Object.is(x, w[i]), `${dtype} element ${i}: ${x}, reference ${w[i]}`));
    }
  } finally {
    await cuda.dispose();
    await ref.dispose();
  }
});

test(`cuda (${label}): append writes int8 / int4 records byte for byte as src/quant.ts (ties, a signed-zero min, constant rows, +-65504), refuses rows past the end`, { skip }, async () => {
  const cuda = await cudaBackend();
  try {
    for (const D of [64, 128]) {
      // row kinds, one per source token (2 heads each, the second head is the first times -3 plus 1)
      const kinds: ((d: number) => number)[] = [
        (d) => (d === 0 ? 127 : (d % 8) - 3.5), // int8: scale 1, codes at .5 ties (RNE: -4, -2, 0, 2)
        (d) => (d === 0 ? 0 : d === 1 ? 15 : ((d * 7) % 15) + 0.5), // int4: scale 1 (+1e-8 vanishes), ties (roundf: up)
        (d) => (d === 1 ? -0 : d % 5), // min is a zero of both signs (+0 first): the record keeps -0
        () => 0.375, () => 0, // constant rows: int4 scale 1e-8, int8 scale 0
        (d) => (d % 2 ? 65504 : -65504), (d) => Math.sin(d) * 1e-3, (d) => Math.cos(d * 1.3) * 50 + 7,
      ];
      const N = kinds.length, src = new Float32Array(N * 2 * D);
      for (let t = 0; t < N; t++) for (let d = 0; d < D; d++) {
        const x = kinds[t]!(d);
        src[(t * 2) * D + d] = x;
        src[(t * 2 + 1) * D + d] = d === 1 && t === 2 ? -0 : x * -3 + 1;
      }
      for (const dtype of ["int8", "int4"] as const) {
        const hb = headBytes(dtype, D), rows = N + 1, bytes = rows * 2 * hb;
        const h = cuda.alloc(0, bytes);
        // token t -> row N - t (row 0 is never written); the heads swap places in the row
        const op = (r: number[]): AppendOp => ({ kind: "append", dst: h, dtype, rowHeads: 2, headDim: D, src, srcHeads: 2, heads: Int32Array.of(1, 0), rows: Int32Array.from(r) });
        await cuda.run(0, [op(kinds.map((_, t) => N - t))]);
        const want = new Uint8Array(bytes);
        for (let t = 0; t < N; t++) for (let j = 0; j < 2; j++) {
          const head = 1 - j;
          quantizeRecord(dtype, src.subarray((t * 2 + head) * D, (t * 2 + head + 1) * D), D, want, ((N - t) * 2 + j) * hb);
        }
        const got = await cuda.read(0, h, 0, bytes);
        const k = got.findIndex((b, i) => b !== want[i]);
        assert.equal(k, -1, `${dtype} D=${D}: byte ${k} (row ${Math.floor(k / (2 * hb))}, head ${Math.floor(k / hb) % 2}, offset ${k % hb}) is ${got[k]}, src/quant.ts writes ${want[k]}`);
        await assert.rejects(cuda.run(0, [op([rows, 0, -1, -1, -1, -1, -1, -1])]), rejectsWith("CAPACITY", new RegExp(`row ${rows} is past the buffer's ${rows} rows`)));
        assert.deepEqual(await cuda.read(0, h, 0, bytes), got, "a rejected append wrote nothing");
        cuda.free(0, h);
      }
    }
  } finally {
    await cuda.dispose();
  }
});

test(`cuda (${label}): handles of another backend, bad shapes and head dims are rejected with DuoError`, { skip }, async () => {
  const [a, b] = [await cudaBackend(), await cudaBackend()];
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

/** A stand-in for libduo_cuda.so whose duo_free fails with `freeStatus` (no library or device needed). */
function failingFreeLibrary(freeStatus: () => number): { lib: DuoLibrary; freed: number[] } {
  let next = 1;
  const freed: number[] = [];
  const lib = {
    duo_alloc: (_bytes: number, out: Uint32Array) => ((out[0] = next++), STATUS.OK),
    duo_free: (h: number) => {
      const s = freeStatus();
      if (s === STATUS.OK) freed.push(h);
      return s;
    },
    duo_last_error: () => "duo_free: cudaFreeAsync: cudaErrorLaunchFailure: emulator fault (719)",
  } as unknown as DuoLibrary;
  return { lib, freed };
}

test("cuda backend: a failed duo_free keeps the handle (a retry frees it) and dispose() reports the buffers it could not free", async () => {
  let status: number = STATUS.ERR_CUDA;
  const { lib, freed } = failingFreeLibrary(() => status);
  const b = new CudaBackend(lib, symbols, 0);
  const [h1, h2] = [b.alloc(0, 16), b.alloc(0, 16)];
  assert.throws(() => b.free(0, h1), rejectsWith("BACKEND_UNAVAILABLE", /cudaErrorLaunchFailure/));
  status = STATUS.OK;
  b.free(0, h1); // still owned after the failure: this call reaches the library again
  assert.deepEqual(freed, [h1]);
  status = STATUS.ERR_CUDA;
  await assert.rejects(b.dispose(), rejectsWith("BACKEND_UNAVAILABLE", new RegExp(`dispose\\(\\) could not free 1 buffer\\(s\\): buffer ${h2}: .*cudaErrorLaunchFailure`)));
  await b.dispose(); // once disposed, a second dispose() is a no-op
});
