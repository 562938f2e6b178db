import { test } from "node:test";
import assert from "node:assert/strict";
import { loadPattern } from "../src/pattern/io.ts";
import { MT19937 } from "../src/pattern/mt19937.ts";
import { type HeadPattern, makePattern } from "../src/pattern/pattern.ts";
import { retrievalCount, sparsify, type SparsifyOptions } from "../src/pattern/sparsify.ts";
import { scheduleToHex } from "../src/schedule/hex.ts";
import { PATTERN_NAMES, type PatternName, patternPath, skipNoPatterns } from "./helpers/patterns.ts";
import { throwsDuo } from "./helpers/errors.ts";

const published = new Map<PatternName, HeadPattern>();
async function pattern(name: PatternName): Promise<HeadPattern> {
  if (!published.has(name)) published.set(name, await loadPattern(patternPath(name)));
  return published.get(name)!;
}

/**
 * A generated [L, H] pattern exactly as numpy makes it: np.random.RandomState(L*100 + H).random_sample((L, H))
 * * 1.2 − 0.1 (some gates outside [0, 1]), optionally rounded to multiples of 1/q (many ties).
 */
function generated(L: number, H: number, q = 0): HeadPattern {
  const rng = new MT19937(L * 100 + H);
  const rows = Array.from({ length: L }, () => Array.from({ length: H }, () => {
    const r = rng.randomSample() * 1.2 - 0.1;
    return q ? Math.round(r * q) / q : r;
  }));
  return makePattern(rows, { sinkSize: 4, recentSize: 8 });
}

test("the two golden masks and the ten other seed-42 masks of SPEC §1.6 are reproduced", { skip: skipNoPatterns }, async () => {
  // SPEC.md §1.6 golden masks (1048k s=0.5, Mistral-v0.2 s=0.75); the other ten were computed here with numpy 2.4
  // (np.random.seed(42); sparsify_attention_heads(load_attn_pattern(...), sparsity=s)).
  const masks: [PatternName, number, string][] = [
    ["Llama-2-7B-32K-Instruct", 0.5, "111d14d4.5c9ffc9d.40000026.83804469.64080000.e1014d05.634dcc42.ca6a0649.1fc003e9.d0dc6142.ba7f201f.27437aab.38f7b86c.2f73d947.7ffff8a4.bf7a20ef.fee47cc7.99fef24b.6c7ded73.6bebda19.d5fa609f.5c65803f.16f9d3f3.c3824801.589fe8c6.9b10d62c.d82f35fe.29094205.350e2868.3467542e.78fbf0f7.fefbfbf7"],
    ["Llama-2-7B-32K-Instruct", 0.75, "00040004.1c1a6410.40000020.80800421.44080000.20000501.2344c802.c2280209.1c4002e1.00802142.18032007.20437a80.28008008.2052c000.51a5b084.116a0062.ce8450c2.80743203.4870c022.40e88000.d5a84006.4c00801a.04c1d3d3.01820801.5898c0c6.9b004404.c02224f6.01000201.110e0800.20445020.201ba0a7.1cb38af3"],
    ["Llama-3-8B-Instruct-Gradient-1048k", 0.5, "20.10.06.06.0c.69.06.96.eb.17.9b.c1.84.eb.4f.ab.e6.d7.54.b5.be.b0.19.d7.8e.dc.91.47.de.2f.ff.84"],
    ["Llama-3-8B-Instruct-Gradient-1048k", 0.75, "20.10.00.02.08.09.06.16.c1.12.8b.c1.84.ea.41.ab.66.d2.10.31.22.00.08.c1.80.00.10.40.0a.0a.44.00"],
    ["Llama-3-8B-Instruct-Gradient-4194k", 0.5, "a0.10.0e.00.0c.6d.06.96.ab.13.a3.59.80.eb.4d.ab.e6.d7.54.b0.be.b8.d9.d6.9e.dc.f1.5f.9e.2f.ff.80"],
    ["Llama-3-8B-Instruct-Gradient-4194k", 0.75, "20.10.08.00.00.49.06.16.82.12.a3.08.80.e2.41.a3.66.d6.14.20.26.08.48.c0.90.88.30.40.0a.0a.44.00"],
    ["Meta-Llama-3.1-8B-Instruct", 0.5, "24.91.5c.04.2e.22.06.9f.e1.d7.d3.79.90.ff.1d.ab.a6.e7.54.95.b6.90.55.d6.0e.58.91.47.9e.2f.ff.04"],
    ["Meta-Llama-3.1-8B-Instruct", 0.75, "00.91.08.04.00.00.06.15.e0.12.83.58.00.e2.05.ab.a6.42.50.00.a0.10.14.c0.02.10.00.46.02.2b.7f.00"],
    ["Mistral-7B-Instruct-v0.2", 0.5, "0e.8b.7b.88.1b.10.94.1c.50.a3.88.f4.77.40.4e.0f.9b.22.f7.6d.ed.ac.c2.51.74.2e.5b.23.9a.fd.e3.ef"],
    ["Mistral-7B-Instruct-v0.2", 0.75, "00.88.68.88.13.10.94.00.50.20.80.54.45.00.0a.07.02.02.32.6d.64.08.02.51.40.08.18.20.0a.90.e3.49"],
    ["Mistral-7B-Instruct-v0.3", 0.5, "22.83.7c.88.0b.39.a4.5c.10.a0.29.f2.75.40.1f.2f.1b.82.f7.6d.cd.af.c2.71.74.0e.7b.23.9a.bf.eb.cf"],
    ["Mistral-7B-Instruct-v0.3", 0.75, "20.80.68.88.03.11.a4.00.10.20.01.d2.44.00.1b.03.02.00.22.6d.44.2a.02.71.40.00.38.20.0a.90.e3.49"],
  ];
  for (const [name, s, hex] of masks) assert.equal(scheduleToHex(sparsify(await pattern(name), { sparsity: s })), hex, `${name} s=${s}`);
});

test("per-layer retrieval counts match SPEC §1.6 (seed-42 tie-breaking)", { skip: skipNoPatterns }, async () => {
  const lists: [PatternName, number, string][] = [
    ["Llama-2-7B-32K-Instruct", 0.5, "12,21,4,10,4,11,14,13,14,13,18,17,18,19,23,20,21,20,21,19,19,15,20,9,17,14,20,9,12,15,22,28"],
    ["Llama-2-7B-32K-Instruct", 0.75, "2,10,2,5,3,4,9,8,9,5,8,10,4,6,12,9,12,10,9,6,11,7,14,5,12,8,12,3,6,6,12,17"],
    ["Llama-3-8B-Instruct-Gradient-1048k", 0.5, "1,1,2,2,2,4,2,4,6,4,5,3,2,6,5,5,5,6,3,5,6,3,3,6,4,5,3,4,6,5,8,2"],
    ["Llama-3-8B-Instruct-Gradient-1048k", 0.75, "1,1,0,1,1,2,2,3,3,2,4,3,2,5,2,5,4,4,1,3,2,0,1,3,1,0,1,1,2,2,2,0"],
  ];
  for (const [name, s, counts] of lists) {
    assert.equal(sparsify(await pattern(name), { sparsity: s }).counts().join(","), counts, `${name} s=${s}`);
  }
});

test("retrieval totals and natural (>= 0.5) counts match the SPEC §1.6 table for all six patterns", { skip: skipNoPatterns }, async () => {
  const natural: Record<PatternName, number> = {
    "Llama-2-7B-32K-Instruct": 446, "Llama-3-8B-Instruct-Gradient-1048k": 208, "Llama-3-8B-Instruct-Gradient-4194k": 208,
    "Meta-Llama-3.1-8B-Instruct": 234, "Mistral-7B-Instruct-v0.2": 244, "Mistral-7B-Instruct-v0.3": 240,
  };
  for (const name of PATTERN_NAMES) {
    const p = await pattern(name);
    const n = p.numLayers * p.numKvHeads;
    for (const tieBreak of ["numpy-seed42", "stable"] as const) {
      assert.equal(sparsify(p, { sparsity: 0.5, tieBreak }).retrievalHeads, n / 2, `${name} ${tieBreak} s=0.5`);
      assert.equal(sparsify(p, { sparsity: 0.75, tieBreak }).retrievalHeads, n / 4, `${name} ${tieBreak} s=0.75`);
    }
    assert.equal(sparsify(p, { threshold: 0.5 }).retrievalHeads, natural[name], `${name} threshold 0.5`);
  }
});

test("stable tie-breaking differs from seed 42 by SPEC §1.3's head swaps", { skip: skipNoPatterns }, async () => {
  // Swaps = heads that are retrieval in one and streaming in the other, per schedule (symmetric difference / 2).
  const swaps: Record<string, number[]> = { "0.5": [0, 1, 1, 0, 2, 0], "0.75": [1, 11, 10, 2, 29, 27] };
  for (const s of [0.5, 0.75]) {
    const got: number[] = [];
    for (const name of PATTERN_NAMES) {
      const p = await pattern(name);
      const a = sparsify(p, { sparsity: s }), b = sparsify(p, { sparsity: s, tieBreak: "stable" });
      got.push(a.mask.flat().filter((r, i) => r !== b.mask.flat()[i]).length / 2);
    }
    assert.deepEqual(got, swaps[String(s)], `s=${s}`);
  }
});

test("retrieval count is N - ceil((N-1)s) over 101 sparsities on every published pattern, both tie-breaks", { skip: skipNoPatterns }, async () => {
  for (const name of PATTERN_NAMES) {
    const p = await pattern(name);
    const n = p.numLayers * p.numKvHeads;
    for (let k = 0; k <= 100; k++) {
      const want = k === 0 ? n : k === 100 ? 0 : n - Math.ceil(((n - 1) * k) / 100);
      assert.equal(retrievalCount(n, k / 100), want, `retrievalCount(${n}, ${k / 100})`);
      for (const tieBreak of ["numpy-seed42", "stable"] as const) {
        const sched = sparsify(p, { sparsity: k / 100, tieBreak });
        assert.equal(sched.retrievalHeads, want, `${name} ${tieBreak} s=${k / 100}`);
        assert.equal(sched.sparsity, 1 - want / n);
      }
    }
  }
});

test("retrieval count on generated patterns over 1001 sparsities, including numpy's float corner", () => {
  // Exact integer rule: kept = N − ⌈(N−1)·k/1000⌉. The float64 product (N−1)·s can land a few ulps above an integer
  // (e.g. 25 · 0.28 = 7.000000000000001); there stable mode follows retrievalCount (the float formula) and numpy
  // mode keeps that count or one head more, depending on the gates (retrievalCount's comment).
  let corners = 0;
  for (const [L, H] of [[1, 1], [1, 2], [2, 13], [1, 26], [3, 17], [4, 8], [5, 10], [32, 8]] as const) {
    for (const q of [0, 8]) {
      const p = generated(L, H, q);
      const n = L * H;
      for (let k = 0; k <= 1000; k++) {
        const s = k / 1000;
        const exact = k === 0 ? n : k === 1000 ? 0 : n - Math.ceil(((n - 1) * k) / 1000);
        const float = retrievalCount(n, s);
        const corner = float !== exact;
        if (corner) {
          corners++;
          assert.equal(float, exact - 1, `float corner ${n} ${s}`);
        }
        assert.equal(sparsify(p, { sparsity: s, tieBreak: "stable" }).retrievalHeads, float, `stable ${L}x${H} q=${q} s=${s}`);
        const numpy = sparsify(p, { sparsity: s }).retrievalHeads;
        assert.ok(numpy === float || (corner && numpy === exact), `numpy ${L}x${H} q=${q} s=${s}: ${numpy}, expected ${float}`);
      }
    }
  }
  assert.ok(corners > 0, "the sweep should cross the float corner");
});

test("numpy's own outcomes on generated patterns are reproduced, float corner included (numpy 2.4 values)", () => {
  // np.random.seed(42); mask = sparsify_attention_heads(clip(generated), sparsity=s); mask.sum()
  assert.equal(sparsify(generated(2, 13), { sparsity: 0.28 }).retrievalHeads, 19); // float formula says 18
  assert.equal(sparsify(generated(1, 26, 8), { sparsity: 0.28 }).retrievalHeads, 18);
  assert.equal(sparsify(generated(3, 17, 8), { sparsity: 0.56 }).retrievalHeads, 23); // float formula says 22
  assert.equal(scheduleToHex(sparsify(generated(4, 8, 8), { sparsity: 0.5 })), "63.69.1a.67");
  assert.equal(scheduleToHex(sparsify(generated(7, 33, 8), { sparsity: 0.3 })),
    "a72adc5c0.8bbc73ad8.5def0ffd8.effccffb8.ffbde96e8.bbd67fed8.ff55bdb38");
});

test("sparsity 0 keeps every head and sparsity 1 none, in both tie-break modes", () => {
  const p = generated(3, 5, 4);
  for (const tieBreak of ["numpy-seed42", "stable"] as const) {
    assert.equal(sparsify(p, { sparsity: 0, tieBreak }).retrievalHeads, 15);
    assert.equal(sparsify(p, { sparsity: 1, tieBreak }).retrievalHeads, 0);
    assert.equal(sparsify(p, { sparsity: 1, tieBreak }).sparsity, 1);
  }
});

test("stable mode keeps the highest gates and breaks ties by lower (layer, head)", () => {
  const p = makePattern([[1, 1, 1, 1], [1, 0.5, 1, 0]], { sinkSize: 1, recentSize: 1 });
  const rows = (s: number) => sparsify(p, { sparsity: s, tieBreak: "stable" }).mask.map((r) => r.map(Number).join("")).join(".");
  assert.equal(rows(0.5), "1111.0000"); // kept 8 − ⌈3.5⌉ = 4: the first four 1.0s
  assert.equal(rows(0.3), "1111.1000"); // kept 5
  assert.equal(rows(0.25), "1111.1010"); // kept 6 = every 1.0
  assert.equal(rows(0.1), "1111.1110"); // kept 7: then 0.5
  const q = makePattern([[0.25, 0.75], [0.75, 0.25]], { sinkSize: 1, recentSize: 1 });
  assert.deepEqual(sparsify(q, { sparsity: 0.7, tieBreak: "stable" }).retrieval.map((r) => Array.from(r)), [[1], []]); // kept 1 of the tied 0.75s
  assert.deepEqual(sparsify(q, { sparsity: 0.6, tieBreak: "stable" }).retrieval.map((r) => Array.from(r)), [[1], [0]]); // kept 2
});

test("threshold mode: gate >= threshold, ties included, no noise", () => {
  const p = makePattern([[1, 0.5, 0.5 - 2 ** -53, 0], [0.75, 0.5, 1, 0.25]], { sinkSize: 1, recentSize: 1 });
  const rows = (t: number) => sparsify(p, { threshold: t }).mask.map((r) => r.map(Number).join("")).join(".");
  assert.equal(rows(0.5), "1100.1110");
  assert.equal(rows(1), "1000.0010");
  assert.equal(rows(1.5), "0000.0000");
  assert.equal(rows(0), "1111.1111");
  assert.equal(rows(-1), "1111.1111");
  assert.equal(sparsify(p, { threshold: 0.5 }).sparsity, 3 / 8);
});

test("an explicit mask becomes the schedule, checked against the pattern's shape", () => {
  const p = generated(2, 3);
  const mask = [[true, false, true], [false, false, false]];
  const s = sparsify(p, { mask });
  assert.deepEqual(s.counts(), [2, 0]);
  assert.deepEqual(Array.from(s.permutation[0]!), [0, 2, 1]);
  throwsDuo(() => sparsify(p, { mask: [[true, false], [true, true]] }), "SHAPE_MISMATCH", /the head mask is 2 layers x 2 KV heads, but the model has 2 layers x 3 KV heads/);
  throwsDuo(() => sparsify(p, { mask: [[true, false, true]] }), "SHAPE_MISMATCH", /1 layers x 3 KV heads/);
  throwsDuo(() => sparsify(p, { mask: [[true, 1, true], [true, true, true]] as unknown as boolean[][] }), "INVALID_ARGUMENT", /\[0\]\[1\] is 1; use true/);
  throwsDuo(() => sparsify(p, { mask: [[true, true, true], [true]] }), "SHAPE_MISMATCH", /row 1 has 1 entries/);
});

test("bad sparsify options are rejected with the valid forms, and the pattern is never modified", () => {
  const p = generated(4, 8, 8);
  const before = Float64Array.from(p.gates);
  const bad: [unknown, RegExp][] = [
    [{ sparsity: -0.1 }, /sparsity must be a number in \[0, 1\] .* got -0.1/],
    [{ sparsity: 1.5 }, /got 1.5/],
    [{ sparsity: NaN }, /got NaN/],
    [{ sparsity: "0.5" }, /got 0.5/],
    [{ threshold: NaN }, /threshold must be a finite number/],
    [{ threshold: Infinity }, /threshold must be a finite number/],
    [{ sparsity: 0.5, tieBreak: "random" }, /tieBreak must be one of "numpy-seed42", "stable", got "random"/],
    [{ sparsity: 0.5, threshold: 0.5 }, /exactly one of sparsity, threshold or mask; got sparsity and threshold/],
    [{}, /exactly one .* got none/],
    [{ sparcity: 0.5 }, /unknown sparsify option "sparcity"; valid options: sparsity, threshold, mask, tieBreak/],
    [{ threshold: 0.5, tieBreak: "stable" }, /tieBreak only applies to \{ sparsity \}/],
    [null, /options must be/],
  ];
  for (const [options, message] of bad) throwsDuo(() => sparsify(p, options as SparsifyOptions), "INVALID_ARGUMENT", message);
  throwsDuo(() => sparsify({ ...p, gates: new Float64Array(3) }, { sparsity: 0.5 }), "PATTERN_FORMAT", /numLayers \* numKvHeads/);
  for (const options of [{ sparsity: 0.5 }, { sparsity: 0.75, tieBreak: "stable" }, { threshold: 0.5 }] as SparsifyOptions[]) sparsify(p, options);
  assert.deepEqual(p.gates, before, "gates changed");
});
