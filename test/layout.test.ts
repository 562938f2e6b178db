// The tiled page layout (src/backend/layout.ts) as a contract: where appended bytes land, that the engine gives the
// same attention over tiled and token-major pages, and the errors for buffers that cannot be tiled.
//   Bytes: the reference and the wasm backend (both builds: duo.wasm, the scalar twins) append K and V rows with skips
//   into the K64 and V64 halves of one T64 buffer of 3 heads; every element must sit at kvIndex(layout, …) and hold
//   the dtype's rounding of its source value (f32: the value itself), and every other element stay 0. A
//   self-consistent but different layout would pass the attention tests, so this pins the formula.
//   Engine: the same chunked prefill and decode steps on the reference backend asking for T64 pages and for NHD
//   pages agree to 1e-6 (both float64 inside; only the storage order differs).
import { test } from "node:test";
import assert from "node:assert/strict";
import { bufferBytes, kvIndex } from "../src/backend/layout.ts";
import { ReferenceBackend } from "../src/backend/reference.ts";
import type { Backend } from "../src/backend/types.ts";
import { createWasmBackend, probeWasm } from "../src/backend/wasm.ts";
import { bf16BitsToF32, f32ToBf16Bits, type KvDtype } from "../src/dtype.ts";
import { DuoAttention } from "../src/engine/duo.ts";
import { rejectsDuo } from "./helpers/errors.ts";
import { randomArray } from "./helpers/random.ts";

const probe = await probeWasm({});
const skip = probe.usable ? false : `skipped: wasm backend not usable here (${probe.reason})`;

const H = 3, D = 16, ROWS = 128, T = 100;

/** Append T tokens of K and of V (every 7th skipped, the rest into scrambled rows) into one T64 buffer and return its
 *  elements as numbers. */
async function appendAndRead(b: Backend, dtype: KvDtype, k: Float32Array, v: Float32Array, rows: Int32Array): Promise<Float64Array> {
  const es = dtype === "f32" ? 4 : 2, bytes = bufferBytes("T64", ROWS, H, D, es);
  const dst = b.alloc(0, bytes);
  const base = { kind: "append" as const, dst, dtype, rowHeads: H, headDim: D, srcHeads: 4, heads: Int32Array.of(3, 0, 2), rows };
  await b.run(0, [{ ...base, src: k, layout: "K64" }, { ...base, src: v, layout: "V64" }]);
  const raw = await b.read(0, dst, 0, bytes);
  b.free(0, dst);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  return Float64Array.from({ length: bytes / es }, (_, i) => (dtype === "f32" ? view.getFloat32(i * 4, true) : bf16BitsToF32(view.getUint16(i * 2, true))));
}

async function checkBytes(b: Backend, who: string): Promise<void> {
  const src = { K64: randomArray(T * 4 * D, 11), V64: randomArray(T * 4 * D, 12) };
  const rows = Int32Array.from({ length: T }, (_, t) => (t % 7 === 3 ? -1 : (t * 37) % ROWS));
  for (const dtype of ["f32", "bf16"] as const) {
    const got = await appendAndRead(b, dtype, src.K64, src.V64, rows);
    const want = new Float64Array(got.length), heads = [3, 0, 2];
    for (const layout of ["K64", "V64"] as const) {
      rows.forEach((r, t) => {
        if (r < 0) return;
        for (let j = 0; j < H; j++) for (let d = 0; d < D; d++) {
          const x = src[layout][(t * 4 + heads[j]!) * D + d]!;
          want[kvIndex(layout, H, ROWS, D, r, j, d)] = dtype === "f32" ? x : bf16BitsToF32(f32ToBf16Bits(x));
        }
      });
    }
    for (let i = 0; i < want.length; i++) {
      assert.equal(got[i], want[i], `${who} ${dtype}: element ${i} is ${got[i]}, layout.ts puts ${want[i]} there`);
    }
  }
}

test("T64 keeps each head's rows together: head j's tiles of all blocks, K then V, then head j + 1's", () => {
  const tile = 64 * D, blocks = ROWS / 64;
  for (let j = 0; j < H; j++) {
    for (let b = 0; b < blocks; b++) {
      assert.equal(kvIndex("K64", H, ROWS, D, b * 64, j, 0), (j * blocks + b) * 2 * tile, `K tile of head ${j}, block ${b}`);
      assert.equal(kvIndex("V64", H, ROWS, D, b * 64, j, 0), ((j * blocks + b) * 2 + 1) * tile, `V tile of head ${j}, block ${b}`);
    }
  }
  // the last element of head 0 (row ROWS - 1, element D - 1 of its V tile) sits just before head 1's first
  assert.equal(kvIndex("V64", H, ROWS, D, ROWS - 1, 0, D - 1) + 1, kvIndex("K64", H, ROWS, D, 0, 1, 0));
});

test("T64 bytes: reference appends put each element where layout.ts says", async () => {
  await checkBytes(new ReferenceBackend(), "reference");
});

test("T64 bytes: wasm appends (SIMD and scalar builds) put each element where layout.ts says", { skip }, async () => {
  for (const kernels of ["auto", "scalar"] as const) {
    const b = await createWasmBackend({ threads: 0, kernels });
    await checkBytes(b, `wasm ${kernels}`);
    await b.dispose();
  }
});

test("engine on the reference backend: T64 pages and NHD pages give the same prefill and decode outputs", async () => {
  const shape = { numLayers: 1, numHeads: 8, numKvHeads: 2, headDim: 16 };
  const run = async (pages: "T64" | "NHD") => {
    const backend = new ReferenceBackend(1, pages);
    assert.equal(backend.pageLayout("bf16", 16, 64, 4), pages);
    const e = await DuoAttention.create({ shape, heads: [[true, false]], sinkSize: 4, recentSize: 8, kvDtype: "bf16", backend, pageSize: 64 });
    const seq = e.sequence(), outs: Float32Array[] = [];
    for (const [i, n] of [70, 1, 1, 60].entries()) {
      outs.push(await seq.attend(0, randomArray(n * 8 * 16, 100 + i), randomArray(n * 2 * 16, 200 + i), randomArray(n * 2 * 16, 300 + i)));
    }
    await e.dispose();
    return outs;
  };
  const tiled = await run("T64"), plain = await run("NHD");
  tiled.forEach((o, c) => o.forEach((x, i) => assert.ok(Math.abs(x - plain[c]![i]!) <= 1e-6, `call ${c} element ${i}: T64 ${x}, NHD ${plain[c]![i]}`)));
});

test("buffers that cannot be tiled, and T64 segments over two buffers, are refused with what is needed, and nothing is written", { skip }, async () => {
  const b = await createWasmBackend({ threads: 0 });
  const ref = new ReferenceBackend();
  for (const be of [b, ref] as Backend[]) {
    const odd = be.alloc(0, 100 * H * D * 2); // 100 rows: not whole 64-row tiles
    const base = { kind: "append" as const, dtype: "bf16" as const, rowHeads: H, srcHeads: H, heads: Int32Array.of(0, 1, 2), rows: Int32Array.of(0) };
    await rejectsDuo(be.run(0, [{ ...base, dst: odd, headDim: D, src: new Float32Array(H * D), layout: "K64" }]), "INVALID_ARGUMENT", /multiple of 64 rows/);
    const narrow = be.alloc(0, bufferBytes("T64", 64, H, 36, 2)); // head dim 36: not a multiple of 8
    await rejectsDuo(be.run(0, [{ ...base, dst: narrow, headDim: 36, src: new Float32Array(H * 36), layout: "V64" }]), "INVALID_ARGUMENT", /headDim a multiple of 8/);
    const raw = await be.read(0, odd, 0, 100 * H * D * 2);
    assert.ok(raw.every((x) => x === 0), "a refused append wrote into the buffer");
    const q = new Float32Array(H * 4 * D), out = new Float32Array(H * 4 * D);
    await rejectsDuo(be.run(0, [{
      kind: "attend", q, T: 1, numHeads: H * 4, headDim: D, group: 4, qHeads: Int32Array.of(0), kvSlots: Int32Array.of(0),
      segments: [{ k: odd, v: odd, dtype: "bf16", rowHeads: H, rowStart: 0, rowCount: 10, positions: 0, layout: "T64" }],
      qPos0: 10, window: null, out,
    }]), "INVALID_ARGUMENT", /multiple of 64 rows/);
    const one = be.alloc(0, bufferBytes("T64", 64, H, D, 2)), other = be.alloc(0, bufferBytes("T64", 64, H, D, 2));
    await rejectsDuo(be.run(0, [{
      kind: "attend", q, T: 1, numHeads: H * 4, headDim: D, group: 4, qHeads: Int32Array.of(0), kvSlots: Int32Array.of(0),
      segments: [{ k: one, v: other, dtype: "bf16", rowHeads: H, rowStart: 0, rowCount: 10, positions: 0, layout: "T64" }],
      qPos0: 10, window: null, out,
    }]), "INVALID_ARGUMENT", /T64, which keeps K and V in one buffer: k and v must be the same handle, got k = \d+, v = \d+/);
    assert.ok(out.every((x) => x === 0), "a refused attend wrote its output");
  }
  await b.dispose();
});
