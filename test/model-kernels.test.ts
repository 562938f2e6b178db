import { test } from "node:test";
import assert from "node:assert/strict";
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "../src/dtype.ts";
import { DuoError } from "../src/errors.ts";
import { createModelKernels, type ModelKernels, type WeightDtype } from "../src/model/kernels.ts";
import { inverseFrequencies, ropeTables } from "../src/model/rope.ts";
import { runtime } from "../src/runtime.ts";
import { probeNative } from "../src/backend/native.ts";
import { rng } from "./helpers/random.ts";

// Conformance of the WASM SIMD and the native model kernels (the same C, libduo.so) against the reference kernels (float64 accumulation), plus checks of
// the reference kernels themselves against float64 loops written here.
const skip = runtime().wasmSimd ? false : "skipped: this runtime has no WebAssembly SIMD";
const native = await probeNative({});
const skips = { wasm: skip, native: native.usable ? false : `skipped: native backend not usable here (${native.reason})` };

function data(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => scale * (2 * r() - 1));
}

/** Raw little-endian bytes of `values` in `dtype`, and the values as stored. */
function asDtype(values: Float32Array, dtype: WeightDtype): { bytes: Uint8Array; stored: Float32Array } {
  if (dtype === "f32") return { bytes: new Uint8Array(values.slice().buffer), stored: values };
  const bits = Uint16Array.from(values, dtype === "bf16" ? f32ToBf16Bits : f32ToF16Bits);
  return { bytes: new Uint8Array(bits.buffer), stored: Float32Array.from(bits, dtype === "bf16" ? bf16BitsToF32 : f16BitsToF32) };
}

async function both(name: "wasm" | "native"): Promise<[ModelKernels, ModelKernels]> {
  return [await createModelKernels("reference"), await createModelKernels(name, { threads: 2 })];
}

test("reference matmul is x·Wᵀ + b in float64 (f32 result)", async () => {
  const k = await createModelKernels("reference");
  const T = 3, nin = 5, nout = 4;
  const x = data(T * nin, 1), w = data(nout * nin, 2), b = data(nout, 3);
  const m = k.matrix(nout, nin, "f32");
  k.write(m, 0, new Uint8Array(w.slice().buffer));
  const y = new Float32Array(T * nout);
  k.matmul(y, x, m, T, k.vector(b));
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < nout; o++) {
      let want = b[o]!;
      for (let i = 0; i < nin; i++) want += x[t * nin + i]! * w[o * nin + i]!;
      assert.equal(y[t * nout + o], Math.fround(want), `y[${t}][${o}]`);
    }
  }
});

for (const name of ["wasm", "native"] as const) {
  // native: 2 threads, so that matmul splits its rows (and for T > 1 gathers them back)
  const threadsNote = name === "native" ? " (2 threads: rows split)" : "";
  test(`${name} matmul matches the reference for f32, bf16 and f16 weights, odd shapes, with and without bias${threadsNote}`, { skip: skips[name] }, async () => {
    const [ref, fast] = await both(name);
    let worst = 0, cases = 0;
    for (const dtype of ["f32", "bf16", "f16"] as const) {
      for (const [T, nin, nout] of [[1, 1, 1], [1, 8, 3], [3, 7, 5], [4, 16, 2], [5, 37, 9], [37, 64, 11], [70, 24, 6]] as const) {
        for (const withBias of [false, true]) {
          const seed = 100 * cases++;
          const x = data(T * nin, seed + 1), { bytes, stored } = asDtype(data(nout * nin, seed + 2), dtype), b = data(nout, seed + 3);
          const mr = ref.matrix(nout, nin, dtype), mw = fast.matrix(nout, nin, dtype);
          ref.write(mr, 0, bytes);
          fast.write(mw, 0, bytes);
          const yr = new Float32Array(T * nout), yw = new Float32Array(T * nout);
          ref.matmul(yr, x, mr, T, withBias ? ref.vector(b) : undefined);
          fast.matmul(yw, x, mw, T, withBias ? fast.vector(b) : undefined);
          for (let t = 0; t < T; t++) {
            for (let o = 0; o < nout; o++) {
              let mag = withBias ? Math.abs(b[o]!) : 0;
              for (let i = 0; i < nin; i++) mag += Math.abs(x[t * nin + i]! * stored[o * nin + i]!);
              const err = Math.abs(yw[t * nout + o]! - yr[t * nout + o]!) / mag;
              worst = Math.max(worst, err);
              // f32 accumulation over nin <= 64 terms: |error| <= 1e-6 · (|b| + Σ|x·w|)
              assert.ok(err <= 1e-6, `${dtype} T=${T} nin=${nin} nout=${nout} bias=${withBias}: y[${t}][${o}] ${name} ${yw[t * nout + o]} ref ${yr[t * nout + o]} (error ${err.toExponential(2)} of Σ|x·w|)`);
            }
          }
        }
      }
    }
    assert.ok(cases === 42, `ran ${cases} cases; worst error ${worst.toExponential(2)} of Σ|x·w|`);
  });

  test(`${name} embedding lookup widens every f16 and bf16 bit pattern exactly`, { skip: skips[name] }, async () => {
    const [, fast] = await both(name);
    for (const dtype of ["f16", "bf16"] as const) {
      const widen = dtype === "f16" ? f16BitsToF32 : bf16BitsToF32;
      // 65536 patterns as a [8192, 8] table; row r holds patterns 8r .. 8r+7 (SIMD path), then a [65536, 1] table (scalar tail).
      for (const cols of [8, 1]) {
        const rows = 65536 / cols;
        const table = fast.matrix(rows, cols, dtype);
        const bits = Uint16Array.from({ length: 65536 }, (_, i) => i);
        fast.write(table, 0, new Uint8Array(bits.buffer));
        const ids = Int32Array.from({ length: rows }, (_, i) => i);
        const y = new Float32Array(65536);
        fast.embed(y, ids, table);
        let bad = 0, first = -1;
        for (let h = 0; h < 65536; h++) {
          const want = widen(h);
          const ok = Number.isNaN(want) ? Number.isNaN(y[h]!) : Object.is(y[h], Math.fround(want));
          if (!ok && bad++ === 0) first = h;
        }
        assert.equal(bad, 0, `${dtype} cols=${cols}: ${bad} patterns widened wrongly, first 0x${first.toString(16)} -> ${y[first]} (want ${widen(first)})`);
      }
    }
  });

  test(`${name} rmsnorm, rope and swiglu match the reference`, { skip: skips[name] }, async () => {
    const [ref, fast] = await both(name);
    for (const [T, n] of [[1, 3], [4, 32], [7, 37]] as const) {
      const x = data(T * n, T + n, 3), w = data(n, 7);
      const yr = new Float32Array(T * n), yw = new Float32Array(T * n);
      ref.rmsnorm(yr, x, ref.vector(w), T, 1e-5);
      fast.rmsnorm(yw, x, fast.vector(w), T, 1e-5);
      yr.forEach((v, i) => assert.ok(Math.abs(yw[i]! - v) <= 1e-6 * Math.abs(v) + 1e-7, `rmsnorm T=${T} n=${n} [${i}]: ${name} ${yw[i]} ref ${v}`));
    }
    const inv = inverseFrequencies(12, 10000, { type: "none" });
    for (const [T, heads, D] of [[1, 1, 2], [3, 4, 8], [5, 3, 12]] as const) {
      const { cos, sin } = ropeTables(inv.subarray(0, D / 2), 1000, T);
      const xr = data(T * heads * D, D + heads), xw = xr.slice();
      ref.rope(xr, T, heads, D, cos, sin);
      fast.rope(xw, T, heads, D, cos, sin);
      xr.forEach((v, i) => assert.ok(Math.abs(xw[i]! - v) <= 1e-6, `rope T=${T} H=${heads} D=${D} [${i}]: ${name} ${xw[i]} ref ${v}`));
    }
    // silu over [-120, 120]: past the clamp of the fast exp on both sides.
    const n = 4099, g = Float32Array.from({ length: n }, (_, i) => -120 + (240 * i) / (n - 1)), u = data(n, 9);
    const sr = new Float32Array(n), sw = new Float32Array(n);
    ref.swiglu(sr, g, u);
    fast.swiglu(sw, g, u);
    sr.forEach((v, i) => {
      const err = Math.abs(sw[i]! - v);
      // exp by a degree-7 polynomial after range reduction, then one division: within 1e-6 relative; below
      // g = -88 the fast exp is clamped and silu(g)·u is < 1e-30 instead of ~0
      assert.ok(err <= 1e-6 * Math.abs(v) + 1e-30, `swiglu g=${g[i]} u=${u[i]}: ${name} ${sw[i]} ref ${v} (error ${err.toExponential(2)})`);
    });
  });
}

test("reference rope rotates pairs (i, i + D/2) at absolute positions", async () => {
  const k = await createModelKernels("reference");
  const D = 4, inv = inverseFrequencies(D, 100, { type: "none" }); // [1, 0.1]
  const { cos, sin } = ropeTables(inv, 7, 1);
  const x = Float32Array.from([1, 2, 3, 4]);
  k.rope(x, 1, 1, D, cos, sin);
  const want = [1 * Math.cos(7) - 3 * Math.sin(7), 2 * Math.cos(0.7) - 4 * Math.sin(0.7), 3 * Math.cos(7) + 1 * Math.sin(7), 4 * Math.cos(0.7) + 2 * Math.sin(0.7)];
  want.forEach((w, i) => assert.ok(Math.abs(x[i]! - w) <= 1e-6, `x[${i}] = ${x[i]}, want ${w}`));
});

test("RoPE frequencies: linear divides by the factor; llama3 keeps high, divides low, blends the middle (HF formula)", () => {
  const D = 8, theta = 100;
  const base = Array.from({ length: D / 2 }, (_, i) => theta ** (-(2 * i) / D)); // wavelengths 6.28, 19.9, 62.8, 199
  assert.deepEqual(Array.from(inverseFrequencies(D, theta, { type: "none" })), base);
  assert.deepEqual(Array.from(inverseFrequencies(D, theta, { type: "linear", factor: 4 })), base.map((f) => f / 4));
  const got = inverseFrequencies(D, theta, { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 8, originalMaxPositionEmbeddings: 64 });
  // high-frequency cut: wavelength < 64/8 = 8; low-frequency cut: wavelength > 64/1 = 64
  const blend = (f: number) => {
    const s = (64 / ((2 * Math.PI) / f) - 1) / (8 - 1);
    return (1 - s) * (f / 8) + s * f;
  };
  const want = [base[0]!, blend(base[1]!), blend(base[2]!), base[3]! / 8];
  want.forEach((w, i) => assert.ok(Math.abs(got[i]! - w) <= 1e-15 * w, `invFreq[${i}] = ${got[i]}, want ${w}`));
});

test("wasm kernels refuse more than 4 GiB with the bytes needed and available", { skip }, async () => {
  const wasm = await createModelKernels("wasm");
  assert.throws(() => wasm.reserve(5 * 2 ** 30, 1000), (e: unknown) => {
    assert.ok(e instanceof DuoError && e.code === "CAPACITY", String(e));
    assert.match(e.message, /needs 5368709120 bytes of weights .* \+ 1000 bytes of activations/);
    assert.match(e.message, /holds 4294967296 bytes \(4 GiB\) and \d+ are available/);
    return true;
  });
});
