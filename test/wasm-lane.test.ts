// The shared lane of the wasm workers (src/backend/wasm-lane.ts):
//   - a request written into the lane decodes to the same ops (every field, every array), results and errors come
//     back as written, and a request too large for the lane is refused (it then travels as a message);
//   - a backend with lanes and one without give the reference's numbers (|a − b| ≤ 1e-5 + 1e-4·|b|) for runs that
//     overlap on one shard, interleaved with allocations and frees, and for a run too large for the lane; the lane
//     is actually used (and not used when sharedLane is false);
//   - a worker-side allocation failure reaches the caller through the lane as CAPACITY, and the shard works on;
//   - sharedLane is a boolean or a clear INVALID_ARGUMENT.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ReferenceBackend } from "../src/backend/reference.ts";
import type { AppendOp, AttendOp, Backend } from "../src/backend/types.ts";
import { createWasmBackend, probeWasm } from "../src/backend/wasm.ts";
import type { ExecAttend, ExecOp } from "../src/backend/wasm-exec.ts";
import { Lane, laneUsable, REQ_BYTES } from "../src/backend/wasm-lane.ts";
import { runtime } from "../src/runtime.ts";
import { isDuo } from "./helpers/errors.ts";
import { randomArray } from "./helpers/random.ts";

const probe = await probeWasm({});
const skipLane = !laneUsable() ? "skipped: this runtime has no SharedArrayBuffer with Atomics.waitAsync" : false;
const skipWorkers = skipLane || (!probe.usable ? `skipped: wasm backend not usable here (${probe.reason})` : false)
  || (!runtime().workers ? "skipped: no workers in this runtime" : false);

/** Plain data for deepEqual: typed arrays become number arrays. */
function plain(x: unknown): unknown {
  if (ArrayBuffer.isView(x)) return Array.from(x as unknown as ArrayLike<number>);
  if (Array.isArray(x)) return x.map(plain);
  if (x && typeof x === "object") return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, plain(v)]));
  return x;
}

function sampleOps(): ExecOp[] {
  const append: AppendOp = { kind: "append", dst: 7, dtype: "bf16", rowHeads: 2, headDim: 8, src: randomArray(3 * 3 * 8, 1),
    srcHeads: 3, heads: Int32Array.of(2, 0), rows: Int32Array.of(5, -1, 130), layout: "K64" };
  const windowed: ExecAttend = { kind: "attend", q: randomArray(2 * 4 * 8, 2), T: 2, numHeads: 4, headDim: 8, group: 2,
    qHeads: Int32Array.of(1), kvSlots: Int32Array.of(3), qPos0: 900, window: { sink: 4, recent: 16 }, lse: true,
    segments: [
      { k: 1, v: 2, dtype: "f16", rowHeads: 4, rowStart: 0, rowCount: 64, positions: 0, layout: "T64" },
      { k: 3, v: 4, dtype: "f32", rowHeads: 4, rowStart: 2, rowCount: 3, positions: Int32Array.of(899, 897, 898), layout: "NHD" },
    ] };
  const plainAttend: ExecAttend = { kind: "attend", q: randomArray(4 * 8, 3), T: 1, numHeads: 4, headDim: 8, group: 4,
    qHeads: Int32Array.of(0), kvSlots: Int32Array.of(0), qPos0: 0, window: null, lse: false,
    segments: [{ k: 5, v: 6, dtype: "bf16", rowHeads: 1, rowStart: 0, rowCount: 1, positions: -3, layout: "NHD" }] };
  return [append, windowed, { ...append, dst: 8, layout: "NHD", dtype: "f32" }, plainAttend];
}

test("a request written into the lane decodes to the same ops", { skip: skipLane }, () => {
  const lane = Lane.create(), ops = sampleOps();
  assert.equal(lane.encode(ops), true);
  assert.deepEqual(plain(lane.decode()), plain(ops));
  assert.equal(lane.encode([]), true);
  assert.deepEqual(lane.decode(), []);
});

test("results and errors come back through the lane as written; an oversized request is refused", { skip: skipLane }, () => {
  const lane = Lane.create(), ops = sampleOps();
  assert.equal(lane.encode(ops), true);
  const results = [null, { out: randomArray(2 * 2 * 8, 4), lse: randomArray(2 * 2, 5) }, null, { out: randomArray(4 * 8, 6), lse: null }];
  lane.reply(results);
  assert.deepEqual(plain(lane.results(ops)), plain(results));
  lane.fail("CAPACITY", "no room for 5 bytes — ünïcode ✓");
  const e = lane.error();
  assert.equal(e.code, "CAPACITY");
  assert.equal(e.message, "no room for 5 bytes — ünïcode ✓");
  const big = { ...(ops[3] as ExecAttend), q: new Float32Array(REQ_BYTES / 4), T: REQ_BYTES / 4 / 32 };
  assert.equal(lane.encode([big]), false, "a request larger than the lane must be refused");
});

/** Buffers of n rows × 2 heads × D on `shard`, filled by one run; the ops of an attend over them. */
async function fill(b: Backend, shard: number, n: number, seed: number) {
  const D = 64, bytes = n * 2 * D * 2;
  const k = b.alloc(shard, bytes), v = b.alloc(shard, bytes);
  const common = { dtype: "bf16" as const, rowHeads: 2, headDim: D, srcHeads: 2, heads: Int32Array.of(0, 1), rows: Int32Array.from({ length: n }, (_, i) => i) };
  await b.run(shard, [
    { kind: "append", dst: k, src: randomArray(n * 2 * D, seed), ...common },
    { kind: "append", dst: v, src: randomArray(n * 2 * D, seed + 1), ...common },
  ]);
  const attend = (T: number): AttendOp => ({
    kind: "attend", q: randomArray(T * 4 * D, seed + 2, 2), T, numHeads: 4, headDim: D, group: 2, qHeads: Int32Array.of(0, 1),
    kvSlots: Int32Array.of(0, 1), segments: [{ k, v, dtype: "bf16", rowHeads: 2, rowStart: 0, rowCount: n, positions: 0 }],
    qPos0: n - T, window: null, out: new Float32Array(T * 4 * D), lse: new Float32Array(T * 4),
  });
  return { k, v, attend };
}

/** Overlapping runs on one shard with allocations between them, and one run too large for the lane. */
async function workload(b: Backend): Promise<Float32Array[]> {
  const a = await fill(b, 0, 100, 10);
  const first = a.attend(1), second = a.attend(3);
  const both = Promise.all([b.run(0, [first]), b.run(0, [second])]); // the second one usually meets a busy lane
  const c = await fill(b, 0, 70, 20); // allocated and written while the two runs may still be in flight
  const third = c.attend(2);
  await Promise.all([both, b.run(0, [third])]);
  b.free(0, a.k);
  b.free(0, a.v);
  const huge = (await fill(b, 0, 1100, 40)).attend(1100); // 1.1 MB of queries: more than the lane holds
  await b.run(0, [huge]);
  return [first.out, first.lse!, second.out, third.out, third.lse!, huge.out];
}

function assertClose(got: Float32Array, want: Float32Array, what: string): void {
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i]! - want[i]!);
    assert.ok(e <= 1e-5 + 1e-4 * Math.abs(want[i]!), `${what}[${i}] = ${got[i]}, reference ${want[i]}: |err| ${e}`);
  }
}

test("runs through the lane and as messages agree with the reference, in order with allocations", { skip: skipWorkers }, async () => {
  const want = await workload(new ReferenceBackend());
  for (const sharedLane of [true, false]) {
    const b = await createWasmBackend({ threads: 2, sharedLane });
    const got = await workload(b);
    got.forEach((g, i) => assertClose(g, want[i]!, `sharedLane ${sharedLane}: result ${i}`));
    // on the lane: the first fill and the first attend (lane free); never the 1100-row fill and attend (too large);
    // the others when the lane is free by the time they are sent (usually not: a worker answers in tens of µs)
    if (sharedLane) assert.ok(b.laneRuns >= 2 && b.laneRuns <= 5, `expected 2..5 runs on the lane, got ${b.laneRuns}`);
    else assert.equal(b.laneRuns, 0);
    await b.dispose();
  }
});

test("an allocation the worker cannot place is reported through the lane as CAPACITY; the shard works on", { skip: skipWorkers }, async () => {
  const GiB = 2 ** 30;
  const b = await createWasmBackend({ threads: 1 });
  const a = b.alloc(0, 1.25 * GiB), s1 = b.alloc(0, 4096), c = b.alloc(0, 1.25 * GiB), s2 = b.alloc(0, 4096);
  b.free(0, a);
  b.free(0, c);
  const tooBig = b.alloc(0, 1.75 * GiB); // the accounting allows it; the worker's fragmented memory cannot
  const runs = b.laneRuns;
  await assert.rejects(fill(b, 0, 10, 50), isDuo("CAPACITY", /could not allocate/));
  assert.equal(b.laneRuns, runs + 1, "the failing run must have gone through the lane");
  b.free(0, tooBig);
  const rb = new ReferenceBackend();
  const wantOp = (await fill(rb, 0, 10, 60)).attend(1), gotOp = (await fill(b, 0, 10, 60)).attend(1);
  await rb.run(0, [wantOp]);
  await b.run(0, [gotOp]);
  assertClose(gotOp.out, wantOp.out, "out after the failure");
  b.free(0, s1);
  b.free(0, s2);
  await b.dispose();
});

test("sharedLane must be a boolean", { skip: probe.usable ? false : `skipped: wasm backend not usable here (${probe.reason})` }, async () => {
  for (const threads of [0, 1]) {
    await assert.rejects(createWasmBackend({ threads, sharedLane: "yes" as unknown as boolean }), isDuo("INVALID_ARGUMENT", /sharedLane must be true or false, got "yes"/));
  }
});
