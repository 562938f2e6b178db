import { test } from "node:test";
import assert from "node:assert/strict";
import { MT19937 } from "../src/pattern/mt19937.ts";
import { DuoError } from "../src/errors.ts";

test("MT19937 seed 42 gives numpy's first random_sample values", () => {
  // np.random.seed(42); np.random.random_sample(3)  (exact doubles, no tolerance)
  const r = new MT19937(42);
  assert.deepEqual([r.randomSample(), r.randomSample(), r.randomSample()], [0.3745401188473625, 0.9507143064099162, 0.7319939418114051]);
});

test("MT19937 stays on numpy's stream across many twists", () => {
  // np.random.seed(42); np.random.random_sample(100000)[-1]  (200000 outputs = 320 regenerations of the state)
  const r = new MT19937(42);
  let x = 0;
  for (let i = 0; i < 100000; i++) x = r.randomSample();
  assert.equal(x, 0.3899084852770509);
});

test("MT19937 32-bit outputs match the C++ standard's check values for seed 5489", () => {
  // [rand.predef]: the 10000th consecutive output of a default-constructed std::mt19937 is 4123659995.
  const r = new MT19937(5489);
  assert.equal(r.nextUint32(), 3499211612);
  let y = 0;
  for (let i = 2; i <= 10000; i++) y = r.nextUint32();
  assert.equal(y, 4123659995);
});

test("MT19937 random samples lie in [0, 1) and use 53 bits", () => {
  const r = new MT19937(7);
  for (let i = 0; i < 2000; i++) {
    const x = r.randomSample();
    assert.ok(x >= 0 && x < 1, `sample ${i} = ${x}`);
    assert.equal(Number.isInteger(x * 2 ** 53), true, `sample ${i} is not k/2^53`);
  }
});

test("MT19937 rejects seeds outside [0, 2^32)", () => {
  for (const seed of [-1, 2 ** 32, 1.5, NaN]) {
    assert.throws(() => new MT19937(seed), (e) => e instanceof DuoError && e.code === "INVALID_ARGUMENT" && /seed/.test(e.message), String(seed));
  }
});
