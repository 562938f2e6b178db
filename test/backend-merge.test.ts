// mergeState (log-sum-exp merge of partial attention, the split-KV building block) against attention over the union.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mergeState, ReferenceBackend } from "../src/backend/reference.ts";
import type { AttendOp, Segment } from "../src/backend/types.ts";
import { compare } from "./helpers/attention.ts";
import { randomArray } from "./helpers/random.ts";

const D = 16, Hq = 2, N = 40;

async function attendOver(be: ReferenceBackend, seg: Segment[], q: Float32Array) {
  const out = new Float32Array(Hq * D).fill(NaN), lse = new Float32Array(Hq).fill(NaN);
  const op: AttendOp = { kind: "attend", q, T: 1, numHeads: Hq, headDim: D, group: Hq, qHeads: Int32Array.of(0), kvSlots: Int32Array.of(0), segments: seg, qPos0: N, window: null, out, lse };
  await be.run(0, [op]);
  return { out, lse };
}

test("merging the partial states of two key ranges equals attention over both (and empty ranges are neutral)", async () => {
  const be = new ReferenceBackend();
  const k = be.alloc(0, N * D * 4), v = be.alloc(0, N * D * 4);
  await be.run(0, [
    { kind: "append", dst: k, dtype: "f32", rowHeads: 1, headDim: D, src: randomArray(N * D, 1, 3), srcHeads: 1, heads: Int32Array.of(0), rows: Int32Array.from({ length: N }, (_, i) => i) },
    { kind: "append", dst: v, dtype: "f32", rowHeads: 1, headDim: D, src: randomArray(N * D, 2), srcHeads: 1, heads: Int32Array.of(0), rows: Int32Array.from({ length: N }, (_, i) => i) },
  ]);
  const q = randomArray(Hq * D, 3);
  const seg = (rowStart: number, rowCount: number): Segment => ({ k, v, dtype: "f32", rowHeads: 1, rowStart, rowCount, positions: rowStart });
  const whole = await attendOver(be, [seg(0, N)], q);
  const a = await attendOver(be, [seg(0, 13)], q), b = await attendOver(be, [seg(13, N - 13)], q);
  const m = mergeState(a.out, a.lse, b.out, b.lse, D);
  const e1 = compare(m.o, whole.out, 1e-6, 1e-5), e2 = compare(m.lse, whole.lse, 1e-6, 1e-6);
  assert.equal(e1.bad, -1, `merged output differs: max abs err ${e1.maxAbs}`);
  assert.equal(e2.bad, -1, `merged lse differs: max abs err ${e2.maxAbs}`);
  // An empty segment (no visible keys) has lse = −Infinity and contributes nothing.
  const empty = await attendOver(be, [seg(0, 0)], q);
  assert.deepEqual([...empty.lse], [-Infinity, -Infinity]);
  assert.deepEqual([...empty.out], new Array(Hq * D).fill(0));
  const m2 = mergeState(whole.out, whole.lse, empty.out, empty.lse, D);
  assert.deepEqual(m2.o, whole.out);
  const m3 = mergeState(empty.out, empty.lse, empty.out, empty.lse, D);
  assert.deepEqual([...m3.lse], [-Infinity, -Infinity]);
  assert.ok(m3.o.every((x) => x === 0), "two empty segments merge to zeros, not NaN");
});
