// Bad input gets a DuoError with a code and a message naming what is valid, and leaves the cache as it was.
import { test } from "node:test";
import assert from "node:assert/strict";
import { DuoAttention } from "../src/engine/duo.ts";
import { DuoError } from "../src/errors.ts";
import { ReferenceBackend } from "../src/backend/reference.ts";
import type { Backend } from "../src/backend/types.ts";
import { randomArray } from "./helpers/random.ts";
import { isDuo } from "./helpers/errors.ts";

const shape = { numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8 };
const heads = [[true, false], [false, true]];
const make = (o: Record<string, unknown> = {}) =>
  DuoAttention.create({ shape, heads, sinkSize: 2, recentSize: 3, kvDtype: "f32", backend: "reference", maxContext: 12, ...o });

test("create rejects bad options with the valid choices named", async () => {
  await assert.rejects(make({ shape: { ...shape, numHeads: 3 } }), isDuo("SHAPE_MISMATCH", /multiple of shape.numKvHeads/));
  await assert.rejects(make({ heads: [[true, false]] }), isDuo("SHAPE_MISMATCH", /1 layers x 2 KV heads, but the model has 2 layers x 2/));
  await assert.rejects(make({ heads: [[true, false], [true]] }), isDuo("SHAPE_MISMATCH", /row 1 has 1 entries/));
  await assert.rejects(make({ heads: [[true, 1], [true, false]] }), isDuo("INVALID_ARGUMENT", /\[0\]\[1\] is 1; use true/));
  await assert.rejects(make({ sinkSize: -1 }), isDuo("INVALID_ARGUMENT", /sinkSize must be an integer >= 0, got -1/));
  await assert.rejects(make({ recentSize: 2.5 }), isDuo("INVALID_ARGUMENT", /recentSize/));
  await assert.rejects(make({ kvDtype: "int2" }), isDuo("INVALID_ARGUMENT", /kvDtype must be one of "f32", "f16", "bf16", "int8", "int4"/));
  await assert.rejects(make({ kvDtype: "int4", shape: { ...shape, headDim: 7 } }), isDuo("UNSUPPORTED", /"int4" packs two values per byte: headDim must be even, got 7; use "int8"/));
  await assert.rejects(make({ prefill: "dense" }), isDuo("INVALID_ARGUMENT", /"upstream", "window"/));
  await assert.rejects(make({ backend: "tpu" }), isDuo("INVALID_ARGUMENT", /backend must be one of "auto", "cuda", "native", "wasm"/));
  await assert.rejects(make({ maxContext: 0 }), isDuo("INVALID_ARGUMENT", /maxContext/));
  await assert.rejects(make({ heads: undefined }), isDuo("INVALID_ARGUMENT", /heads is required/));
});

test("attend rejects bad calls and the cache is exactly as before", async () => {
  const duo = await make();
  const seq = duo.sequence();
  const call = (T: number, seed: number) => [randomArray(T * 4 * 8, seed), randomArray(T * 2 * 8, seed + 1), randomArray(T * 2 * 8, seed + 2)] as const;
  const [q, k, v] = call(5, 1);
  await seq.attend(0, q, k, v);
  const before = { len: seq.length(0), bytes: seq.bytes() };
  const [q2, k2, v2] = call(2, 9);
  await assert.rejects(seq.attend(2, q2, k2, v2), isDuo("INVALID_ARGUMENT", /layer must be an integer in \[0, 1\], got 2/));
  await assert.rejects(seq.attend(-1, q2, k2, v2), isDuo("INVALID_ARGUMENT", /layer/));
  await assert.rejects(seq.attend(0, q2, k2.subarray(1), v2), isDuo("SHAPE_MISMATCH", /^k has 31 elements; for T=2 tokens \(as q and v have\) it must be \[T, numKvHeads=2, headDim=8\] = 32$/));
  await assert.rejects(seq.attend(0, q2, k2, v2.subarray(16)), isDuo("SHAPE_MISMATCH", /^v has 16 elements; for T=2 tokens \(as q and k have\)/));
  await assert.rejects(seq.attend(0, q2.subarray(16), k2, v2), isDuo("SHAPE_MISMATCH", /^q has 48 elements; for T=2 tokens \(as k and v have\) it must be \[T, numHeads=4, headDim=8\] = 64$/));
  await assert.rejects(seq.attend(0, new Float32Array(0), new Float32Array(0), new Float32Array(0)), isDuo("SHAPE_MISMATCH", /^this call has no tokens \(q, k and v are empty\); pass T >= 1 tokens/));
  await assert.rejects(seq.attend(0, Array.from(q2) as unknown as Float32Array, k2, v2), isDuo("INVALID_ARGUMENT", /q must be a Float32Array, got Array/));
  const [q8, k8, v8] = call(8, 3);
  await assert.rejects(seq.attend(0, q8, k8, v8), isDuo("CAPACITY", /holds 5 tokens; 8 more would exceed maxContext = 12/));
  assert.equal(seq.length(0), before.len);
  assert.deepEqual(seq.bytes(), before.bytes);
  // The next valid call gives what a cache that never saw the rejected calls gives.
  const fresh = (await make()).sequence();
  await fresh.attend(0, q, k, v);
  assert.deepEqual(await seq.attend(0, q2, k2, v2), await fresh.attend(0, q2, k2, v2));
  await duo.dispose();
});

test("a wrong shape names the tensor that is wrong, also k and v with the query heads' count (GQA)", async () => {
  const duo = await make(); // 4 query heads, 2 KV heads, head dim 8
  const seq = duo.sequence();
  const q = randomArray(2 * 4 * 8, 1), k = randomArray(2 * 2 * 8, 2), v = randomArray(2 * 2 * 8, 3);
  const asQ = (s: number) => randomArray(2 * 4 * 8, s); // [2, 4, 8]: k or v given every query head
  await assert.rejects(seq.attend(0, q, asQ(4), v), isDuo("SHAPE_MISMATCH",
    /^k has 64 elements; for T=2 tokens \(as q and v have\) it must be \[T, numKvHeads=2, headDim=8\] = 32 \(it holds numHeads=4 heads per token; k and v carry the 2 KV heads, each shared by 2 query heads\)$/));
  await assert.rejects(seq.attend(0, q, k, asQ(5)), isDuo("SHAPE_MISMATCH", /^v has 64 elements; for T=2 tokens \(as q and k have\).*\(it holds numHeads=4 heads/));
  await assert.rejects(seq.attend(0, q, asQ(4), asQ(5)), isDuo("SHAPE_MISMATCH",
    /^q, k and v all have 64 elements, but k and v carry numKvHeads=2 heads per token where q carries numHeads=4 .*: for T tokens they must be q \[T, numHeads=4, headDim=8\], k and v \[T, numKvHeads=2, headDim=8\]$/));
  await assert.rejects(seq.attend(0, randomArray(2 * 2 * 8, 6), k, v), isDuo("SHAPE_MISMATCH", /^q, k and v all have 32 elements, but k and v carry/), "q with the KV heads' count");
  await assert.rejects(seq.attend(0, q, k.subarray(3), v.subarray(5)), isDuo("SHAPE_MISMATCH", /^k has 29 elements; .*; v has 27 elements; for T=2 tokens \(as q has\)/));
  await assert.rejects(seq.attend(0, q.subarray(1), k.subarray(3), v.subarray(5)), isDuo("SHAPE_MISMATCH", /^q, k, v disagree on the number of tokens T: q has 63 elements \(not a whole number of 4 × 8 rows\); k has 29/));
  await assert.rejects(seq.fill(0, k, v.subarray(16)), isDuo("SHAPE_MISMATCH", /^k, v disagree on the number of tokens T: k has 32 elements \(T = 2\); v has 16 elements \(T = 1\)/));
  await assert.rejects(seq.fill(0, new Float32Array(0), new Float32Array(0)), isDuo("SHAPE_MISMATCH", /^this call has no tokens \(k and v are empty\); pass T >= 1 tokens: k and v \[T, numKvHeads=2, headDim=8\]$/));
  assert.equal(seq.length(0), 0, "nothing was stored");
  assert.equal((await seq.attend(0, q, k, v)).length, 64);
  await duo.dispose();
});

test("a backend out of memory mid-call leaves the cache unchanged (all or nothing)", async () => {
  const inner = new ReferenceBackend();
  let budget = Infinity;
  const tight: Backend = Object.assign(Object.create(inner), {
    alloc(shard: number, bytes: number) {
      if (bytes > budget) throw new DuoError("CAPACITY", `out of memory: ${bytes} bytes wanted`);
      budget -= bytes;
      return inner.alloc(shard, bytes);
    },
  });
  const duo = await make({ backend: tight, pageSize: 2 });
  const seq = duo.sequence();
  await seq.attend(0, randomArray(2 * 32, 1), randomArray(2 * 16, 2), randomArray(2 * 16, 3));
  const before = seq.bytes();
  const allocatedBefore = inner.memory(0).allocated;
  budget = 2 * 2 * 8 * 4 + 1; // one more page of K and V fits, the second does not
  await assert.rejects(seq.attend(0, randomArray(4 * 32, 4), randomArray(4 * 16, 5), randomArray(4 * 16, 6)), isDuo("CAPACITY", /out of memory/));
  assert.deepEqual(seq.bytes(), before);
  assert.equal(inner.memory(0).allocated, allocatedBefore, "the page allocated before the failure was freed again");
  await duo.dispose();
});

test("a backend run that fails late (after its buffers were reserved) leaves the cache as before", async () => {
  const inner = new ReferenceBackend();
  let failNext = false;
  const flaky: Backend = Object.assign(Object.create(inner), {
    async run(shard: number, ops: Parameters<Backend["run"]>[1]) {
      if (failNext) {
        failNext = false;
        throw new DuoError("CAPACITY", "worker could not grow its memory");
      }
      return await (inner as Backend).run(shard, ops);
    },
  });
  const duo = await make({ backend: flaky, pageSize: 2 });
  const seq = duo.sequence();
  const args = (T: number, s: number) => [randomArray(T * 32, s), randomArray(T * 16, s + 1), randomArray(T * 16, s + 2)] as const;
  await seq.attend(0, ...args(2, 1));
  await seq.attend(1, ...args(3, 7)); // sizes the engine's staging rows for 3 tokens, so only pages change below
  const before = seq.bytes(), allocated = inner.memory(0).allocated;
  failNext = true;
  await assert.rejects(seq.attend(0, ...args(3, 4)), isDuo("CAPACITY", /could not grow/));
  assert.deepEqual(seq.bytes(), before);
  assert.equal(inner.memory(0).allocated, allocated, "the pages reserved for the failed call were freed");
  const fresh = (await make()).sequence();
  await fresh.attend(0, ...args(2, 1));
  assert.deepEqual(await seq.attend(0, ...args(3, 4)), await fresh.attend(0, ...args(3, 4)), "the next call works as if the failed one never happened");
  await duo.dispose();
});

test("use after dispose and concurrent calls on one layer are refused", async () => {
  const duo = await make();
  const seq = duo.sequence();
  const args = [randomArray(32, 1), randomArray(16, 2), randomArray(16, 3)] as const;
  const first = seq.attend(0, ...args);
  await assert.rejects(seq.attend(0, ...args), isDuo("INVALID_ARGUMENT", /in flight/));
  await first;
  seq.dispose();
  await assert.rejects(seq.attend(0, ...args), isDuo("DISPOSED", /duo.sequence\(\)/));
  assert.throws(() => seq.length(0), isDuo("DISPOSED", /disposed/));
  const other = duo.sequence();
  await duo.dispose();
  await assert.rejects(other.attend(0, ...args), isDuo("DISPOSED", /engine has been disposed/));
  assert.throws(() => duo.sequence(), isDuo("DISPOSED", /create a new one/));
});

test("sequences are isolated; reset empties one and returns its memory", async () => {
  const duo = await make();
  const a = duo.sequence(), b = duo.sequence();
  const args = (s: number) => [randomArray(3 * 32, s), randomArray(3 * 16, s + 1), randomArray(3 * 16, s + 2)] as const;
  const outA = await a.attend(0, ...args(1));
  await b.attend(0, ...args(50));
  await b.attend(0, ...args(60));
  const againA = await (await make()).sequence().attend(0, ...args(1));
  assert.deepEqual(outA, againA);
  assert.equal(a.length(0), 3);
  assert.equal(b.length(0), 6);
  b.reset();
  assert.equal(b.length(0), 0);
  assert.deepEqual(b.bytes(), { retrieval: 0, streaming: 0, total: 0, fullAttention: 0, allocated: 0 });
  assert.deepEqual(await b.attend(0, ...args(1)), outA, "a reset sequence behaves like a new one");
  await duo.dispose();
});

test("a quantized cache refuses non-finite K/V (int4 also values past f16 range) and stays as it was", async () => {
  for (const kvDtype of ["int8", "int4"] as const) {
    const duo = await make({ kvDtype });
    const seq = duo.sequence();
    const q = randomArray(2 * 4 * 8, 1), k = randomArray(2 * 2 * 8, 2), v = randomArray(2 * 2 * 8, 3);
    await seq.attend(0, q, k, v);
    const before = { len: seq.length(0), bytes: seq.bytes() };
    const bad = k.slice();
    bad[5] = NaN;
    await assert.rejects(seq.attend(0, q, bad, v), isDuo("INVALID_ARGUMENT", new RegExp(`k\\[5\\] is NaN: a kvDtype "${kvDtype}" cache holds finite values`)));
    if (kvDtype === "int4") {
      const big = v.slice();
      big[3] = 1e5;
      await assert.rejects(seq.attend(0, q, k, big), isDuo("INVALID_ARGUMENT", /v\[3\] is 100000: .*magnitude at most 65504/));
    }
    assert.deepEqual({ len: seq.length(0), bytes: seq.bytes() }, before);
    await duo.dispose();
  }
});

test("a backend without quantized kernels refuses int8 / int4, naming the dtypes it stores", async () => {
  const floatOnly = Object.assign(new ReferenceBackend(), { capabilities: { ...new ReferenceBackend().capabilities, dtypes: ["f32", "f16", "bf16"] as const } });
  for (const kvDtype of ["int8", "int4"]) {
    await assert.rejects(make({ kvDtype, backend: floatOnly }), isDuo("UNSUPPORTED", new RegExp(`it stores KV as f32, f16, bf16, not ${kvDtype} \\(kvDtype\\)`)));
  }
});
