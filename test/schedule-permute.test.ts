import { test } from "node:test";
import assert from "node:assert/strict";
import { DuoError } from "../src/errors.ts";
import type { ModelShape } from "../src/shape.ts";
import { HeadSchedule } from "../src/schedule/schedule.ts";
import { kvHeadOf, queryHeads } from "../src/schedule/gqa.ts";
import {
  type AttentionWeights, checkPermutation, invertPermutation, permuteAttentionWeights, permuteColumnBlocks,
  permuteRowBlocks, unpermuteAttentionWeights,
} from "../src/schedule/permute.ts";
import { randomArray } from "./helpers/random.ts";

/** Random weights of one layer; biases optional. */
function weights(shape: ModelShape, hidden: number, seed: number, bias: boolean): AttentionWeights {
  const qRows = shape.numHeads * shape.headDim, kvRows = shape.numKvHeads * shape.headDim;
  const w: AttentionWeights = {
    q: randomArray(qRows * hidden, seed, 0.5),
    k: randomArray(kvRows * hidden, seed + 1, 0.5),
    v: randomArray(kvRows * hidden, seed + 2),
    o: randomArray(hidden * qRows, seed + 3),
  };
  if (bias) {
    w.qBias = randomArray(qRows, seed + 4);
    w.kBias = randomArray(kvRows, seed + 5);
    w.vBias = randomArray(kvRows, seed + 6);
    w.oBias = randomArray(hidden, seed + 7);
  }
  return w;
}

/**
 * One attention layer in float64: x [T, hidden] → per-head outputs [T, Hq·D] (before o_proj) and out [T, hidden].
 * Causal softmax attention, scale 1/√D, query head q reads KV head ⌊q/G⌋.
 */
function attention(w: AttentionWeights, x: Float32Array, T: number, shape: ModelShape): { heads: Float64Array; out: Float64Array } {
  const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = shape;
  const G = Hq / Hkv, hidden = x.length / T;
  const linear = (W: Float32Array, b: Float32Array | undefined, inp: ArrayLike<number>, n: number, rows: number) => {
    const y = new Float64Array(T * rows);
    for (let t = 0; t < T; t++) {
      for (let r = 0; r < rows; r++) {
        let s = b ? b[r]! : 0;
        for (let i = 0; i < n; i++) s += W[r * n + i]! * inp[t * n + i]!;
        y[t * rows + r] = s;
      }
    }
    return y;
  };
  const q = linear(w.q, w.qBias, x, hidden, Hq * D), k = linear(w.k, w.kBias, x, hidden, Hkv * D), v = linear(w.v, w.vBias, x, hidden, Hkv * D);
  const heads = new Float64Array(T * Hq * D);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < Hq; h++) {
      const kh = Math.floor(h / G);
      const scores = Array.from({ length: t + 1 }, (_, s) => {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[(t * Hq + h) * D + d]! * k[(s * Hkv + kh) * D + d]!;
        return dot / Math.sqrt(D);
      });
      const m = Math.max(...scores);
      const p = scores.map((z) => Math.exp(z - m));
      const sum = p.reduce((a, b) => a + b, 0);
      for (let d = 0; d < D; d++) {
        let o = 0;
        for (let s = 0; s <= t; s++) o += p[s]! * v[(s * Hkv + kh) * D + d]!;
        heads[(t * Hq + h) * D + d] = o / sum;
      }
    }
  }
  return { heads, out: linear(w.o, w.oBias, heads, Hq * D, hidden) };
}

function assertClose(a: Float64Array, b: Float64Array, label: string): void {
  // Permuting only reorders o_proj's sum over heads: float64 rounding, |a−b| ≤ 1e-12·(1 + |b|).
  let worst = 0, at = -1;
  for (let i = 0; i < b.length; i++) {
    const err = Math.abs(a[i]! - b[i]!) / (1 + Math.abs(b[i]!));
    if (err > worst) [worst, at] = [err, i];
  }
  assert.ok(worst <= 1e-12, `${label}: max scaled error ${worst} at ${at}`);
}

const SHAPES: ModelShape[] = [
  { numLayers: 1, numHeads: 4, numKvHeads: 4, headDim: 3 }, // MHA, G = 1
  { numLayers: 1, numHeads: 8, numKvHeads: 2, headDim: 4 }, // G = 4
  { numLayers: 1, numHeads: 16, numKvHeads: 2, headDim: 2 }, // G = 8
  { numLayers: 1, numHeads: 12, numKvHeads: 3, headDim: 5 }, // G = 4, odd sizes
];

/** Masks of one layer: none, all, and mixed retrieval heads. */
function masks(hkv: number): boolean[][] {
  return [
    new Array(hkv).fill(false),
    new Array(hkv).fill(true),
    Array.from({ length: hkv }, (_, h) => h % 2 === 1),
    Array.from({ length: hkv }, (_, h) => h === hkv - 1),
  ];
}

test("GQA mapping: query head q reads KV head floor(q/G); a KV head's group is G consecutive query heads", () => {
  assert.deepEqual([0, 3, 4, 31].map((q) => kvHeadOf(q, 4)), [0, 0, 1, 7]);
  assert.deepEqual([0, 5].map((q) => kvHeadOf(q, 1)), [0, 5]);
  assert.deepEqual(Array.from(queryHeads([2, 0], 4)), [8, 9, 10, 11, 0, 1, 2, 3]);
  const s = HeadSchedule.fromMask([[false, true, false, true]]);
  assert.deepEqual(Array.from(queryHeads(s.retrieval[0]!, 2)), [2, 3, 6, 7]);
  assert.deepEqual(Array.from(queryHeads(s.permutation[0]!, 2)), [2, 3, 6, 7, 0, 1, 4, 5]);
  for (let q = 0; q < 32; q++) assert.ok(queryHeads([kvHeadOf(q, 8)], 8).includes(q), `query head ${q}`);
  assert.throws(() => kvHeadOf(-1, 4), (e) => e instanceof DuoError && e.code === "INVALID_ARGUMENT");
  assert.throws(() => queryHeads([0], 0), (e) => e instanceof DuoError && /groupSize/.test(e.message));
  assert.throws(() => queryHeads([1.5], 2), (e) => e instanceof DuoError && /KV head at index 0 is 1.5/.test(e.message));
});

test("block permutations of rows and columns on a small matrix", () => {
  // [4, 2] matrix, rows in blocks of 2; [2, 4] matrix, columns in blocks of 2.
  const rows = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual(Array.from(permuteRowBlocks(rows, 2, [1, 0], 2)), [5, 6, 7, 8, 1, 2, 3, 4]);
  assert.deepEqual(Array.from(permuteColumnBlocks(rows, 4, [1, 0], 2)), [3, 4, 1, 2, 7, 8, 5, 6]);
  assert.deepEqual(Array.from(permuteColumnBlocks(rows, 4, [3, 2, 1, 0], 1)), [4, 3, 2, 1, 8, 7, 6, 5]);
  assert.deepEqual(Array.from(rows), [1, 2, 3, 4, 5, 6, 7, 8], "input changed");
  assert.deepEqual(Array.from(invertPermutation([2, 0, 1])), [1, 2, 0]);
});

test("permuting then un-permuting a layer's weights is the identity, biases included", () => {
  const hidden = 6;
  SHAPES.forEach((shape, si) => {
    for (const bias of [false, true]) {
      const w = weights(shape, hidden, 100 + si, bias);
      const copy = structuredClone(w);
      const perms = [...masks(shape.numKvHeads).map((m) => HeadSchedule.fromMask([m]).permutation[0]!),
        Int32Array.from({ length: shape.numKvHeads }, (_, i) => shape.numKvHeads - 1 - i)];
      for (const perm of perms) {
        const p = permuteAttentionWeights(w, perm, shape);
        const back = unpermuteAttentionWeights(p, perm, shape);
        for (const key of ["q", "k", "v", "o", "qBias", "kBias", "vBias", "oBias"] as const) {
          assert.deepEqual(back[key], w[key], `shape ${si} bias ${bias} perm [${perm}] ${key}`);
        }
        assert.equal(p.oBias, w.oBias, "the o_proj bias is passed through, never permuted");
        if (perm.some((h, i) => h !== i)) assert.notDeepEqual(p.q, w.q, "a non-identity permutation moves q rows");
      }
      assert.deepEqual(w, copy, "inputs changed");
    }
  });
});

test("permuted attention equals unpermuted attention, and retrieval heads come first", () => {
  const hidden = 6, T = 5;
  SHAPES.forEach((shape, si) => {
    const G = shape.numHeads / shape.numKvHeads, D = shape.headDim, Hq = shape.numHeads;
    const x = randomArray(T * hidden, 900 + si);
    for (const bias of [false, true]) {
      const w = weights(shape, hidden, 200 + si, bias);
      const ref = attention(w, x, T, shape);
      for (const mask of masks(shape.numKvHeads)) {
        const sched = HeadSchedule.fromMask([mask]);
        const got = attention(permuteAttentionWeights(w, sched.permutation[0]!, shape), x, T, shape);
        const label = `shape ${si} bias ${bias} mask ${mask.map(Number).join("")}`;
        assertClose(got.out, ref.out, label);
        // Head slot i of the permuted layer computes original query head queryHeads(permutation, G)[i]; the first
        // nRet·G slots are the retrieval heads' query heads (exact: the same arithmetic in the same order).
        const order = queryHeads(sched.permutation[0]!, G);
        assert.deepEqual(Array.from(order.slice(0, sched.retrievalHeads * G)), Array.from(queryHeads(sched.retrieval[0]!, G)));
        for (let t = 0; t < T; t++) {
          for (let i = 0; i < Hq; i++) {
            const a = got.heads.subarray((t * Hq + i) * D, (t * Hq + i + 1) * D);
            const b = ref.heads.subarray((t * Hq + order[i]!) * D, (t * Hq + order[i]! + 1) * D);
            assert.deepEqual(a, b, `${label} t ${t} slot ${i}`);
          }
        }
      }
    }
  });
});

test("bad permutations and mis-sized weights are rejected, inputs untouched", () => {
  const shape = SHAPES[1]!;
  const w = weights(shape, 6, 7, true);
  const copy = structuredClone(w);
  for (const perm of [[0], [0, 0], [0, 2], [1, -1], [0.5, 1]]) {
    assert.throws(() => permuteAttentionWeights(w, perm, shape), (e) => e instanceof DuoError && e.code === "INVALID_ARGUMENT" &&
      /must list each of the 2 KV heads 0..1 exactly once/.test(e.message), `[${perm}]`);
  }
  assert.throws(() => checkPermutation([1, 2, 0], 2), /exactly once/);
  const wrong: [Partial<AttentionWeights>, RegExp][] = [
    [{ k: new Float32Array(5) }, /k_proj has 5 elements; expected 48 \(hidden = 6, numHeads = 8, numKvHeads = 2, headDim = 4\)/],
    [{ o: new Float32Array(10) }, /o_proj has 10 elements; expected 192/],
    [{ vBias: new Float32Array(3) }, /v bias has 3 elements; expected 8/],
    [{ oBias: new Float32Array(32) }, /o bias has 32 elements; expected 6/],
    [{ q: new Float32Array(7) }, /q_proj must be a Float32Array \[numHeads·headDim = 32, hidden\]/],
    [{ v: undefined }, /v_proj must be a Float32Array of 48 elements/],
    [{ kBias: new Float64Array(8) as unknown as Float32Array }, /k bias must be a Float32Array/],
  ];
  for (const [patch, message] of wrong) {
    assert.throws(() => permuteAttentionWeights({ ...w, ...patch }, [1, 0], shape), (e) => e instanceof DuoError && e.code === "SHAPE_MISMATCH" && message.test(e.message), String(message));
  }
  assert.throws(() => permuteAttentionWeights(w, [0, 1], { ...shape, numHeads: 7 }), (e) => e instanceof DuoError && e.code === "SHAPE_MISMATCH");
  assert.deepEqual(w, copy, "inputs changed");
});
