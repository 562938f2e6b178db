import assert from "node:assert/strict";
import { test } from "node:test";
import { gqaDecodeModel, ONNX_FLOAT } from "../bench/peers/onnx-graph.ts";
import { compareNativeOrt, formatRow } from "../bench/peers/native-vs-ort.ts";
import { loadOrtPeer, type OrtFlavor } from "../bench/peers/ort.ts";
import { PlainDecode } from "../bench/peers/plain-attention.ts";
import { probeNative } from "../src/backend/native.ts";
import { randomData } from "../src/demo/stack.ts";
import { runtime } from "../src/runtime.ts";
import { compare, maskedAttention } from "./helpers/attention.ts";

/** Protobuf fields of a message: field number → values (numbers for varint/fixed32, bytes for length-delimited). */
function fields(buf: Uint8Array): Map<number, (number | Uint8Array)[]> {
  const out = new Map<number, (number | Uint8Array)[]>();
  let i = 0;
  const varint = () => {
    let n = 0, mul = 1, b: number;
    do {
      b = buf[i++]!;
      n += (b & 0x7f) * mul;
      mul *= 128;
    } while (b & 0x80);
    return n;
  };
  while (i < buf.length) {
    const key = varint(), field = Math.floor(key / 8), wire = key % 8;
    let v: number | Uint8Array;
    if (wire === 0) v = varint();
    else if (wire === 2) {
      const len = varint();
      v = buf.subarray(i, i + len);
      i += len;
    } else if (wire === 5) {
      v = new DataView(buf.buffer, buf.byteOffset + i, 4).getFloat32(0, true);
      i += 4;
    } else throw new Error(`unexpected wire type ${wire}`);
    if (!out.has(field)) out.set(field, []);
    out.get(field)!.push(v);
  }
  assert.equal(i, buf.length, "message ends on a field boundary");
  return out;
}
const str = (v: number | Uint8Array | undefined) => new TextDecoder().decode(v as Uint8Array);

test("bench onnx: the hand-encoded model is a valid protobuf with one com.microsoft GroupQueryAttention node", () => {
  const model = fields(gqaDecodeModel({ numHeads: 32, numKvHeads: 8, headDim: 128, elemType: ONNX_FLOAT }));
  assert.deepEqual(model.get(1), [10], "ir_version");
  const opsets = model.get(8)!.map((o) => fields(o as Uint8Array)).map((f) => [str(f.get(1)?.[0] ?? new Uint8Array()), f.get(2)![0]]);
  assert.deepEqual(opsets, [["", 21], ["com.microsoft", 1]]);
  const graph = fields(model.get(7)![0] as Uint8Array);
  const nodes = graph.get(1)!.map((n) => fields(n as Uint8Array));
  assert.equal(nodes.length, 1);
  const node = nodes[0]!;
  assert.equal(str(node.get(4)![0]), "GroupQueryAttention");
  assert.equal(str(node.get(7)![0]), "com.microsoft");
  assert.deepEqual(node.get(1)!.map(str), ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length"]);
  assert.deepEqual(node.get(2)!.map(str), ["output", "present_key", "present_value"]);
  const attrs = Object.fromEntries(node.get(5)!.map((a) => fields(a as Uint8Array)).map((a) => [str(a.get(1)![0]), a.get(3)?.[0] ?? a.get(2)?.[0]]));
  assert.equal(attrs.num_heads, 32);
  assert.equal(attrs.kv_num_heads, 8);
  assert.ok(Math.abs((attrs.scale as number) - 1 / Math.sqrt(128)) < 1e-7);
  const inputs = graph.get(11)!.map((v) => str(fields(v as Uint8Array).get(1)![0]));
  assert.deepEqual(inputs, ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length"]);
  assert.equal(graph.get(12)!.length, 3, "three graph outputs");
});

test("bench peers: the plain-TypeScript decode matches the float64 attention oracle", () => {
  const shape = { numHeads: 8, numKvHeads: 2, headDim: 16 };
  const T = 37;
  const plain = new PlainDecode(shape, T, (a, seed) => a.set(randomData(a.length, seed)));
  const q = randomData(8 * 16, 5), out = new Float32Array(q.length);
  plain.attend(q, out);
  // The oracle wants token-major [T, Hkv, D] keys and queries for every position; only the last row is used.
  const tokMajor = (a: Float32Array) => {
    const r = new Float32Array(a.length);
    for (let h = 0; h < 2; h++) for (let t = 0; t < T; t++) r.set(a.subarray((h * T + t) * 16, (h * T + t + 1) * 16), (t * 2 + h) * 16);
    return r;
  };
  const qs = new Float32Array(T * 8 * 16);
  qs.set(q, (T - 1) * 8 * 16);
  const want = maskedAttention(qs, tokMajor(plain.k), tokMajor(plain.v), T, 8, 2, 16, [T - 1], () => (t, p) => p <= t);
  const c = compare(out, want, 1e-5, 1e-4);
  assert.equal(c.bad, -1, `max |err| ${c.maxAbs}`);
});

/** Whether a package loads here; the reason as a skip message when it does not. */
async function loads(flavor: OrtFlavor): Promise<string | false> {
  try {
    await import(flavor);
    return false;
  } catch (e) {
    return `skipped: ${flavor} does not load in this runtime (${String((e as Error).message).split("\n")[0]})`;
  }
}

for (const flavor of ["onnxruntime-node", "onnxruntime-web"] as const) {
  test(`bench peers: ${flavor} GroupQueryAttention on the hand-encoded graph matches the plain-TypeScript decode`, { skip: await loads(flavor) }, async () => {
    const shape = { numHeads: 8, numKvHeads: 2, headDim: 16 };
    const past = 21;
    const fill = (a: Float32Array, seed: number) => a.set(randomData(a.length, seed));
    const peer = await loadOrtPeer(flavor, shape, 1, "float32");
    try {
      const q = randomData(8 * 16, 5);
      const got = await peer.decodeStep(past, fill, q).run();
      // The same cache as ORT sees: the past (BNSH) plus the new token's K/V (seeds 12, 13) appended per head.
      const plain = new PlainDecode(shape, past + 1, () => {});
      const pk = new Float32Array(2 * past * 16), pv = new Float32Array(2 * past * 16), nk = new Float32Array(32), nv = new Float32Array(32);
      fill(pk, 1), fill(pv, 2), fill(nk, 12), fill(nv, 13);
      for (let h = 0; h < 2; h++) {
        plain.k.set(pk.subarray(h * past * 16, (h + 1) * past * 16), h * (past + 1) * 16);
        plain.v.set(pv.subarray(h * past * 16, (h + 1) * past * 16), h * (past + 1) * 16);
        plain.k.set(nk.subarray(h * 16, (h + 1) * 16), (h * (past + 1) + past) * 16);
        plain.v.set(nv.subarray(h * 16, (h + 1) * 16), (h * (past + 1) + past) * 16);
      }
      const want = new Float32Array(q.length);
      plain.attend(q, want);
      const c = compare(got, want, 1e-5, 1e-4);
      assert.equal(c.bad, -1, `max |err| ${c.maxAbs}`);
    } finally {
      await peer.release();
    }
  });
}

const nativeProbe = await probeNative({});
const nativeOrtSkip = !nativeProbe.usable ? `skipped: native backend not usable here (${nativeProbe.reason})` : await loads("onnxruntime-node");

test("bench peers: native vs onnxruntime-node on a tiny shape: outputs agree, one row per threads × context, ratios from the medians", { skip: nativeOrtSkip }, async () => {
  // 2 KV heads, one retrieval and one streaming (S + R = 12 < context): Duo reads 40 + 12 token rows, full 2 × 40.
  const shape = { numLayers: 2, numHeads: 8, numKvHeads: 2, headDim: 16 };
  // onnxruntime-node's f16 tensors fail under Bun and Deno ("not enough space: expected 256, got 0"): f16 on Node only.
  for (const dtype of runtime().name === "node" ? (["f32", "f16"] as const) : (["f32"] as const)) {
    const rows = await compareNativeOrt({ shape, retrieval: [true, false], sinkSize: 4, recentSize: 8, contexts: [40], threads: [1, 2], dtype, budgetMs: 20 });
    assert.deepEqual(rows.map((r) => [r.threads, r.context, r.dtype]), [[1, 40, dtype], [2, 40, dtype]]);
    for (const r of rows) {
      assert.ok(r.maxAbsDiff <= (dtype === "f32" ? 1e-4 : 5e-3), `max |diff| ${r.maxAbsDiff}`);
      assert.ok(r.rounds >= 20 && r.fullMinMs > 0 && r.duoMinMs > 0 && r.ortMinMs > 0, JSON.stringify(r));
      assert.ok(r.fullMinMs <= r.fullMs && r.duoMinMs <= r.duoMs && r.ortMinMs <= r.ortMs, JSON.stringify(r));
      assert.equal(r.byteRatio, 80 / 52);
      assert.equal(r.fullVsOrt, r.ortMs / r.fullMs);
      assert.equal(r.ofByteRatio, r.fullMs / r.duoMs / r.byteRatio);
      assert.equal(r.fullVsOrtBest, r.ortMinMs / r.fullMinMs);
      const lines = formatRow(r);
      assert.match(lines[1]!, /native full vs onnxruntime-node: \d+\.\d\dx \(target >= 1\.5x\); fastest rounds \d+\.\d\dx$/);
      assert.match(lines[2]!, /KV-byte ratio 1\.54x: \d+\.\d\d of it \(target >= 0\.9\); fastest rounds \d+\.\d\d$/);
    }
  }
  await assert.rejects(compareNativeOrt({ shape, retrieval: [true], sinkSize: 4, recentSize: 8, contexts: [40], threads: [1], dtype: "f32", budgetMs: 20 }), /one per KV head \(2\)/);
});
