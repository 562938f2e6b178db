// The engine on the reference backend against the independent float64 oracle (test/helpers/attention.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { DuoAttention } from "../src/engine/duo.ts";
import { ReferenceBackend } from "../src/backend/reference.ts";
import { isQuantized, roundToDtype, type KvDtype } from "../src/dtype.ts";
import { roundTrip } from "../src/quant.ts";
import { causal, compare, maskedAttention, upstreamVisible, windowVisible } from "./helpers/attention.ts";
import { randomArray, rng } from "./helpers/random.ts";

interface Case {
  Hq: number; Hkv: number; D: number; S: number; R: number; chunks: number[];
  mode: "upstream" | "window"; dtype: KvDtype; mask: boolean[]; pageSize?: number; shards?: number;
}

/** Run `chunks` through one layer; return the engine output and the oracle's, for every token. */
async function runCase(c: Case, seed: number): Promise<{ got: Float32Array; want: Float64Array; N: number }> {
  const N = c.chunks.reduce((a, b) => a + b, 0);
  const q = randomArray(N * c.Hq * c.D, seed);
  // Stored K/V are rounded to the storage dtype: the oracle sees the same rounded values. Quantized: the engine gets
  // the raw values (re-quantizing decoded values is not the identity) and the oracle each head's row through the
  // codec and back (src/quant.ts).
  const raw = (s: number) => (isQuantized(c.dtype) ? randomArray(N * c.Hkv * c.D, s) : roundToDtype(randomArray(N * c.Hkv * c.D, s), c.dtype));
  const stored = (x: Float32Array) => (isQuantized(c.dtype) ? roundTrip(c.dtype, x, c.D) : x);
  const k = raw(seed + 1), v = raw(seed + 2);
  const backend = new ReferenceBackend(c.shards ?? 1);
  const duo = await DuoAttention.create({
    shape: { numLayers: 1, numHeads: c.Hq, numKvHeads: c.Hkv, headDim: c.D }, heads: [c.mask],
    sinkSize: c.S, recentSize: c.R, kvDtype: c.dtype, backend, prefill: c.mode, pageSize: c.pageSize ?? 5,
  });
  const seq = duo.sequence();
  const got = new Float32Array(N * c.Hq * c.D);
  const starts: number[] = [];
  let pos = 0;
  for (const T of c.chunks) {
    const out = await seq.attend(0, q.slice(pos * c.Hq * c.D, (pos + T) * c.Hq * c.D),
      k.slice(pos * c.Hkv * c.D, (pos + T) * c.Hkv * c.D), v.slice(pos * c.Hkv * c.D, (pos + T) * c.Hkv * c.D));
    got.set(out, pos * c.Hq * c.D);
    for (let i = 0; i < T; i++) starts.push(pos);
    pos += T;
  }
  const stream = c.mode === "window" ? windowVisible(c.S, c.R) : upstreamVisible(c.S, c.R, (t) => starts[t]!);
  const want = maskedAttention(q, stored(k), stored(v), N, c.Hq, c.Hkv, c.D, [...Array(N).keys()], (h) => (c.mask[h] ? causal : stream));
  await duo.dispose();
  return { got, want, N };
}

function assertClose(got: Float32Array, want: Float64Array, what: string): void {
  // f32 output of a float64 computation: per element |a−b| ≤ 1e-6 + 1e-5·|b| (only the final f32 rounding differs)
  const { maxAbs, bad } = compare(got, want, 1e-6, 1e-5);
  assert.equal(bad, -1, `${what}: first bad index ${bad} (got ${got[bad]}, want ${want[bad]}), max abs err ${maxAbs}`);
}

test("retrieval heads = full causal attention, streaming heads = the mode's mask (GQA G=1,4,8; f32/f16/bf16/int8/int4)", async () => {
  const r = rng(7);
  let seed = 100;
  for (const [Hq, Hkv] of [[4, 4], [8, 2], [8, 1]] as const) {
    for (const dtype of ["f32", "f16", "bf16", "int8", "int4"] as const) {
      for (const mode of ["upstream", "window"] as const) {
        const mask = Array.from({ length: Hkv }, (_, h) => (Hkv === 1 ? r() < 0.5 : h % 2 === 0));
        const c: Case = { Hq, Hkv, D: 16, S: 3, R: 6, chunks: [7, 9, 1, 12, 1, 1, 1], mode, dtype, mask };
        const { got, want } = await runCase(c, seed++);
        assertClose(got, want, `Hq=${Hq} Hkv=${Hkv} ${dtype} ${mode}`);
      }
    }
  }
});

test("layers with 0 and with all retrieval heads; head dims 64 and 128", async () => {
  for (const mask of [[false, false], [true, true]]) {
    for (const D of [64, 128]) {
      const { got, want } = await runCase({ Hq: 4, Hkv: 2, D, S: 2, R: 4, chunks: [5, 8, 1, 1], mode: "upstream", dtype: "bf16", mask }, D + 1);
      assertClose(got, want, `mask ${mask} D=${D}`);
    }
  }
});

test("pages striped over several backend shards, merged by log-sum-exp, give the one-shard result", async () => {
  for (const mode of ["upstream", "window"] as const) {
    const c: Case = { Hq: 8, Hkv: 4, D: 8, S: 2, R: 3, chunks: [6, 4, 1, 1, 9, 1], mode, dtype: "f32", mask: [true, false, false, true], pageSize: 2 };
    const one = await runCase(c, 5);
    for (const shards of [2, 3]) {
      const many = await runCase({ ...c, shards }, 5);
      assertClose(many.got, many.want, `${shards} shards, ${mode}`);
      const { maxAbs, bad } = compare(many.got, one.got, 1e-6, 1e-5);
      assert.equal(bad, -1, `${shards} shards vs 1: max abs difference ${maxAbs}`);
    }
  }
  // A layer whose retrieval heads have fewer pages than there are shards (some shards hold none yet).
  const few = await runCase({ Hq: 4, Hkv: 2, D: 8, S: 1, R: 2, chunks: [1, 1, 3], mode: "upstream", dtype: "bf16", mask: [true, true], pageSize: 8, shards: 3 }, 9);
  assertClose(few.got, few.want, "pages < shards");
});

test("all-retrieval equals full attention; all-streaming with S + R ≥ context is bit-identical to it", async () => {
  const base = { Hq: 4, Hkv: 2, D: 32, chunks: [9, 1, 1, 1], mode: "upstream" as const, dtype: "f32" as const, pageSize: 64 };
  const full = await runCase({ ...base, S: 4, R: 8, mask: [true, true] }, 11);
  assertClose(full.got, maskedAttention(randomArray(12 * 4 * 32, 11), randomArray(12 * 2 * 32, 12), randomArray(12 * 2 * 32, 13), 12, 4, 2, 32, [...Array(12).keys()], () => causal), "all retrieval vs full");
  const str = await runCase({ ...base, S: 4, R: 8, mask: [false, false] }, 11);
  assert.deepEqual(str.got, full.got, "nothing evicted: streaming heads see the same keys in the same order");
});

test("thousands of decode steps after a chunked prefill keep matching the oracle; streaming memory stays bounded", async () => {
  const Hq = 4, Hkv = 2, D = 8, S = 4, R = 16, prefill = [24, 24, 16], steps = 2000;
  const mask = [true, false];
  const N = 64 + steps;
  const q = randomArray(N * Hq * D, 21), k = randomArray(N * Hkv * D, 22), v = randomArray(N * Hkv * D, 23);
  const duo = await DuoAttention.create({ shape: { numLayers: 1, numHeads: Hq, numKvHeads: Hkv, headDim: D }, heads: [mask], sinkSize: S, recentSize: R, kvDtype: "f32", backend: "reference", pageSize: 256 });
  const seq = duo.sequence();
  const onlyStreaming = await DuoAttention.create({ shape: { numLayers: 1, numHeads: Hq, numKvHeads: Hkv, headDim: D }, heads: [[false, false]], sinkSize: S, recentSize: R, kvDtype: "f32", backend: "reference" });
  const sseq = onlyStreaming.sequence();
  const starts: number[] = [];
  let pos = 0, allocatedAfterPrefill = 0;
  const check = new Set([64, 65, 300, 1000, N - 1]);
  for (const T of [...prefill, ...new Array(steps).fill(1)]) {
    const sl = (a: Float32Array, H: number) => a.slice(pos * H * D, (pos + T) * H * D);
    const out = await seq.attend(0, sl(q, Hq), sl(k, Hkv), sl(v, Hkv));
    await sseq.attend(0, sl(q, Hq), sl(k, Hkv), sl(v, Hkv));
    for (let i = 0; i < T; i++) starts.push(pos);
    if (check.has(pos)) {
      const want = maskedAttention(q, k, v, N, Hq, Hkv, D, [pos], (h) => (mask[h] ? causal : upstreamVisible(S, R, (t) => starts[t]!)));
      assertClose(out, want, `decode position ${pos}`);
    }
    pos += T;
    if (pos === 64) allocatedAfterPrefill = sseq.bytes().allocated;
  }
  assert.equal(seq.length(0), N);
  assert.equal(sseq.bytes().allocated, allocatedAfterPrefill, "a streaming-only cache never grows past its ring");
  assert.equal(sseq.bytes().total, 2 * 4 * D * Hkv * (S + R));
  await duo.dispose();
  await onlyStreaming.dispose();
});

test("fill stores K/V exactly as attend would: later decode steps give identical outputs", async () => {
  const Hq = 4, Hkv = 2, D = 8, N = 40;
  const shape = { numLayers: 2, numHeads: Hq, numKvHeads: Hkv, headDim: D };
  const mk = () => DuoAttention.create({ shape, heads: [[true, false], [false, false]], sinkSize: 3, recentSize: 5, kvDtype: "bf16", backend: "reference", pageSize: 6 });
  const q = randomArray((N + 3) * Hq * D, 31), k = randomArray((N + 3) * Hkv * D, 32), v = randomArray((N + 3) * Hkv * D, 33);
  const a = (await mk()).sequence(), b = (await mk()).sequence();
  for (const layer of [0, 1]) {
    for (const [s, e] of [[0, 17], [17, 30], [30, N]] as const) {
      await a.attend(layer, q.slice(s * Hq * D, e * Hq * D), k.slice(s * Hkv * D, e * Hkv * D), v.slice(s * Hkv * D, e * Hkv * D));
      await b.fill(layer, k.slice(s * Hkv * D, e * Hkv * D), v.slice(s * Hkv * D, e * Hkv * D));
    }
  }
  assert.deepEqual(b.bytes(), a.bytes());
  for (let t = N; t < N + 3; t++) {
    for (const layer of [0, 1]) {
      const args = [q.slice(t * Hq * D, (t + 1) * Hq * D), k.slice(t * Hkv * D, (t + 1) * Hkv * D), v.slice(t * Hkv * D, (t + 1) * Hkv * D)] as const;
      assert.deepEqual(await b.attend(layer, ...args), await a.attend(layer, ...args), `decode at ${t}, layer ${layer}`);
    }
  }
});
