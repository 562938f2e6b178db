// seq.bytes() against the SPEC.md §4.4 formula, with the published patterns, on the null backend (no compute).
import { test } from "node:test";
import assert from "node:assert/strict";
import { DuoAttention } from "../src/engine/duo.ts";
import { loadPattern } from "../src/pattern/io.ts";
import { sparsify } from "../src/pattern/sparsify.ts";
import { kvBytes } from "../src/schedule/kv.ts";
import type { KvDtype } from "../src/dtype.ts";
import { patternPath, skipNoPatterns, type PatternName } from "./helpers/patterns.ts";

const cases: [PatternName, number, number][] = [
  ["Llama-3-8B-Instruct-Gradient-1048k", 8, 0.5],
  ["Llama-2-7B-32K-Instruct", 32, 0.75],
];

async function grow(name: PatternName, Hkv: number, sparsity: number, dtype: KvDtype, lengths: number[]) {
  const heads = sparsify(await loadPattern(patternPath(name)), { sparsity });
  const S = 64, R = 256, D = 128, L = 32;
  const duo = await DuoAttention.create({ shape: { numLayers: L, numHeads: 32, numKvHeads: Hkv, headDim: D }, heads, sinkSize: S, recentSize: R, kvDtype: dtype, backend: "null", pageSize: 512 });
  const seq = duo.sequence();
  const chunk = new Float32Array(400 * Hkv * D).fill(0.5);
  const seen: { T: number; bytes: ReturnType<typeof seq.bytes>; want: { retrieval: number; streaming: number; full: number } }[] = [];
  let T = 0;
  for (const target of lengths) {
    while (T < target) {
      const n = Math.min(400, target - T);
      for (let l = 0; l < L; l++) await seq.fill(l, chunk.subarray(0, n * Hkv * D), chunk.subarray(0, n * Hkv * D));
      T += n;
    }
    // SPEC.md §4.4, written out here: 2 · b · D · Σ_l [ nRet[l] · T + nStr[l] · min(T, S+R) ]
    // (b · D = the bytes of one head's K or V of a token; int8: D + an f32 scale, int4: D/2 + f16 scale + f16 min)
    const bD = { f32: 4 * D, f16: 2 * D, bf16: 2 * D, int8: D + 4, int4: D / 2 + 4 }[dtype];
    const nRet = heads.counts().reduce((a, c) => a + c, 0), nStr = L * Hkv - nRet;
    seen.push({ T, bytes: seq.bytes(), want: { retrieval: 2 * bD * nRet * T, streaming: 2 * bD * nStr * Math.min(T, S + R), full: 2 * bD * L * Hkv * T } });
  }
  await duo.dispose();
  return { seen, heads };
}

test("seq.bytes() equals the SPEC §4.4 formula for the published Llama-3-8B (50%) and Llama-2-7B (25%) patterns", { skip: skipNoPatterns }, async () => {
  for (const [name, Hkv, s] of cases) {
    const { seen, heads } = await grow(name, Hkv, s, "bf16", [1, 320, 321, 1000, 2500]);
    for (const { T, bytes, want } of seen) {
      assert.equal(bytes.retrieval, want.retrieval, `${name} T=${T} retrieval`);
      assert.equal(bytes.streaming, want.streaming, `${name} T=${T} streaming`);
      assert.equal(bytes.total, want.retrieval + want.streaming);
      assert.equal(bytes.fullAttention, want.full);
      assert.equal(bytes.total, kvBytes(heads, { headDim: 128, context: T, sinkSize: 64, recentSize: 256 }), "engine and src/schedule/kv.ts agree");
      assert.ok(bytes.allocated >= bytes.total, `${name} T=${T}: allocated ${bytes.allocated} < held ${bytes.total}`);
      // Pages are whole: at most one partly used page per layer-shard and K/V, plus the rings.
      assert.ok(bytes.allocated - bytes.total <= 2 * 2 * 128 * (Hkv * 32 * 512 + Hkv * 32 * 320), "allocation overhead bounded by a page + a ring per head");
    }
    const last = seen[seen.length - 1]!;
    const ratio = last.bytes.total / last.bytes.fullAttention;
    assert.ok(Math.abs(ratio - (1 - s)) < 0.1, `${name}: Duo/full = ${ratio.toFixed(3)} approaches the retrieval fraction ${1 - s}`);
  }
});

test("f16 storage holds exactly half of f32", { skip: skipNoPatterns }, async () => {
  const [name, Hkv, s] = cases[0]!;
  const a = await grow(name, Hkv, s, "f16", [700]), b = await grow(name, Hkv, s, "f32", [700]);
  assert.equal(a.seen[0]!.bytes.total * 2, b.seen[0]!.bytes.total);
  assert.equal(a.seen[0]!.bytes.allocated * 2, b.seen[0]!.bytes.allocated);
});

test("int8 and int4 caches: bytes() is the §4.4 formula with each record's scale (and min), kv.ts agrees", { skip: skipNoPatterns }, async () => {
  const [name, Hkv, s] = cases[0]!;
  for (const dtype of ["int8", "int4"] as const) {
    const { seen, heads } = await grow(name, Hkv, s, dtype, [1, 321, 700]);
    for (const { T, bytes, want } of seen) {
      assert.equal(bytes.retrieval, want.retrieval, `${dtype} T=${T} retrieval`);
      assert.equal(bytes.streaming, want.streaming, `${dtype} T=${T} streaming`);
      assert.equal(bytes.fullAttention, want.full, `${dtype} T=${T} full`);
      assert.equal(bytes.total, kvBytes(heads, { headDim: 128, context: T, sinkSize: 64, recentSize: 256, dtype }), `${dtype} T=${T}: kv.ts`);
      assert.ok(bytes.allocated >= bytes.total);
    }
  }
  // int4 at D = 128 holds 68 bytes where bf16 holds 256 (upstream's 3.76x)
  const a = await grow(name, Hkv, s, "int4", [700]), b = await grow(name, Hkv, s, "bf16", [700]);
  assert.equal(a.seen[0]!.bytes.total * 256, b.seen[0]!.bytes.total * 68);
});
