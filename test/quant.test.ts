// The int8 / int4 KV codecs (src/quant.ts) against hand-worked records and independent oracles: nibble order, the
// f16 scale and min, roundf (int4) vs round-half-even (int8), constant rows, zero rows, and the error bound.
import { test } from "node:test";
import assert from "node:assert/strict";
import { f16BitsToF32, f32ToF16Bits, headBytes } from "../src/dtype.ts";
import { dequantizeRecord, quantizeRecord, roundHalfAway, roundHalfEven, roundTrip } from "../src/quant.ts";
import { randomArray } from "./helpers/random.ts";

const fr = Math.fround;

function record(dtype: "int8" | "int4", x: number[]): { bytes: Uint8Array; view: DataView; back: Float32Array } {
  const D = x.length, bytes = new Uint8Array(headBytes(dtype, D));
  quantizeRecord(dtype, x, D, bytes, 0);
  const back = new Float32Array(D);
  dequantizeRecord(dtype, bytes, 0, D, back);
  return { bytes, view: new DataView(bytes.buffer), back };
}

test("record sizes: int4 = D/2 + 4 (upstream's 64 + 2 + 2 at D = 128), int8 = D + 4", () => {
  assert.equal(headBytes("int4", 128), 68);
  assert.equal(headBytes("int8", 128), 132);
  assert.equal(headBytes("bf16", 128), 256);
});

test("int4: even element in the high nibble, f16 scale and min, q = roundf((x − min) / scale)", () => {
  // x = 0..15 step 1: min 0, scale = 15/15 + 1e-8 = 1 (in f32), so q_d = d exactly.
  const x = Array.from({ length: 16 }, (_, d) => d);
  const { bytes, view, back } = record("int4", x);
  assert.deepEqual([...bytes.subarray(0, 8)], [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
  assert.equal(view.getUint16(8, true), f32ToF16Bits(1), "scale as f16");
  assert.equal(view.getUint16(10, true), f32ToF16Bits(0), "min as f16");
  assert.deepEqual([...back], x);
  // A min that is not an f16 value is stored rounded (RNE); the codes use the f32 min.
  const shifted = record("int4", x.map((v) => v + 0.1));
  assert.equal(shifted.view.getUint16(10, true), f32ToF16Bits(fr(0.1)));
  assert.deepEqual([...shifted.bytes.subarray(0, 8)], [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
});

test("int4: codes round half away from zero (roundf), with the f32 scale rather than its f16 rounding", () => {
  // min 0, max 15 → scale 1 + 1e-8 = 1 in f32; x = 2.5 → 3 (half away), RNE would give 2; 0.5 → 1.
  const x = [0, 2.5, 0.5, 15, 7.5, 1.5, 0, 0];
  const { bytes } = record("int4", x);
  assert.deepEqual([...bytes.subarray(0, 4)], [0x03, 0x1f, 0x82, 0x00]);
  // A scale f16 cannot hold: range 1 → scale = 1/15 (f32); f16(1/15) differs, but q uses the f32 one.
  const y = Array.from({ length: 8 }, (_, d) => d / 7);
  const r = record("int4", y);
  const scale = fr(fr(1 / 15) + fr(1e-8));
  assert.notEqual(f16BitsToF32(f32ToF16Bits(scale)), scale);
  for (let d = 0; d < 8; d++) {
    const q = (r.bytes[d >> 1]! >> (d % 2 ? 0 : 4)) & 15;
    assert.equal(q, Math.min(15, roundHalfAway(fr(fr(y[d]!) / scale))), `element ${d}`);
  }
});

test("int4: dequantization is f16(f16(q·s) + z), computed in f16 arithmetic", () => {
  const x = randomArray(64, 7, 3);
  const { view, back, bytes } = record("int4", [...x]);
  const s = f16BitsToF32(view.getUint16(32, true)), z = f16BitsToF32(view.getUint16(34, true));
  const h = (v: number) => f16BitsToF32(f32ToF16Bits(v));
  for (let d = 0; d < 64; d++) {
    const q = (bytes[d >> 1]! >> (d % 2 ? 0 : 4)) & 15;
    assert.equal(back[d], h(h(q * s) + z), `element ${d}`);
  }
  // every value is within one step (plus f16 rounding) of the input
  for (let d = 0; d < 64; d++) assert.ok(Math.abs(back[d]! - x[d]!) <= s * 0.5 + 2e-3 * Math.abs(x[d]!) + 1e-3, `element ${d}: ${back[d]} vs ${x[d]}`);
});

test("int4: a constant row stores scale f16(1e-8) = 0 and gives the constant back; f16-range values round-trip exactly", () => {
  const c = record("int4", new Array(8).fill(0.25));
  assert.equal(c.view.getUint16(4, true), 0, "scale 1e-8 underflows f16 to +0");
  assert.deepEqual([...c.back], new Array(8).fill(0.25));
  const zero = record("int4", new Array(8).fill(0));
  assert.deepEqual([...zero.back], new Array(8).fill(0));
});

test("int8: symmetric, f32 scale = max|x| / 127, codes round half to even, zero row gives scale 0", () => {
  // max|x| = 127 → scale 1; 2.5 → 2 and 3.5 → 4 (half to even), −0.5 → −0.
  const x = [127, 2.5, 3.5, -0.5, -127, 1.4, -1.6, 0];
  const { view, back } = record("int8", x);
  assert.equal(view.getFloat32(8, true), 1);
  assert.deepEqual([...new Int8Array(view.buffer, 0, 8)], [127, 2, 4, 0, -127, 1, -2, 0]);
  assert.deepEqual([...back], [127, 2, 4, 0, -127, 1, -2, 0]);
  const zero = record("int8", new Array(4).fill(0));
  assert.equal(zero.view.getFloat32(4, true), 0);
  assert.deepEqual([...zero.back], [0, 0, 0, 0]);
});

test("int8 and int4 round trips stay within half a step of the input (random rows)", () => {
  const D = 128, x = randomArray(16 * D, 11, 2);
  for (const dtype of ["int8", "int4"] as const) {
    const y = roundTrip(dtype, x, D);
    for (let i = 0; i < x.length; i += D) {
      const row = x.subarray(i, i + D);
      const lo = Math.min(...row), hi = Math.max(...row), amax = Math.max(-lo, hi);
      const step = dtype === "int8" ? amax / 127 : (hi - lo) / 15;
      for (let d = 0; d < D; d++) {
        // half a step, plus f16 rounding of the int4 scale·q (≤ 2^-11 relative) and of the min
        const tol = step / 2 + (dtype === "int4" ? 2 ** -10 * (Math.abs(x[i + d]!) + Math.abs(lo) + 15 * step) : 1e-6 * amax);
        assert.ok(Math.abs(y[i + d]! - x[i + d]!) <= tol, `${dtype} row ${i / D} d ${d}: ${y[i + d]} vs ${x[i + d]} (tol ${tol})`);
      }
    }
  }
});

test("rounding helpers: half to even and half away from zero", () => {
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999998].map(roundHalfEven), [0, 2, 2, 0, -2, 2]);
  assert.deepEqual([0.5, 1.5, 2.5, 2.4999998, 14.5].map(roundHalfAway), [1, 2, 3, 2, 15]);
});
