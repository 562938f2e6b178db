import { test } from "node:test";
import assert from "node:assert/strict";
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "../src/dtype.ts";

// Independent oracle: exhaustive round-trip over every f16 / bf16 bit pattern, plus RNE at the halfway points.
test("f16: every bit pattern round-trips exactly through f32", () => {
  let bad = 0;
  for (let h = 0; h < 0x10000; h++) {
    const x = f16BitsToF32(h);
    const back = f32ToF16Bits(x);
    const isNaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
    if (isNaN ? !Number.isNaN(f16BitsToF32(back)) : back !== h) bad++;
  }
  assert.equal(bad, 0, `${bad} f16 patterns did not round-trip`);
});

test("f16: halfway cases round to even, overflow to Inf, tiny to zero", () => {
  // 1 + 2^-11 is exactly halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1.0).
  assert.equal(f32ToF16Bits(1 + 2 ** -11), 0x3c00);
  assert.equal(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(f32ToF16Bits(65520), 0x7c00); // rounds past the largest finite f16 (65504)
  assert.equal(f32ToF16Bits(65504), 0x7bff);
  assert.equal(f32ToF16Bits(2 ** -25), 0x0000); // halfway to the smallest subnormal: even = 0
  assert.equal(f32ToF16Bits(3 * 2 ** -25), 0x0002);
  assert.equal(f32ToF16Bits(-0), 0x8000);
});

test("bf16: every bit pattern round-trips and halfway rounds to even", () => {
  let bad = 0;
  for (let h = 0; h < 0x10000; h++) {
    const x = bf16BitsToF32(h);
    const isNaN = (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
    if (isNaN ? !Number.isNaN(bf16BitsToF32(f32ToBf16Bits(x))) : f32ToBf16Bits(x) !== h) bad++;
  }
  assert.equal(bad, 0);
  assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80); // tie -> even
  assert.equal(f32ToBf16Bits(1 + 3 * 2 ** -8), 0x3f82);
  assert.ok(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN))));
});
