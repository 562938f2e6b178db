import { test } from "node:test";
import assert from "node:assert/strict";
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "../src/dtype.ts";
import { DuoError } from "../src/errors.ts";
import { createModelKernels, type KernelsName, type WeightDtype } from "../src/model/kernels.ts";
import { inverseFrequencies, ropeTables } from "../src/model/rope.ts";
import { dequantizeQ4_K, dequantizeQ6_K } from "../src/model/kquants.ts";
import { dequantizeQ4_0, dequantizeQ8_0, quantizeQ4_0, quantizeQ8_0 } from "../src/model/tensor-types.ts";
import { runtime } from "../src/runtime.ts";
import { probeNative } from "../src/backend/native.ts";
import { rng } from "./helpers/random.ts";
import { type HostOps, hostOps } from "../src/model/host-ops.ts";
import { onEachNativeIsa } from "./helpers/native-isa.ts";

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

/** The reference set and `name`'s, driven with host arrays (each op uploads, runs, downloads). */
async function both(name: "wasm" | "native"): Promise<[HostOps, HostOps]> {
  return [hostOps(await createModelKernels("reference")), hostOps(await createModelKernels(name, { threads: 2 }))];
}

test("reference matmul is x·Wᵀ + b in float64 (f32 result)", async () => {
  const k = hostOps(await createModelKernels("reference"));
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
      for (const [T, nin, nout] of [[1, 1, 1], [1, 8, 3], [3, 7, 5], [4, 16, 2], [5, 37, 9], [37, 64, 11], [70, 24, 6], [9, 45, 10]] as const) {
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
    assert.ok(cases === 48, `ran ${cases} cases; worst error ${worst.toExponential(2)} of Σ|x·w|`);
  });

  // Native AVX-512 prefill (kernels.c MATMUL_GEMM): k in chunks of 512 carried across chunks, rows in blocks of
  // 128, tokens in tiles of 12 then 4, from 12 tokens (16-bit weights) or 48 (f32); here 2 full chunks and a part
  // (1088 of nin = 1100), the last 12 weights as a group of 8 and 4 single ones, 2 row blocks per thread's half of
  // 261 rows plus the odd last row, and 16 tokens (12 + 4) or 55 (4 x 12 + 4, then 3 single tokens). Elsewhere the
  // same shapes run the tiles above.
  if (name === "native") test(`${name} matmul matches the reference across k chunks, row blocks and token tiles (nin 1100, 261 rows)`, { skip: skips[name] }, async () => {
    const [ref, fast] = await both(name);
    const nin = 1100, nout = 261;
    // f32 sums: each output is 16 lanes × 2 accumulators of nin / 32 multiply-adds, a 16-way lane sum, the tail and
    // the bias: |error| <= (nin / 16 + 20) · 2⁻²⁴ · (|b| + Σ|x·w|)
    const bound = (nin / 16 + 20) * 2 ** -24;
    let worst = 0;
    for (const dtype of ["f32", "bf16", "f16"] as const) {
      for (const T of [16, 55]) {
        const x = data(T * nin, T + 1), { bytes, stored } = asDtype(data(nout * nin, T + 2), dtype), b = data(nout, T + 3);
        const mr = ref.matrix(nout, nin, dtype), mw = fast.matrix(nout, nin, dtype);
        ref.write(mr, 0, bytes);
        fast.write(mw, 0, bytes);
        const yr = new Float32Array(T * nout), yw = new Float32Array(T * nout).fill(NaN);
        ref.matmul(yr, x, mr, T, ref.vector(b));
        fast.matmul(yw, x, mw, T, fast.vector(b));
        for (let t = 0; t < T; t++) {
          for (let o = 0; o < nout; o++) {
            let mag = Math.abs(b[o]!);
            for (let i = 0; i < nin; i++) mag += Math.abs(x[t * nin + i]! * stored[o * nin + i]!);
            const err = Math.abs(yw[t * nout + o]! - yr[t * nout + o]!) / mag;
            worst = Math.max(worst, err);
            assert.ok(err <= bound, `${dtype} T=${T}: y[${t}][${o}] ${name} ${yw[t * nout + o]} ref ${yr[t * nout + o]} (error ${err.toExponential(2)} of Σ|x·w|, bound ${bound.toExponential(2)})`);
          }
        }
      }
    }
    assert.ok(worst > 0, "the fast kernels sum in f32: some rounding must show");
  });

  test(`${name} embedding lookup widens every f16 and bf16 bit pattern exactly`, { skip: skips[name] }, async () => {
    const [, fast] = await both(name);
    for (const dtype of ["f16", "bf16"] as const) {
      const widen = dtype === "f16" ? f16BitsToF32 : bf16BitsToF32;
      // 65536 patterns as a [8192, 8] table; row r holds patterns 8r .. 8r+7 (SIMD path), as a [2048, 32] table (packed
      // 32 at a time where the set has 16 lanes), then a [65536, 1] table (scalar tail).
      for (const cols of [8, 32, 1]) {
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

test("Q8_0 codec: ggml's rounding (d = max|x|/127 as f16, q = round half away from zero), exact decode, stable re-quantization", () => {
  // One block: max |x| = 127 gives d = 1; ±2.5 rounds away from zero (roundf), 0.49 to 0.
  const x = new Float32Array(32);
  x.set([127, -2.5, 2.5, 0.49, -126.6, 3.5]);
  const q = quantizeQ8_0(x);
  assert.equal(q.length, 34);
  assert.equal(new DataView(q.buffer).getUint16(0, true), 0x3c00, "d = 1.0 as f16");
  assert.deepEqual([...new Int8Array(q.buffer, 2, 6)], [127, -3, 3, 0, -127, 4]);
  assert.deepEqual([...dequantizeQ8_0(q).subarray(0, 6)], [127, -3, 3, 0, -127, 4]);
  // Random rows: decode is within d/2 of the input, plus |q| <= 127 times d's f16 rounding (q is computed with the
  // unrounded d, as ggml does): 0.6·d; quantizing the decoded values gives the same bytes.
  const r = data(32 * 40, 11, 3), b = quantizeQ8_0(r), back = dequantizeQ8_0(b);
  for (let k = 0; k < 40; k++) {
    const d = f16BitsToF32(new DataView(b.buffer).getUint16(k * 34, true));
    for (let i = 0; i < 32; i++) assert.ok(Math.abs(back[k * 32 + i]! - r[k * 32 + i]!) <= 0.6 * d, `block ${k}[${i}]`);
  }
  assert.deepEqual(quantizeQ8_0(back), b);
  assert.throws(() => quantizeQ8_0(new Float32Array(33)), /multiple of 32/);
});

test("Q4_0 codec: ggml's rounding (d = the largest-magnitude value / −8 as f16, q = min(15, trunc(x/d + 8.5))), nibble order, stable re-quantization", () => {
  // d = -16 / -8 = 2: -16 -> q 0 (value -16), 14 -> 14/2 + 8.5 = 15.5 -> 15 (clamped range top, value 14),
  // 3 -> 1.5 + 8.5 = 10 (value 4), element 16 (high nibble of byte 0) = -5 -> -2.5 + 8.5 = 6 (value -4).
  const x = new Float32Array(32);
  x.set([-16, 14, 3]);
  x[16] = -5;
  const q = quantizeQ4_0(x);
  assert.equal(q.length, 18);
  assert.equal(new DataView(q.buffer).getUint16(0, true), 0x4000, "d = 2.0 as f16");
  assert.equal(q[2], 0 | (6 << 4), "byte 0: element 0 low nibble, element 16 high nibble");
  assert.deepEqual([...dequantizeQ4_0(q).subarray(0, 3)], [-16, 14, 4]);
  assert.equal(dequantizeQ4_0(q)[16], -4);
  const r = data(32 * 40, 12, 3), b = quantizeQ4_0(r), back = dequantizeQ4_0(b);
  for (let k = 0; k < 40; k++) {
    const d = Math.abs(f16BitsToF32(new DataView(b.buffer).getUint16(k * 18, true)));
    // within |d|/2, except values of the sign opposite to the largest one beyond 7.5|d|, clamped to q = 15 (within
    // |d|); plus 8 times d's f16 rounding
    for (let i = 0; i < 32; i++) assert.ok(Math.abs(back[k * 32 + i]! - r[k * 32 + i]!) <= 1.1 * d, `block ${k}[${i}]`);
  }
  assert.deepEqual(quantizeQ4_0(back), b);
});

/** Random K-quant blocks for `n` weights: random bytes, with the f16 scales set to finite values around `scale`. */
function kBlocks(dtype: "q4_k" | "q6_k", n: number, seed: number): Uint8Array {
  const size = dtype === "q4_k" ? 144 : 210, out = new Uint8Array((n / 256) * size), r = rng(seed);
  for (let i = 0; i < out.length; i++) out[i] = Math.floor(r() * 256);
  const v = new DataView(out.buffer);
  for (let o = 0; o < out.length; o += size) {
    if (dtype === "q4_k") v.setUint16(o, f32ToF16Bits(0.002 * (r() + 0.1)), true), v.setUint16(o + 2, f32ToF16Bits(-0.01 * r()), true);
    else v.setUint16(o + 208, f32ToF16Bits(0.0003 * (r() - 0.5)), true);
  }
  return out;
}

test("K-quants decode as ggml: Q4_K (d·scale)·q − dmin·min with 6-bit scales, Q6_K (d·scale)·(q − 32), by hand on one block", () => {
  // Q4_K: d = 1, dmin = 0.5; sub-block 0: scale 3, min 2 (bytes 0 and 4); sub-block 5: scale (s[9] & 15) | (s[1] >> 6) << 4
  const q4 = new Uint8Array(144), v4 = new DataView(q4.buffer);
  v4.setUint16(0, 0x3c00, true), v4.setUint16(2, 0x3800, true);
  q4[4 + 0] = 3, q4[4 + 4] = 2, q4[4 + 1] = 0b01_000000, q4[4 + 9] = 0x25; // sub-block 5: scale 5 | 1 << 4 = 21, min 2 | (0 << 4) = 2
  q4[16 + 0] = 0x7a; // element 0 (sub-block 0, low nibble) = 10, element 32 (sub-block 1, high nibble) = 7
  q4[16 + 64 + 0] = 0x90; // element 160 (sub-block 5, high nibble of qs[64]) = 9
  const y4 = dequantizeQ4_K(q4);
  assert.equal(y4[0], 3 * 10 - 0.5 * 2);
  assert.equal(y4[160], 21 * 9 - 0.5 * 2);
  // Q6_K: d = 0.5; element 0: low nibble of ql[0], bits 0-1 of qh[0], scale[0]; element 64+16: high nibble of ql[16],
  // bits 4-5 of qh[16], scale[5] (is = 1, + 4)
  const q6 = new Uint8Array(210), v6 = new DataView(q6.buffer);
  v6.setUint16(208, 0x3800, true);
  q6[0] = 0x05, q6[128] = 0b10, v6.setInt8(192, -3); // q = 5 | 2 << 4 = 37 -> 5
  q6[16] = 0x70, q6[128 + 16] = 0b01_0000, v6.setInt8(192 + 5, 7); // q = 7 | 1 << 4 = 23 -> -9
  const y6 = dequantizeQ6_K(q6);
  assert.equal(y6[0], 0.5 * -3 * 5);
  assert.equal(y6[64 + 16], 0.5 * 7 * -9);
});

for (const name of ["wasm", "native"] as const) {
  const threadsNote = name === "native" ? " (2 threads: rows split)" : "";
  test(`${name} Q8_0 and Q4_0 matmul and embedding (dequantized in registers) match the reference (decoded at load)${threadsNote}`, { skip: skips[name] }, async () => {
    const [ref, fast] = await both(name);
    let cases = 0;
    for (const [dtype, quantize, decode, blockBytes] of [["q8_0", quantizeQ8_0, dequantizeQ8_0, 34], ["q4_0", quantizeQ4_0, dequantizeQ4_0, 18]] as const) {
    for (const [T, nin, nout] of [[1, 32, 1], [1, 64, 3], [3, 96, 5], [4, 32, 2], [37, 160, 9], [70, 64, 6]] as const) {
      for (const withBias of [false, true]) {
        const seed = 1000 + 10 * cases++;
        const x = data(T * nin, seed + 1), bytes = quantize(data(nout * nin, seed + 2)), stored = decode(bytes), b = data(nout, seed + 3);
        const mr = ref.matrix(nout, nin, dtype), mw = fast.matrix(nout, nin, dtype);
        // written in two pieces of whole blocks, as the loader streams a tensor
        const cut = blockBytes * Math.floor(bytes.length / (2 * blockBytes));
        for (const [m, k] of [[mr, ref], [mw, fast]] as const) {
          k.write(m, 0, bytes.subarray(0, cut));
          k.write(m, cut, bytes.subarray(cut));
        }
        const yr = new Float32Array(T * nout), yw = new Float32Array(T * nout);
        ref.matmul(yr, x, mr, T, withBias ? ref.vector(b) : undefined);
        fast.matmul(yw, x, mw, T, withBias ? fast.vector(b) : undefined);
        for (let t = 0; t < T; t++) {
          for (let o = 0; o < nout; o++) {
            let mag = withBias ? Math.abs(b[o]!) : 0;
            for (let i = 0; i < nin; i++) mag += Math.abs(x[t * nin + i]! * stored[o * nin + i]!);
            const err = Math.abs(yw[t * nout + o]! - yr[t * nout + o]!) / mag;
            // f32 accumulation over nin <= 160 terms: |error| <= 2e-6 · (|b| + Σ|x·w|)
            assert.ok(err <= 2e-6, `${dtype} T=${T} nin=${nin} nout=${nout} bias=${withBias}: y[${t}][${o}] ${name} ${yw[t * nout + o]} ref ${yr[t * nout + o]} (error ${err.toExponential(2)})`);
          }
        }
        if (T === 37) {
          const ids = Int32Array.from({ length: 5 }, (_, i) => (i * 7) % nout), er = new Float32Array(5 * nin), ew = new Float32Array(5 * nin);
          ref.embed(er, ids, mr);
          fast.embed(ew, ids, mw);
          assert.deepEqual(ew, er, `${dtype} embedding rows decode exactly`);
        }
      }
    }
    }
    assert.equal(cases, 24);
  });

  test(`${name} Q4_K and Q6_K matmul and embedding (decoded in registers) equal the reference's decode${threadsNote}`, { skip: skips[name] }, async () => {
    const [ref, fast] = await both(name);
    for (const dtype of ["q4_k", "q6_k"] as const) {
      for (const [T, nin, nout] of [[1, 256, 3], [5, 512, 4], [37, 256, 5]] as const) {
        const x = data(T * nin, nin + T), bytes = kBlocks(dtype, nout * nin, T + nout);
        const stored = dtype === "q4_k" ? dequantizeQ4_K(bytes) : dequantizeQ6_K(bytes);
        const mr = ref.matrix(nout, nin, dtype), mw = fast.matrix(nout, nin, dtype);
        ref.write(mr, 0, bytes);
        fast.write(mw, 0, bytes);
        const yr = new Float32Array(T * nout), yw = new Float32Array(T * nout);
        ref.matmul(yr, x, mr, T);
        fast.matmul(yw, x, mw, T);
        for (let i = 0; i < yr.length; i++) {
          const t = Math.floor(i / nout), o = i % nout;
          let mag = 0;
          for (let k = 0; k < nin; k++) mag += Math.abs(x[t * nin + k]! * stored[o * nin + k]!);
          // f32 accumulation over 512 terms at most: |error| <= 4e-6 · Σ|x·w|
          assert.ok(Math.abs(yw[i]! - yr[i]!) <= 4e-6 * mag, `${dtype} T=${T} nin=${nin} y[${t}][${o}]: ${name} ${yw[i]} ref ${yr[i]}`);
        }
        const ids = Int32Array.from({ length: nout }, (_, i) => nout - 1 - i), er = new Float32Array(nout * nin), ew = new Float32Array(nout * nin);
        ref.embed(er, ids, mr);
        fast.embed(ew, ids, mw);
        assert.deepEqual(ew, er, `${dtype}: the ${name} decode gives the reference's bits`);
      }
    }
  });
}

test("native: every SIMD instruction set this CPU runs gives the reference's Q8_0 / Q4_0 / Q4_K / Q6_K matmul and embedding", { skip: skips.native }, async () => {
  const ref = hostOps(await createModelKernels("reference"));
  const ran = await onEachNativeIsa(["avx512", "avx2", "sse41", "neon"], async (isa) => {
    const fast = hostOps(await createModelKernels("native", { threads: 2 }));
    for (const [dtype, nin] of [["q8_0", 96], ["q4_0", 96], ["q4_k", 512], ["q6_k", 256]] as const) {
      const T = 5, nout = 6, x = data(T * nin, nin + 1);
      const bytes = dtype === "q8_0" ? quantizeQ8_0(data(nout * nin, 3)) : dtype === "q4_0" ? quantizeQ4_0(data(nout * nin, 4)) : kBlocks(dtype, nout * nin, 5);
      const mr = ref.matrix(nout, nin, dtype), mw = fast.matrix(nout, nin, dtype);
      ref.write(mr, 0, bytes);
      fast.write(mw, 0, bytes);
      const yr = new Float32Array(T * nout), yw = new Float32Array(T * nout), er = new Float32Array(2 * nin), ew = new Float32Array(2 * nin);
      ref.matmul(yr, x, mr, T);
      fast.matmul(yw, x, mw, T);
      const stored = ({ q8_0: dequantizeQ8_0, q4_0: dequantizeQ4_0, q4_k: dequantizeQ4_K, q6_k: dequantizeQ6_K })[dtype](bytes);
      yr.forEach((v, i) => {
        const t = Math.floor(i / nout), o = i % nout;
        let mag = 0;
        for (let k = 0; k < nin; k++) mag += Math.abs(x[t * nin + k]! * stored[o * nin + k]!);
        // f32 accumulation over 512 terms at most: |error| <= 4e-6 · Σ|x·w|
        assert.ok(Math.abs(yw[i]! - v) <= 4e-6 * mag, `${isa} ${dtype} y[${t}][${o}]: ${yw[i]} vs ${v}`);
      });
      ref.embed(er, Int32Array.of(5, 0), mr);
      fast.embed(ew, Int32Array.of(5, 0), mw);
      assert.deepEqual(ew, er, `${isa} ${dtype}: embedding rows decode to the reference's bits`);
    }
    fast.dispose();
  });
  assert.ok(ran.length >= 1, "at least one SIMD set ran");
});

test("reference rope rotates pairs (i, i + D/2) at absolute positions", async () => {
  const k = hostOps(await createModelKernels("reference"));
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

for (const name of ["reference", "wasm", "native"] as const satisfies readonly KernelsName[]) {
  const why = name === "reference" ? false : skips[name];
  test(`${name} activations: views compute on their slice, add is the residual sum, release gives zeroed memory back, short or foreign buffers are refused`, { skip: why }, async () => {
    const k = await createModelKernels(name, { threads: 2 }), other = await createModelKernels(name === "wasm" ? "reference" : "wasm");
    const n = 12, x = data(2 * n, 1), y = data(2 * n, 2);
    const X = k.activations(2 * n), Y = k.activations(2 * n);
    k.upload(X, x);
    k.upload(Y, y);
    k.add(k.view(Y, n, n), k.view(X, n, n)); // second rows only
    const got = new Float32Array(2 * n);
    k.download(Y, got);
    for (let i = 0; i < 2 * n; i++) assert.equal(got[i], i < n ? y[i] : Math.fround(y[i]! + x[i]!), `y[${i}]`);
    // a matmul into a view writes that view's rows only
    const w = k.matrix(n, n, "f32");
    k.write(w, 0, new Uint8Array(data(n * n, 3).buffer));
    k.matmul(k.view(Y, 0, n), k.view(X, n, n), w, 1);
    k.download(Y, got);
    for (let i = n; i < 2 * n; i++) assert.equal(got[i], Math.fround(y[i]! + x[i]!), `rows past the view keep their values: y[${i}]`);
    // too short: refused, nothing written
    const before = got.slice();
    assert.throws(() => k.matmul(k.view(Y, 0, n - 1), X, w, 1), isDuoError("INVALID_ARGUMENT", /matmul: y \[T=1, 12\] holds 11 elements, it needs at least 12/));
    assert.throws(() => k.rmsnorm(Y, X, k.vector(data(n, 4)), 3, 1e-5), isDuoError("INVALID_ARGUMENT", /rmsnorm: x \[T=3, 12\] holds 24 elements/));
    k.download(Y, got);
    assert.deepEqual(got, before);
    // another set's activations (a host array for wasm; wasm memory for the host sets)
    const foreign = other.activations(2 * n);
    assert.throws(() => k.add(Y, foreign), isDuoError("INVALID_ARGUMENT", /activations/));
    k.release(Y);
    k.release(X);
    const Z = k.activations(2 * n);
    k.download(Z, got);
    assert.ok(got.every((v) => v === 0), "fresh activations are zeroed, also where released ones were");
    k.dispose();
    other.dispose();
  });
}

function isDuoError(code: string, message: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof DuoError && e.code === code, String(e));
    assert.match(e.message, message);
    return true;
  };
}
