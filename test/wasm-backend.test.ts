// The wasm backend as a Backend: memory, errors and workers (the numbers themselves: wasm-conformance.test.ts).
//   - alloc zero-fills, also memory that was written and freed before; read returns the bytes an append wrote;
//   - CAPACITY (a DuoError, synchronously, naming the bytes needed and available) past a shard's 4 GiB minus reserve;
//   - a worker-side allocation failure (fragmentation) rejects the next run with CAPACITY, and the shard keeps working;
//   - kernels on buffers above 2 GiB (pointers ≥ 2^31) agree with the reference: |a − b| ≤ 1e-5 + 1e-4·|b|;
//   - bad ops are DuoErrors with codes (UNSUPPORTED, SHAPE_MISMATCH, INVALID_ARGUMENT, CAPACITY) and leave the
//     buffers untouched; use after dispose is DISPOSED; dispose waits for runs in flight;
//   - probe, a precompiled module (no file access), and the ceiling kernels (bench/wasm-kernels.ts) run in workers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ReferenceBackend } from "../src/backend/reference.ts";
import type { AttendOp, Backend, Op } from "../src/backend/types.ts";
import { createWasmBackend, loadWasmModule, probeWasm, type WasmBackend } from "../src/backend/wasm.ts";
import { DuoError, type DuoErrorCode } from "../src/errors.ts";
import { randomArray } from "./helpers/random.ts";

const probe = await probeWasm({});
const skip = probe.usable ? false : `skipped: wasm backend not usable here (${probe.reason})`;
const GiB = 2 ** 30;

function isDuo(code: DuoErrorCode, ...words: string[]) {
  return (e: unknown) => {
    assert.ok(e instanceof DuoError, `expected a DuoError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const w of words) assert.ok(e.message.includes(w), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(w)}`);
    return true;
  };
}

/** Append K/V of `n` rows × 2 heads × D into fresh buffers and attend one query row over them; then (unless
 *  `readBack` is false) read the first K bytes back and free the buffers. */
async function smallAttend(b: Backend, shard: number, dtype: "f32" | "bf16", readBack = true) {
  const D = 64, n = 50, G = 2;
  const bytes = n * 2 * D * (dtype === "f32" ? 4 : 2);
  const k = b.alloc(shard, bytes), v = b.alloc(shard, bytes);
  const rows = Int32Array.from({ length: n }, (_, i) => i);
  const common = { dtype, rowHeads: 2, headDim: D, srcHeads: 2, heads: Int32Array.of(0, 1), rows };
  const out = new Float32Array(2 * G * D).fill(NaN), lse = new Float32Array(2 * G).fill(NaN);
  const ops: Op[] = [
    { kind: "append", dst: k, src: randomArray(n * 2 * D, 1), ...common },
    { kind: "append", dst: v, src: randomArray(n * 2 * D, 2), ...common },
    { kind: "attend", q: randomArray(2 * G * D, 3, 3), T: 1, numHeads: 2 * G, headDim: D, group: G, qHeads: Int32Array.of(0, 1), kvSlots: Int32Array.of(0, 1), segments: [{ k, v, dtype, rowHeads: 2, rowStart: 0, rowCount: n, positions: 0 }], qPos0: n - 1, window: null, out, lse },
  ];
  await b.run(shard, ops);
  if (!readBack) return { out, lse, kBytes: new Uint8Array(0) };
  const kBytes = await b.read(shard, k, 0, 16);
  b.free(shard, k);
  b.free(shard, v);
  return { out, lse, kBytes };
}

function assertClose(got: Float32Array, want: Float32Array, what: string) {
  let max = 0;
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i]! - want[i]!);
    max = Math.max(max, e);
    assert.ok(e <= 1e-5 + 1e-4 * Math.abs(want[i]!), `${what}[${i}] = ${got[i]}, reference ${want[i]}: |err| ${e} > 1e-5 + 1e-4·|ref|`);
  }
  return max;
}

test("probe, shards and a precompiled module: threads 0 runs in this thread, wasmModule needs no files", { skip }, async () => {
  assert.deepEqual(probe, { name: "wasm", usable: true });
  const local = await createWasmBackend({ threads: 0 });
  assert.equal(local.shards, 1);
  assert.equal(local.workers, false);
  assert.equal(local.memory(0).capacity, 4 * GiB - 128 * 2 ** 20);
  await local.dispose();
  const module = await loadWasmModule();
  const fromModule = await createWasmBackend({ threads: 0, wasmModule: module });
  const ref = await smallAttend(new ReferenceBackend(), 0, "bf16"), got = await smallAttend(fromModule, 0, "bf16");
  assertClose(got.out, ref.out, "out");
  await fromModule.dispose();
  const notDuo = await WebAssembly.compile(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]));
  const p = await probeWasm({ wasmModule: notDuo });
  assert.equal(p.usable, false);
  assert.match(p.reason ?? "", /not duo\.wasm/);
  await assert.rejects(createWasmBackend({ threads: 0, wasmModule: notDuo }), isDuo("BACKEND_UNAVAILABLE", "not duo.wasm"));
  assert.throws(() => fromModule.alloc(0, 64), isDuo("DISPOSED"));
});

test("alloc is zero-filled (also reused memory), read returns what append wrote, memory() accounts blocks", { skip }, async () => {
  const b = await createWasmBackend({ threads: 0 });
  const before = b.memory(0).allocated;
  const h = b.alloc(0, 1000);
  assert.equal(b.memory(0).allocated - before, 1024 + 64, "1000 bytes round to 1024 plus a 64-byte header");
  const src = randomArray(250, 9);
  await b.run(0, [{ kind: "append", dst: h, dtype: "f32", rowHeads: 1, headDim: 250 - 2, src: src.subarray(0, 248), srcHeads: 1, heads: Int32Array.of(0), rows: Int32Array.of(0) }]);
  const back = new Float32Array((await b.read(0, h, 0, 248 * 4)).buffer);
  assert.deepEqual(back, src.subarray(0, 248));
  b.free(0, h);
  assert.equal(b.memory(0).allocated, before);
  const again = b.alloc(0, 1000);
  assert.ok((await b.read(0, again, 0, 1000)).every((x) => x === 0), "a re-allocated block must be zero-filled");
  await assert.rejects(b.read(0, again, 900, 200), isDuo("INVALID_ARGUMENT", "byteLength"));
  await b.dispose();
});

test("CAPACITY: a DuoError, thrown synchronously, with the bytes needed and available", { skip }, async () => {
  const b = await createWasmBackend({ threads: 1 });
  assert.throws(() => b.alloc(0, 5 * GiB), isDuo("CAPACITY", "5368709120", "available"));
  const big = b.alloc(0, 2.5 * GiB); // fresh memory: nothing is written, the OS commits pages lazily
  assert.throws(() => b.alloc(0, 1.5 * GiB), isDuo("CAPACITY", String(1.5 * GiB)));
  b.free(0, big);
  assert.equal(b.memory(0).allocated, 0);
  await b.dispose();
});

test("a worker that cannot place an allocation (fragmentation) rejects the next run with CAPACITY, then works on", { skip }, async () => {
  const b = await createWasmBackend({ threads: 1 });
  // two 1.25 GiB holes separated by small blocks, then 1.75 GiB: the accounting allows it, the worker's memory cannot
  const a = b.alloc(0, 1.25 * GiB), s1 = b.alloc(0, 4096), c = b.alloc(0, 1.25 * GiB), s2 = b.alloc(0, 4096);
  b.free(0, a);
  b.free(0, c);
  const tooBig = b.alloc(0, 1.75 * GiB);
  await assert.rejects(smallAttend(b, 0, "f32"), isDuo("CAPACITY", "could not allocate"));
  b.free(0, tooBig);
  const ref = await smallAttend(new ReferenceBackend(), 0, "f32"), got = await smallAttend(b, 0, "f32");
  assertClose(got.out, ref.out, "out after the failure");
  b.free(0, s1);
  b.free(0, s2);
  await b.dispose();
});

test("kernels on buffers above 2 GiB (pointers ≥ 2^31) in a worker agree with the reference", { skip }, async () => {
  const b = await createWasmBackend({ threads: 1 });
  const filler = b.alloc(0, 2.125 * GiB); // never written: no memory is touched
  const ref = new ReferenceBackend();
  for (const dtype of ["f32", "bf16"] as const) {
    const want = await smallAttend(ref, 0, dtype), got = await smallAttend(b, 0, dtype);
    assertClose(got.out, want.out, `${dtype} out`);
    assertClose(got.lse, want.lse, `${dtype} lse`);
    assert.deepEqual(got.kBytes, want.kBytes, `${dtype}: read() above 2 GiB returns the appended bytes`);
  }
  b.free(0, filler);
  await b.dispose();
});

test("bad ops are DuoErrors with codes and leave the buffers untouched", { skip }, async () => {
  const b = await createWasmBackend({ threads: 0 });
  const D = 8, k = b.alloc(0, 4 * 2 * D * 4), v = b.alloc(0, 4 * 2 * D * 4);
  const good: AttendOp = {
    kind: "attend", q: randomArray(2 * D, 1), T: 1, numHeads: 2, headDim: D, group: 1, qHeads: Int32Array.of(0), kvSlots: Int32Array.of(1),
    segments: [{ k, v, dtype: "f32", rowHeads: 2, rowStart: 0, rowCount: 4, positions: 0 }], qPos0: 3, window: null, out: new Float32Array(2 * D),
  };
  const append = (o: object): Op => ({ kind: "append", dst: k, dtype: "f32", rowHeads: 2, headDim: D, src: randomArray(2 * D, 2), srcHeads: 2, heads: Int32Array.of(0, 1), rows: Int32Array.of(0), ...o });
  await b.run(0, [append({}), good]);
  const snapshot = await b.read(0, k, 0, 4 * 2 * D * 4);
  const cases: [string, Op, DuoErrorCode, string][] = [
    ["head dim not a multiple of 4", { ...good, headDim: 6, q: new Float32Array(12), out: new Float32Array(12) }, "UNSUPPORTED", "multiples of 4"],
    ["wrong q length", { ...good, q: new Float32Array(3) }, "SHAPE_MISMATCH", "q has 3 floats"],
    ["wrong lse length", { ...good, lse: new Float32Array(5) }, "SHAPE_MISMATCH", "lse has 5"],
    ["segment past its buffer", { ...good, segments: [{ ...good.segments[0]!, rowStart: 2, rowCount: 3 }] }, "SHAPE_MISMATCH", "need"],
    ["kv slot outside the rows", { ...good, kvSlots: Int32Array.of(2) }, "INVALID_ARGUMENT", "kvSlots"],
    ["query head outside numHeads", { ...good, qHeads: Int32Array.of(2) }, "INVALID_ARGUMENT", "qHeads"],
    ["positions of the wrong length", { ...good, segments: [{ ...good.segments[0]!, positions: new Int32Array(3) }] }, "SHAPE_MISMATCH", "positions"],
    ["unknown dtype", append({ dtype: "f8" }), "UNSUPPORTED", "dtype must be one of"],
    ["append past the buffer", append({ rows: Int32Array.of(4) }), "CAPACITY", "row 4 is past the buffer's 4 rows"],
    ["append source head out of range", append({ heads: Int32Array.of(0, 2) }), "INVALID_ARGUMENT", "heads entry 2"],
    ["unknown handle", append({ dst: 999 }), "INVALID_ARGUMENT", "unknown buffer handle 999"],
  ];
  for (const [what, op, code, words] of cases) {
    // the bad op comes after a valid append that would change the buffer: nothing may run
    await assert.rejects(b.run(0, [append({ src: new Float32Array(2 * D).fill(7) }), op]), isDuo(code, words), what);
  }
  assert.deepEqual(await b.read(0, k, 0, 4 * 2 * D * 4), snapshot, "a rejected run must not change any buffer");
  await assert.rejects(b.run(1, [good]), isDuo("INVALID_ARGUMENT", "shard"));
  assert.throws(() => b.alloc(0, -1), isDuo("INVALID_ARGUMENT", "alloc bytes"));
  await b.dispose();
  await assert.rejects(b.run(0, [good]), isDuo("DISPOSED"));
});

test("workers: buffers live on their shard, dispose waits for runs in flight, ceilings measure", { skip }, async () => {
  const b: WasmBackend = await createWasmBackend({ threads: 2 });
  const h = b.alloc(1, 256);
  await assert.rejects(b.read(0, h, 0, 16), isDuo("INVALID_ARGUMENT", "lives on shard 1"));
  b.free(1, h);
  const inflight = smallAttend(b, 0, "bf16");
  const ref = await smallAttend(new ReferenceBackend(), 0, "bf16");
  const [readMs, madMs] = await Promise.all([b.measure(0, "read", 2 ** 20, 3), b.measure(1, "mad", 10_000, 3)]);
  assert.ok(readMs >= 0 && madMs >= 0 && Number.isFinite(readMs + madMs), `ceiling kernels took ${readMs} ms and ${madMs} ms`);
  const r0 = await inflight;
  const pending = smallAttend(b, 1, "bf16", false);
  const disposed = b.dispose();
  const r1 = await pending;
  await disposed;
  assertClose(r0.out, ref.out, "shard 0 out");
  assertClose(r1.out, ref.out, "shard 1 out (run posted just before dispose)");
  assert.throws(() => b.alloc(0, 64), isDuo("DISPOSED"));
});
