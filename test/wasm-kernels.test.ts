// The wasm kernels one by one, in both builds (duo.wasm with SIMD128 and duo-scalar.wasm, the scalar twins):
//   append: f32 -> f16 / bf16 must be bit-identical to src/dtype.ts (round to nearest even) for every f16 / bf16 value,
//     the halfway points between neighbours and one f32 ulp either side of them, subnormals, overflow, ±0, ±Inf and
//     random bit patterns; NaN must stay a quiet NaN (its sign and payload are not compared: JS engines may
//     canonicalise a NaN read from a Float32Array, so dtype.ts itself cannot promise them);
//   f16 widening in attention: a buffer that received Inf/NaN switches to the exact conversion (checked via attend),
//     over token-major buffers and over tiled (T64) ones with G = 4 (decode through the tiled path, prefill);
//   merge (duo_merge) against reference.ts mergeState: |a − b| ≤ 1e-6 + 1e-5·|b| (f32 weights vs float64), with empty
//     (lse = −Infinity) states on either side and on both;
//   tiled bounds, at the C ABI: a tiled buffer's row count (duo_append's buffer_rows, duo_segment.buffer_rows) places
//     each head's tiles, so one that is not whole tiles or does not cover the rows is refused before anything is
//     written.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mergeState, ReferenceBackend } from "../src/backend/reference.ts";
import type { Backend, Op } from "../src/backend/types.ts";
import { createWasmBackend, loadWasmModule, probeWasm, type WasmKernels } from "../src/backend/wasm.ts";
import { instantiate } from "../src/backend/wasm-exec.ts";
import { f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, type KvDtype } from "../src/dtype.ts";
import { bufferBytes } from "../src/backend/layout.ts";
import { SEGMENT_WORDS } from "../src/backend/abi.ts";
import { randomArray, rng } from "./helpers/random.ts";

const probe = await probeWasm({});
const skipSimd = probe.usable ? false : `skipped: wasm backend not usable here (${probe.reason})`;

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
const fromBits = (b: number) => ((u32[0] = b >>> 0), f32[0]!);

/** f32 inputs that probe every rounding decision of f32 -> f16 and f32 -> bf16. */
function conversionInputs(): Float32Array {
  const xs: number[] = [];
  for (let h = 0; h < 0x10000; h++) {
    const x = f16BitsToF32(h);
    if (Number.isNaN(x)) continue;
    f32[0] = x;
    const b = u32[0]!;
    // the f16 value, the halfway point to the next f16 (13 dropped bits) and one f32 ulp either side of it
    xs.push(x, fromBits(b + 0x1000), fromBits(b + 0xfff), fromBits(b + 0x1001));
    // the same for bf16 around the f32 with these top 16 bits
    const hb = (h << 16) >>> 0;
    xs.push(fromBits(hb), fromBits(hb + 0x8000), fromBits(hb + 0x7fff), fromBits(hb + 0x8001));
  }
  const r = rng(42);
  for (let i = 0; i < 60000; i++) xs.push(fromBits(Math.floor(r() * 2 ** 32)));
  // subnormal f32, the f16 subnormal range and its edges, overflow, signed zeros and infinities
  xs.push(fromBits(1), fromBits(0x807fffff), 2 ** -24, 2 ** -25, 3 * 2 ** -25, 2 ** -14, 65504, 65519.99, 65520, 1e30, -1e30);
  xs.push(0, -0, Infinity, -Infinity, fromBits(0x7fc00000), fromBits(0xffc00001), fromBits(0x7f800001));
  while (xs.length % 64) xs.push(1.5);
  return Float32Array.from(xs);
}

async function appendAndRead(b: Backend, dtype: "f16" | "bf16", src: Float32Array): Promise<Uint16Array> {
  const D = 64, T = src.length / D;
  const dst = b.alloc(0, src.length * 2);
  const op: Op = { kind: "append", dst, dtype, rowHeads: 1, headDim: D, src, srcHeads: 1, heads: Int32Array.of(0), rows: Int32Array.from({ length: T }, (_, i) => i) };
  await b.run(0, [op]);
  const bytes = await b.read(0, dst, 0, src.length * 2);
  b.free(0, dst);
  return new Uint16Array(bytes.buffer, bytes.byteOffset, src.length);
}

const relaxed = await probeWasm({ kernels: "relaxed" });
const skipRelaxed = relaxed.usable ? false : `skipped: ${relaxed.reason}`;

for (const kernels of ["simd", "relaxed", "scalar"] as WasmKernels[]) {
  const skip = kernels === "simd" ? skipSimd : kernels === "relaxed" ? skipRelaxed : false;

  test(`append (${kernels}): f32 -> f16 and bf16 bytes are bit-identical to src/dtype.ts, NaN stays a quiet NaN`, { skip }, async () => {
    const b = await createWasmBackend({ threads: 0, kernels });
    const src = conversionInputs();
    for (const dtype of ["f16", "bf16"] as const) {
      const got = await appendAndRead(b, dtype, src);
      const toBits = dtype === "f16" ? f32ToF16Bits : f32ToBf16Bits;
      const expMask = dtype === "f16" ? 0x7c00 : 0x7f80, quiet = dtype === "f16" ? 0x200 : 0x40;
      let bad = 0, first = "";
      for (let i = 0; i < src.length; i++) {
        const x = src[i]!, g = got[i]!;
        const ok = Number.isNaN(x)
          ? (g & expMask) === expMask && (g & quiet) !== 0
          : g === toBits(x);
        if (!ok && bad++ === 0) first = `x = ${x} (bits 0x${(f32.fill(x), u32[0]!).toString(16)}): got 0x${g.toString(16)}, dtype.ts 0x${toBits(x).toString(16)}`;
      }
      assert.equal(bad, 0, `${dtype}: ${bad} of ${src.length} conversions differ from dtype.ts; first: ${first}`);
    }
    await b.dispose();
  });

  test(`merge (${kernels}): duo_merge equals mergeState, including empty states`, { skip }, async () => {
    const ex = await instantiate(await loadWasmModule({ kernels }));
    for (const D of [128, 36]) {
      const n = 37;
      const oA = randomArray(n * D, 1), oB = randomArray(n * D, 2);
      const lseA = randomArray(n, 3, 20), lseB = randomArray(n, 4, 20);
      lseA[3] = -Infinity; lseB[4] = -Infinity; lseA[5] = -Infinity; lseB[5] = -Infinity; lseB[6] = lseA[6]! - 80;
      const want = mergeState(oA, lseA, oB, lseB, D);
      const floats = n * D * 3 + n * 3;
      const base = ex.duo_alloc(floats * 4 + 6 * 64) >>> 0;
      const at = [0, n * D, 2 * n * D].map((o) => base + o * 4), lat = [0, n, 2 * n].map((o) => base + (3 * n * D + o) * 4);
      const mem = () => new Float32Array(ex.memory.buffer);
      mem().set(oA, at[0]! / 4); mem().set(oB, at[1]! / 4); mem().set(lseA, lat[0]! / 4); mem().set(lseB, lat[1]! / 4);
      mem().fill(NaN, at[2]! / 4, at[2]! / 4 + n * D); mem().fill(NaN, lat[2]! / 4, lat[2]! / 4 + n);
      ex.duo_merge(at[2]!, lat[2]!, at[0]!, lat[0]!, at[1]!, lat[1]!, n, D);
      const o = mem().slice(at[2]! / 4, at[2]! / 4 + n * D), lse = mem().slice(lat[2]! / 4, lat[2]! / 4 + n);
      let maxO = 0, maxL = 0;
      for (let i = 0; i < n; i++) {
        const b = want.lse[i]!, a = lse[i]!;
        if (b === -Infinity) assert.equal(a, -Infinity, `row ${i}: lse ${a}, mergeState -Infinity`);
        else {
          maxL = Math.max(maxL, Math.abs(a - b));
          assert.ok(Math.abs(a - b) <= 1e-6 + 1e-5 * Math.abs(b), `D=${D} row ${i}: lse ${a} vs ${b}`);
        }
      }
      for (let i = 0; i < n * D; i++) {
        const e = Math.abs(o[i]! - want.o[i]!);
        maxO = Math.max(maxO, e);
        assert.ok(e <= 1e-6 + 1e-5 * Math.abs(want.o[i]!), `D=${D} o[${i}] = ${o[i]} vs mergeState ${want.o[i]}: |err| ${e} > 1e-6 + 1e-5·|ref|`);
      }
      assert.ok(maxO < 1e-5 && maxL < 1e-4, `D=${D}: max |err| o ${maxO.toExponential(2)}, lse ${maxL.toExponential(2)}`);
      ex.duo_free(base);
    }
  });

  test(`tiled bounds (${kernels}): duo_append and duo_attend refuse a tiled buffer's row count that is not whole tiles or is too small, and write nothing`, { skip }, async () => {
    const ex = await instantiate(await loadWasmModule({ kernels }));
    const D = 8, H = 2, ROWS = 64, bytes = bufferBytes("T64", ROWS, H, D, 2);
    const buf = ex.duo_alloc(bytes) >>> 0, src = ex.duo_alloc(H * D * 4) >>> 0, ints = ex.duo_alloc(64) >>> 0;
    new Float32Array(ex.memory.buffer, src, H * D).fill(1.5);
    new Int32Array(ex.memory.buffer, ints, 2).set([0, 1]); // heads
    const row = (r: number) => (new Int32Array(ex.memory.buffer, ints + 8, 1)[0] = r, ints + 8);
    const append = (r: number, bufferRows: number) => ex.duo_append(buf, 2, H, D, src, H, ints, row(r), 1, 1, bufferRows);
    const untouched = () => new Uint8Array(ex.memory.buffer, buf, bytes).every((x) => x === 0);
    assert.equal(append(0, 100), -1, "buffer_rows 100 is not whole 64-row tiles");
    assert.equal(append(0, 0), -1, "buffer_rows 0");
    assert.equal(append(64, 64), -1, "row 64 of a 64-row buffer would land in the next head's tiles");
    assert.ok(untouched(), "a refused append wrote into the buffer");
    assert.equal(append(63, 64), 0, "row 63 of a 64-row buffer");
    // one T64 segment of rows [10, 10 + count) over a buffer of `rows` rows: 14 i32 words (duo.h duo_segment)
    const seg = ex.duo_alloc(SEGMENT_WORDS * 4) >>> 0, q = ex.duo_alloc(4 * D * 4) >>> 0, out = ex.duo_alloc(4 * D * 4) >>> 0;
    const work = ex.duo_alloc(ex.duo_attend_workspace(1, 4, 1, D)) >>> 0;
    const attend = (count: number, rows: number) => {
      new Int32Array(ex.memory.buffer, seg, SEGMENT_WORDS).set([buf, 0, buf, 0, 0, 0, 2, H, 10, count, 10, 1, rows, 0]);
      return ex.duo_attend(q, 1, 4, D, 4, 1, ints, ints, seg, 1, 80, 0, 0, 0, out, 0, work);
    };
    assert.equal(attend(54, 96), -1, "buffer_rows 96 is not whole tiles");
    assert.equal(attend(55, 64), -1, "rows 10..64 are past a 64-row buffer");
    assert.equal(attend(54, 64), 0, "rows 10..63 of a 64-row buffer");
  });

  test(`non-finite KV (${kernels}): Inf/NaN in visible rows reach the output as in the reference, in masked rows they do not`, { skip }, async () => {
    const wasm = await createWasmBackend({ threads: 0, kernels });
    for (const dtype of ["f32", "f16", "bf16"] as const) {
      await nonFinite(wasm, dtype, 1, "NHD");
      await nonFinite(wasm, dtype, 4, "T64");
    }
    await wasm.dispose();
  });
}

/** Inf and NaN in V rows, seen by some query rows and masked for others; `G` query heads share the KV head. Query
 *  rows at positions 4, 5, 6 (causal): the first sees only finite rows, the second also the Inf (row 5 at position 5),
 *  the third also the NaN (row 9 at position 6); the same again one row at a time (decode: with G = 4 over T64
 *  buffers, the tiled path's calls). */
async function nonFinite(wasm: Backend, dtype: KvDtype, G: number, layout: "NHD" | "T64"): Promise<void> {
  const D = 64, N = 20, rowsHeld = layout === "T64" ? 64 : N;
  const kSrc = randomArray(N * D, 11), vSrc = randomArray(N * D, 12), q = randomArray(3 * G * D, 13);
  vSrc[5 * D + 3] = dtype === "f16" ? 1e6 : Infinity; // +Inf in V row 5, column 3 (1e6 overflows f16)
  vSrc[9 * D + 7] = NaN; // NaN in V row 9, column 7
  const positions = Int32Array.from({ length: N }, (_, i) => (i <= 5 ? i : i === 9 ? 6 : 100 + i));
  const outs: Float32Array[] = [];
  for (const be of [new ReferenceBackend(), wasm] as Backend[]) {
    const bytes = bufferBytes(layout, rowsHeld, 1, D, 4), k = be.alloc(0, bytes), v = layout === "T64" ? k : be.alloc(0, bytes);
    const base = { dtype, rowHeads: 1, headDim: D, srcHeads: 1, heads: Int32Array.of(0), rows: Int32Array.from({ length: N }, (_, i) => i) };
    const segments = [{ k, v, dtype, rowHeads: 1, rowStart: 0, rowCount: N, positions, layout }];
    const attend = (T: number, t0: number, out: Float32Array) => ({
      kind: "attend" as const, q: q.subarray(t0 * G * D, (t0 + T) * G * D), T, numHeads: G, headDim: D, group: G,
      qHeads: Int32Array.of(0), kvSlots: Int32Array.of(0), segments, qPos0: 4 + t0, window: null, out,
    });
    const out = new Float32Array(3 * G * D).fill(NaN), rows = [0, 1, 2].map(() => new Float32Array(G * D).fill(NaN));
    await be.run(0, [
      { kind: "append", dst: k, src: kSrc, ...base, layout: layout === "T64" ? "K64" : "NHD" },
      { kind: "append", dst: v, src: vSrc, ...base, layout: layout === "T64" ? "V64" : "NHD" },
      attend(3, 0, out), ...rows.map((r, t) => attend(1, t, r)),
    ]);
    outs.push(out, ...rows);
    be.free(0, k);
    if (v !== k) be.free(0, v);
  }
  const want = outs[0]!;
  assert.equal(want[G * D + 3], Infinity, `${dtype} reference: row 2 column 3 sees the +Inf`);
  assert.ok(Number.isNaN(want[2 * G * D + 7]!), `${dtype} reference: row 3 column 7 sees the NaN`);
  const got = [outs[4]!, outs.slice(5).flatMap((r) => [...r])] as const;
  for (const [how, g] of [["prefill", got[0]], ["one row at a time", got[1]]] as const) {
    for (let i = 0; i < 3 * G * D; i++) {
      const a = g[i]!, b = want[i]!;
      const same = Number.isNaN(b) ? Number.isNaN(a) : !Number.isFinite(b) ? a === b : Math.abs(a - b) <= 1e-5 + 1e-4 * Math.abs(b);
      assert.ok(same, `${dtype} G=${G} ${layout} ${how}: out[${i}] = ${a}, reference ${b} (finite: |err| ≤ 1e-5 + 1e-4·|ref|; Inf/NaN: identical)`);
    }
  }
}
