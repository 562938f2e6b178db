// Conformance of the wasm and native backward kernels of gate identification (wasm/model/backward.c) against the
// reference set (float64 accumulation, src/identify/backward-reference.ts), which is itself checked against the
// float64 ops of src/identify (ops.ts, attention.ts). Tolerance, f32 against float64: every element within
// 1e-4·|ref| + 1e-5·max|ref| (the sums run in f32 over at most a few hundred terms here). Outputs that a call
// overwrites are poisoned with NaN first, so an element it fails to write shows; bad shapes throw a DuoError
// before anything is written. The native kernels flush subnormals (native/src/backward.c: a floor of 2^-126
// absolute per operation, far below these tolerances at the magnitudes tested).
import { test } from "node:test";
import assert from "node:assert/strict";
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "../src/dtype.ts";
import { createModelKernels, type ModelKernels, type WeightDtype } from "../src/model/kernels.ts";
import { probeNative } from "../src/backend/native.ts";
import { runtime } from "../src/runtime.ts";
import { type AttendShape, type BackwardKernels, createBackwardKernels } from "../src/identify/backward-kernels.ts";
import { attend as attend64, attendBackward as attendBackward64 } from "../src/identify/attention.ts";
import { linearBackward as linear64, rmsnormBackward as rmsnorm64, rope as rope64, swigluBackward as swiglu64 } from "../src/identify/ops.ts";
import { RowSet, windowKeyRanges } from "../src/identify/window.ts";
import { randomArray } from "./helpers/random.ts";
import { throwsDuo } from "./helpers/errors.ts";
import { onEachNativeIsa } from "./helpers/native-isa.ts";

const native = await probeNative({});
const skips = {
  wasm: runtime().wasmSimd ? false : "skipped: this runtime has no WebAssembly SIMD",
  native: native.usable ? false : `skipped: native backend not usable here (${native.reason})`,
};

function close(got: Float32Array | Float64Array, want: ArrayLike<number>, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  let scale = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]!));
  for (let i = 0; i < want.length; i++) {
    const w = want[i]!, g = got[i]!;
    if (w === -Infinity && g === -Infinity) continue;
    assert.ok(Math.abs(g - w) <= 1e-4 * Math.abs(w) + 1e-5 * scale, `${what}[${i}] = ${g}, reference ${w} (scale ${scale})`);
  }
}

const poison = (n: number) => new Float32Array(n).fill(NaN);

/** Raw bytes of `values` in `dtype`, and the values as stored. */
function asDtype(values: Float32Array, dtype: WeightDtype): { bytes: Uint8Array; stored: Float32Array } {
  if (dtype === "f32") return { bytes: new Uint8Array(values.slice().buffer), stored: values };
  const bits = Uint16Array.from(values, dtype === "bf16" ? f32ToBf16Bits : f32ToF16Bits);
  return { bytes: new Uint8Array(bits.buffer), stored: Float32Array.from(bits, dtype === "bf16" ? bf16BitsToF32 : f16BitsToF32) };
}

/** The key ranges of the test window (sinks 4, recent 8, blocks of 4) for the query rows Q over the key rows P. */
const windowRanges = (Q: RowSet, P: RowSet) => windowKeyRanges({ sink: 4, recent: 8, blockSize: 4 }, Q, P);

async function sets(name: "wasm" | "native"): Promise<{ refModel: ModelKernels; fastModel: ModelKernels; ref: BackwardKernels; fast: BackwardKernels }> {
  const refModel = await createModelKernels("reference"), fastModel = await createModelKernels(name, { threads: 2 });
  return { refModel, fastModel, ref: await createBackwardKernels(refModel), fast: await createBackwardKernels(fastModel, { threads: 2 }) };
}

test("reference backward kernels equal the float64 ops of src/identify (f32 rounding apart)", async () => {
  const refModel = await createModelKernels("reference"), ref = await createBackwardKernels(refModel);
  // transposed matmul
  const T = 5, nin = 11, nout = 7, dy = randomArray(T * nout, 1), w = randomArray(nout * nin, 2);
  const m = refModel.matrix(nout, nin, "f32");
  refModel.write(m, 0, new Uint8Array(w.slice().buffer));
  const dx = poison(T * nin), want = new Float64Array(T * nin);
  ref.linearBackward(dx, dy, m, T, false);
  linear64(want, Float64Array.from(dy), Float64Array.from(w), T, nout, nin);
  close(dx, want, "linearBackward");
  // rmsnorm backward, with r = 1/rinv
  const n = 9, x = randomArray(T * n, 3), g = randomArray(n, 4), dyn = randomArray(T * n, 5), rinv = new Float32Array(T);
  ref.rmsInv(rinv, x, T, n, 1e-6);
  const got = randomArray(T * n, 6), want2 = Float64Array.from(got);
  ref.rmsnormBackward(got, dyn, x, g, rinv, T);
  rmsnorm64(want2, Float64Array.from(dyn), Float64Array.from(x), Float64Array.from(g), Float64Array.from(rinv, (r) => 1 / r), T);
  close(got, want2, "rmsnormBackward");
  // swiglu backward
  const a = randomArray(20, 7, 6), u = randomArray(20, 8), dm = randomArray(20, 9), da = poison(20), du = poison(20);
  const wa = new Float64Array(20), wu = new Float64Array(20);
  ref.swigluBackward(da, du, dm, a, u);
  swiglu64(wa, wu, Float64Array.from(dm), Float64Array.from(a), Float64Array.from(u));
  close(da, wa, "swiglu da");
  close(du, wu, "swiglu du");
  // RoPE⁻¹ undoes RoPE
  const D = 8, H = 2, xr = randomArray(T * H * D, 10), cos = randomArray(T * D / 2, 11), sin = Float32Array.from(cos, (c) => Math.sqrt(1 - c * c));
  const rot = Float64Array.from(xr);
  rope64(rot, T, H, D, Float64Array.from(cos), Float64Array.from(sin));
  const back = Float32Array.from(rot);
  ref.ropeInverse(back, T, H, D, cos, sin);
  close(back, xr, "RoPE⁻¹(RoPE(x))");
  // attention forward and backward on a window, against attention.ts on the same rows
  const window = { sink: 4, recent: 8, blockSize: 4 }, Tq = 24, Q = new RowSet(4, 12, Tq), P = new RowSet(4, 4, Tq);
  const heads = { Hq: 4, Hkv: 2, D: 8 }, s: AttendShape = { nq: Q.length, nk: P.length, ...heads };
  const q = randomArray(s.nq * 4 * 8, 12), k = randomArray(s.nk * 2 * 8, 13), v = randomArray(s.nk * 2 * 8, 14), ranges = windowRanges(Q, P);
  const out = poison(s.nq * 32), lse = poison(s.nq * 4), out64 = new Float64Array(s.nq * 32), lse64 = new Float64Array(s.nq * 4);
  ref.attend(out, lse, q, k, v, ranges, s);
  attend64(out64, lse64, Float64Array.from(q), Q, Float64Array.from(k), Float64Array.from(v), P, heads, window);
  close(out, out64, "attend out");
  close(lse, lse64, "attend lse");
  const dO = randomArray(s.nq * 32, 15), dq = new Float32Array(s.nq * 32), dk = new Float32Array(s.nk * 16), dv = new Float32Array(s.nk * 16);
  const dq64 = new Float64Array(s.nq * 32), dk64 = new Float64Array(s.nk * 16), dv64 = new Float64Array(s.nk * 16);
  ref.attendBackward(dq, dk, dv, dO, out, lse, q, k, v, ranges, s);
  attendBackward64(dq64, dk64, dv64, Float64Array.from(dO), Float64Array.from(out), Float64Array.from(lse), Float64Array.from(q), Q, Float64Array.from(k), Float64Array.from(v), P, heads, window);
  close(dq, dq64, "dq");
  close(dk, dk64, "dk");
  close(dv, dv64, "dv");
});

for (const name of ["wasm", "native"] as const) {
  const note = name === "native" ? " (2 threads: columns and heads split)" : "";
  test(`${name} transposed matmul matches the reference for f32, f16 and bf16 weights, odd shapes, overwrite and accumulate${note}`, { skip: skips[name] }, async () => {
    const { refModel, fastModel, ref, fast } = await sets(name);
    for (const dtype of ["f32", "f16", "bf16"] as const) {
      for (const [T, nin, nout] of [[1, 1, 1], [1, 8, 3], [3, 7, 5], [4, 16, 2], [5, 37, 9], [37, 64, 11], [70, 24, 6], [9, 200, 130], [18, 604, 300]] as const) {
        const { bytes } = asDtype(randomArray(nout * nin, nin * 7 + nout), dtype);
        const mr = refModel.matrix(nout, nin, dtype), mf = fastModel.matrix(nout, nin, dtype);
        refModel.write(mr, 0, bytes);
        fastModel.write(mf, 0, bytes);
        const dy = randomArray(T * nout, T + nin);
        for (const acc of [false, true]) {
          const start = acc ? randomArray(T * nin, 99) : poison(T * nin), want = start.slice(), got = start.slice();
          ref.linearBackward(want, dy, mr, T, acc);
          fast.linearBackward(got, dy, mf, T, acc);
          close(got, want, `${dtype} T=${T} in=${nin} out=${nout} accumulate=${acc}`);
        }
      }
    }
  });

  test(`${name} rmsnorm, SwiGLU and RoPE⁻¹ backward match the reference, odd widths`, { skip: skips[name] }, async () => {
    const { ref, fast } = await sets(name);
    for (const [T, n] of [[1, 1], [3, 7], [5, 64], [4, 130]] as const) {
      const x = randomArray(T * n, n), w = randomArray(n, n + 1), dy = randomArray(T * n, n + 2);
      const ri = poison(T), rf = poison(T);
      ref.rmsInv(ri, x, T, n, 1e-5);
      fast.rmsInv(rf, x, T, n, 1e-5);
      close(rf, ri, `rmsInv T=${T} n=${n}`);
      const start = randomArray(T * n, n + 3), want = start.slice(), got = start.slice();
      ref.rmsnormBackward(want, dy, x, w, ri, T);
      fast.rmsnormBackward(got, dy, x, w, ri, T);
      close(got, want, `rmsnormBackward T=${T} n=${n}`);
    }
    for (const n of [1, 3, 4, 37, 256]) {
      const a = randomArray(n, n, 12), u = randomArray(n, n + 1), dm = randomArray(n, n + 2);
      const [da, du, wa, wu] = [poison(n), poison(n), poison(n), poison(n)];
      a[0] = n === 256 ? 200 : a[0]!; // saturated sigmoid
      ref.swigluBackward(wa, wu, dm, a, u);
      fast.swigluBackward(da, du, dm, a, u);
      close(da, wa, `swiglu da n=${n}`);
      close(du, wu, `swiglu du n=${n}`);
    }
    for (const [T, H, D] of [[1, 1, 2], [3, 2, 6], [5, 3, 64], [2, 2, 12]] as const) {
      const x = randomArray(T * H * D, D), cos = randomArray(T * D / 2, D + 1), sin = randomArray(T * D / 2, D + 2);
      const want = x.slice(), got = x.slice();
      ref.ropeInverse(want, T, H, D, cos, sin);
      fast.ropeInverse(got, T, H, D, cos, sin);
      close(got, want, `ropeInverse T=${T} H=${H} D=${D}`);
    }
  });

  test(`${name} streaming attention forward, its backward and the mix + dα reduction match the reference (MHA and GQA, rows without keys or gradient)${note}`, { skip: skips[name] }, async () => {
    const { ref, fast } = await sets(name);
    for (const [Hq, Hkv, D] of [[2, 2, 4], [4, 2, 8], [6, 2, 64], [3, 1, 12], [2, 1, 128], [2, 2, 48]] as const) { // D: every branch of ATTEND_DISPATCH
      const Tq = 40, Q = new RowSet(4, 20, Tq), P = new RowSet(4, 8, Tq), s: AttendShape = { nq: Q.length, nk: P.length, Hq, Hkv, D };
      const nqd = s.nq * Hq * D, nkd = s.nk * Hkv * D;
      const q = randomArray(nqd, D, 2), k = randomArray(nkd, D + 1, 2), v = randomArray(nkd, D + 2), ranges = windowRanges(Q, P);
      ranges.set([0, 3, 3], 3 * 1); // a row that sees no key
      const [wo, wl, go, gl] = [poison(nqd), poison(s.nq * Hq), poison(nqd), poison(s.nq * Hq)];
      ref.attend(wo, wl, q, k, v, ranges, s);
      fast.attend(go, gl, q, k, v, ranges, s);
      close(go, wo, `attend out Hq=${Hq} Hkv=${Hkv} D=${D}`);
      close(gl, wl, `attend lse Hq=${Hq} Hkv=${Hkv} D=${D}`);
      const dO = randomArray(nqd, D + 3);
      dO.fill(0, 0, 2 * Hq * D); // the first two rows carry no gradient (outside the cone)
      const base = [randomArray(nqd, 5), randomArray(nkd, 6), randomArray(nkd, 7)];
      const want = base.map((a) => a.slice()), got = base.map((a) => a.slice());
      ref.attendBackward(want[0]!, want[1]!, want[2]!, dO, wo, wl, q, k, v, ranges, s);
      fast.attendBackward(got[0]!, got[1]!, got[2]!, dO, wo, wl, q, k, v, ranges, s);
      ["dq", "dk", "dv"].forEach((n, i) => close(got[i]!, want[i]!, `${n} Hq=${Hq} Hkv=${Hkv} D=${D}`));
      const dmix = randomArray(nqd, 8), afull = randomArray(nqd, 9), alpha = Float32Array.from({ length: Hkv }, (_, g) => g / Hkv + 0.1);
      const wd = poison(nqd), gd = poison(nqd), wa = Float64Array.from({ length: Hkv }, (_, g) => g), ga = wa.slice();
      ref.mixBackward(wd, wa, dmix, afull, wo, alpha, s.nq, { Hq, Hkv, D });
      fast.mixBackward(gd, ga, dmix, afull, wo, alpha, s.nq, { Hq, Hkv, D });
      close(gd, wd, "dstr");
      close(ga, wa, "dalpha");
    }
  });

  test(`${name} backward kernels refuse bad shapes with a DuoError and write nothing`, { skip: skips[name] }, async () => {
    const { fastModel, fast } = await sets(name);
    const m = fastModel.matrix(4, 8, "f32"), q8 = fastModel.matrix(4, 32, "q8_0");
    const dx = new Float32Array(16).fill(3);
    throwsDuo(() => fast.linearBackward(dx, new Float32Array(7), m, 2, false), "INVALID_ARGUMENT", /dy \[T, W\.rows\] has 7 elements; the shapes need at least 8/);
    throwsDuo(() => fast.linearBackward(new Float32Array(64), new Float32Array(8), q8, 2, false), "UNSUPPORTED", /f32, f16 or bf16 weights, got a q8_0 matrix/);
    throwsDuo(() => fast.rmsnormBackward(dx, new Float32Array(16), new Float32Array(16), new Float32Array(8), new Float32Array(1), 2), "INVALID_ARGUMENT", /rinv \[T\] has 1 elements/);
    throwsDuo(() => fast.ropeInverse(dx, 2, 1, 7, new Float32Array(8), new Float32Array(8)), "INVALID_ARGUMENT", /head dim must be even/);
    assert.ok(dx.every((x) => x === 3), "dx unchanged");
    const s: AttendShape = { nq: 2, nk: 3, Hq: 2, Hkv: 1, D: 4 }, out = new Float32Array(16).fill(3);
    const args = [out, new Float32Array(4), new Float32Array(16), new Float32Array(12), new Float32Array(12)] as const;
    throwsDuo(() => fast.attend(...args, Int32Array.of(0, 0, 1, 2, 1, 4), s), "INVALID_ARGUMENT", /ranges\[1\] = \(2, 1, 4\) must satisfy 0 <= sinks <= start <= end <= nk = 3/);
    throwsDuo(() => fast.attend(...args, Int32Array.of(0, 0, 1, 0, 0, 1), { ...s, Hkv: 3 }), "INVALID_ARGUMENT", /Hkv \(3\) must divide Hq \(2\)/);
    throwsDuo(() => fast.attend(...args, Int32Array.of(0, 0, 1, 0, 0, 1), { ...s, D: 6 }), "INVALID_ARGUMENT", /head dim must be a multiple of 4/);
    assert.ok(out.every((x) => x === 3), "out unchanged");
    const da = new Float64Array(1).fill(3);
    throwsDuo(() => fast.mixBackward(new Float32Array(16), da, new Float32Array(16), new Float32Array(15), new Float32Array(16), new Float32Array(1), 2, { Hq: 2, Hkv: 1, D: 4 }), "INVALID_ARGUMENT", /afull \[nq, Hq, D\] has 15 elements/);
    assert.equal(da[0], 3);
  });
}

for (const name of ["wasm", "native"] as const) {
  test(`${name} backward kernels flush softmax weights and σ below 2^-50 and gradients below 2^-90 to exact zeros, so nothing subnormal comes out (wasm has no FTZ / DAZ; on x86 a subnormal costs a ~100x microcode assist)`, { skip: skips[name] }, async () => {
    const { fast, fastModel } = await sets(name);
    const subnormal = (x: number) => x !== 0 && Math.abs(x) < 2 ** -126;
    // one query over three keys: keys 0 and 1 score 0, key 2 scores −110 in log2 units (q·k·log2e/√D), P ≈ 2^-111
    const s: AttendShape = { nq: 1, nk: 3, Hq: 1, Hkv: 1, D: 4 }, k2 = -110 / (16 * Math.LOG2E / 2);
    const q = Float32Array.of(16, 0, 0, 0), k = Float32Array.of(0, 1, 0, 0, 0, 0, 1, 0, k2, 0, 0, 1), v = randomArray(12, 31);
    const out = poison(4), lse = poison(1), out2 = poison(4), lse2 = poison(1);
    fast.attend(out, lse, q, k, v, Int32Array.of(0, 0, 3), s);
    fast.attend(out2, lse2, q, k, v, Int32Array.of(0, 0, 2), { ...s, nk: 2 });
    assert.deepEqual([...out, ...lse], [...out2, ...lse2], "key 2 is left out of the forward: the same bits as without it");
    // dO ≈ 2^-20: unflushed, dv[2] = P·dO ≈ 2^-131 and dk[2] ∝ P·dO would be subnormal
    const dO = Float32Array.of(2 ** -20, -(2 ** -20), 2 ** -21, 2 ** -20), dq = new Float32Array(4), dk = new Float32Array(12), dv = new Float32Array(12);
    fast.attendBackward(dq, dk, dv, dO, out, lse, q, k, v, Int32Array.of(0, 0, 3), s);
    assert.ok([...dk.subarray(8), ...dv.subarray(8)].every((x) => x === 0), `key 2's dk, dv are exact zeros: ${dk.subarray(8)} ${dv.subarray(8)}`);
    assert.ok(dv.subarray(0, 8).every((x) => x !== 0), "keys 0 and 1 get their gradient");
    assert.ok(![...dq, ...dk, ...dv].some(subnormal), "no subnormal in dq, dk, dv");
    // gradients below 2^-90 come out as exact zeros (the caller scales them to ~1: gradientScale), above it as computed
    const m = fastModel.matrix(3, 40, "f32");
    fastModel.write(m, 0, new Uint8Array(Float32Array.from({ length: 120 }, (_, i) => 0.25 + (i % 5) / 8).buffer));
    for (const [scale, kept] of [[2 ** -100, false], [2 ** -80, true]] as const) {
      const dx = poison(5 * 40), dy = Float32Array.from({ length: 15 }, (_, i) => scale * (1 + i / 16));
      fast.linearBackward(dx, dy, m, 5, false);
      assert.ok(dx.every((x) => (kept ? x > 2 ** -90 : x === 0)), `linearBackward at dy ~${scale}: ${dx.slice(0, 3)}`);
    }
    // SwiGLU: σ(−40) ≈ 2^-57.7 and σ(−90) ≈ 2^-130 flushed; σ(1), σ(−2) kept
    const a = Float32Array.of(-40, -90, 1, -2), u = Float32Array.of(1, 1, 1, 1), dm = Float32Array.of(2 ** -20, 2 ** -20, 0.5, 0.25);
    const da = poison(4), du = poison(4);
    fast.swigluBackward(da, du, dm, a, u);
    assert.ok(da[0] === 0 && da[1] === 0 && du[0] === 0 && du[1] === 0, `flushed lanes are exact zeros: ${da} ${du}`);
    assert.ok(![...da, ...du].some(subnormal), "no subnormal in da, du");
    const sig = (x: number) => 1 / (1 + Math.exp(-x));
    for (const i of [2, 3]) assert.ok(Math.abs(da[i]! - dm[i]! * sig(a[i]!) * (1 + a[i]! * (1 - sig(a[i]!)))) < 1e-6 && Math.abs(du[i]! - dm[i]! * a[i]! * sig(a[i]!)) < 1e-6, `lane ${i} kept`);
  });
}

test("native: every SIMD instruction set this CPU runs gives the reference's transposed f16 / bf16 matmul and attention backward", { skip: skips.native }, async () => {
  const ran = await onEachNativeIsa(["avx512", "avx2", "sse41", "neon"], async (isa) => {
    const { refModel, fastModel, ref, fast } = await sets("native");
    for (const dtype of ["f16", "bf16"] as const) {
      const { bytes } = asDtype(randomArray(13 * 40, 1), dtype);
      const mr = refModel.matrix(13, 40, dtype), mf = fastModel.matrix(13, 40, dtype);
      refModel.write(mr, 0, bytes);
      fastModel.write(mf, 0, bytes);
      const dy = randomArray(6 * 13, 2), want = poison(6 * 40), got = poison(6 * 40);
      ref.linearBackward(want, dy, mr, 6, false);
      fast.linearBackward(got, dy, mf, 6, false);
      close(got, want, `${isa} ${dtype} linearBackward`);
    }
    const Q = new RowSet(4, 12, 20), P = new RowSet(4, 4, 20), s: AttendShape = { nq: Q.length, nk: P.length, Hq: 4, Hkv: 2, D: 16 };
    const q = randomArray(s.nq * 64, 3), k = randomArray(s.nk * 32, 4), v = randomArray(s.nk * 32, 5), r = windowRanges(Q, P), dO = randomArray(s.nq * 64, 6);
    const o = new Float32Array(s.nq * 64), l = new Float32Array(s.nq * 4);
    ref.attend(o, l, q, k, v, r, s);
    const w3 = [new Float32Array(s.nq * 64), new Float32Array(s.nk * 32), new Float32Array(s.nk * 32)], g3 = w3.map((a) => a.slice());
    ref.attendBackward(w3[0]!, w3[1]!, w3[2]!, dO, o, l, q, k, v, r, s);
    fast.attendBackward(g3[0]!, g3[1]!, g3[2]!, dO, o, l, q, k, v, r, s);
    w3.forEach((w, i) => close(g3[i]!, w, `${isa} attention backward ${i}`));
  });
  assert.ok(ran.length >= 1, "at least one SIMD set ran");
});

test("native transposed matmul gives the same bits on 1, 2 and 3 threads (each element one chain of multiply-adds over W's rows, whatever thread or tile computes it)", { skip: skips.native }, async () => {
  // [T 18, nin 1100, nout 600]: AVX-512 tiles of 12, 4 and 1 tokens, two column blocks, three chunks of W's rows,
  // strips of 8 and the unpacked tail (1100 % 32 = 12, % 8 = 4) on every split
  const T = 18, nin = 1100, nout = 600, dy = randomArray(T * nout, 5), start = randomArray(T * nin, 6);
  for (const dtype of ["f32", "bf16"] as const) {
    const { bytes } = asDtype(randomArray(nout * nin, 7), dtype);
    const runs: Uint32Array[] = [];
    for (const threads of [1, 2, 3]) {
      const kn = await createModelKernels("native", { threads }), bk = await createBackwardKernels(kn, { threads });
      const m = kn.matrix(nout, nin, dtype);
      kn.write(m, 0, bytes);
      const dx = start.slice();
      bk.linearBackward(dx, dy, m, T, true);
      runs.push(new Uint32Array(dx.buffer));
      kn.dispose();
    }
    for (const r of runs.slice(1)) assert.ok(r.every((b, i) => b === runs[0]![i]), `${dtype}: the same bits on every thread count`);
  }
});

test("native backward kernels flush subnormals (x86 microcode assists made them ~150x slower) and leave the threads' FP mode as it was: the forward matmul still keeps subnormals", { skip: skips.native }, async () => {
  const kn = await createModelKernels("native", { threads: 2 }), bk = await createBackwardKernels(kn);
  const rows = 16, cols = 24, T = 4;
  const m = kn.matrix(rows, cols, "f32");
  kn.write(m, 0, new Uint8Array(Float32Array.from({ length: rows * cols }, (_, i) => 0.5 + (i % 7) / 8).buffer));
  const dy = new Float32Array(T * rows).fill(2 ** -140), dx = new Float32Array(T * cols).fill(NaN);
  bk.linearBackward(dx, dy, m, T, false);
  assert.ok(dx.every((v) => v === 0), `a sum of subnormal products is flushed to 0: ${dx.slice(0, 4)}`);
  // the exact result is below 2^-126 · Σ|w|: the flush is inside the stated absolute floor
  const x = new Float32Array(T * cols).fill(2 ** -140), y = new Float32Array(T * rows); // subnormal inputs and products
  kn.matmul(y, x, m, T);
  assert.ok(y.every((v) => v > 0 && v < 2 ** -126), `after a backward call the forward kernels still compute subnormals (FP mode restored in every thread): ${y.slice(0, 4)}`);
  kn.dispose();
});
