// Conformance of the CUDA model kernels (cuda/src/kernel_model.cu through src/model/kernels-cuda.ts) against the
// reference kernels (float64 accumulation), on a GPU or the host emulation build (helpers/cuda-target.ts). Outputs are
// poisoned with NaN before each op and live in views at an offset inside a larger buffer, so an element written
// outside the output, or one left unwritten, shows. Tolerances are stated beside each comparison: the CUDA kernels
// accumulate in f32 in their own order.
import { test } from "node:test";
import assert from "node:assert/strict";
import { type CudaBackend, createCudaBackend } from "../src/backend/cuda.ts";
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "../src/dtype.ts";
import { DuoError } from "../src/errors.ts";
import { CudaActivations, type CudaKernels } from "../src/model/kernels-cuda.ts";
import { ReferenceKernels } from "../src/model/kernels-reference.ts";
import type { Matrix, Vector, WeightDtype } from "../src/model/kernels.ts";
import { inverseFrequencies, ropeTables } from "../src/model/rope.ts";
import { dequantizeQ4_K, dequantizeQ6_K } from "../src/model/kquants.ts";
import { dequantizeQ4_0, dequantizeQ8_0, quantizeQ4_0, quantizeQ8_0 } from "../src/model/tensor-types.ts";
import { loadLibrary } from "../ffi/load.ts";
import { STATUS } from "../ffi/symbols.ts";
import { cudaTarget } from "./helpers/cuda-target.ts";
import { randomArray, rng } from "./helpers/random.ts";

const { library, label, skip } = cudaTarget;
const U = 2 ** -24; // f32 unit roundoff
const PAD = 5; // poisoned elements before and after every output view

interface Sets {
  backend: CudaBackend;
  cuda: CudaKernels;
  ref: ReferenceKernels;
}

async function withSets(body: (s: Sets) => void | Promise<void>): Promise<void> {
  const backend = (await createCudaBackend({ cudaLibrary: library })) as CudaBackend;
  const cuda = await backend.modelKernels();
  try {
    await body({ backend, cuda, ref: new ReferenceKernels() });
  } finally {
    cuda.dispose();
    await backend.dispose();
  }
}

/** Raw little-endian bytes of `values` in `dtype` (what a model file holds). The K-quants have no quantizer: their
 *  blocks are random bytes with finite f16 scales (seeded by the values' length). */
function bytesOf(values: Float32Array, dtype: WeightDtype): Uint8Array {
  if (dtype === "f32") return new Uint8Array(values.slice().buffer);
  if (dtype === "q8_0") return quantizeQ8_0(values);
  if (dtype === "q4_0") return quantizeQ4_0(values);
  if (dtype === "q4_k" || dtype === "q6_k") return kBlocks(dtype, values.length);
  return new Uint8Array(Uint16Array.from(values, dtype === "bf16" ? f32ToBf16Bits : f32ToF16Bits).buffer);
}

/** The values `bytesOf` stores (what both kernel sets compute with). */
function stored(values: Float32Array, dtype: WeightDtype): Float32Array {
  if (dtype === "f32") return values;
  if (dtype === "q8_0") return dequantizeQ8_0(quantizeQ8_0(values));
  if (dtype === "q4_0") return dequantizeQ4_0(quantizeQ4_0(values));
  if (dtype === "q4_k") return dequantizeQ4_K(kBlocks(dtype, values.length));
  if (dtype === "q6_k") return dequantizeQ6_K(kBlocks(dtype, values.length));
  return Float32Array.from(Uint16Array.from(values, dtype === "bf16" ? f32ToBf16Bits : f32ToF16Bits), dtype === "bf16" ? bf16BitsToF32 : f16BitsToF32);
}

/** Random Q4_K / Q6_K blocks for n weights: random bytes, f16 scales set to finite values (d > 0, dmin < 0 for Q4_K). */
function kBlocks(dtype: "q4_k" | "q6_k", n: number): Uint8Array {
  const size = dtype === "q4_k" ? 144 : 210, out = new Uint8Array((n / 256) * size), r = rng(n);
  for (let i = 0; i < out.length; i++) out[i] = Math.floor(r() * 256);
  const v = new DataView(out.buffer);
  for (let o = 0; o < out.length; o += size) {
    if (dtype === "q4_k") v.setUint16(o, f32ToF16Bits(0.002 * (r() + 0.1)), true), v.setUint16(o + 2, f32ToF16Bits(-0.01 * r()), true);
    else v.setUint16(o + 208, f32ToF16Bits(0.0003 * (r() - 0.5)), true);
  }
  return out;
}

/** The same matrix in both sets. */
function matrices(s: Sets, values: Float32Array, rows: number, cols: number, dtype: WeightDtype): [Matrix, Matrix] {
  const bytes = bytesOf(values, dtype), mc = s.cuda.matrix(rows, cols, dtype), mr = s.ref.matrix(rows, cols, dtype);
  s.cuda.write(mc, 0, bytes);
  s.ref.write(mr, 0, bytes);
  return [mc, mr];
}

/** Device activations holding `src`. */
function device(k: CudaKernels, src: Float32Array): CudaActivations {
  const a = k.activations(src.length);
  k.upload(a, src);
  return a;
}

/** A view of n elements at offset PAD in a NaN-filled buffer of n + 2·PAD. */
function poisoned(k: CudaKernels, n: number): CudaActivations {
  return k.view(device(k, new Float32Array(n + 2 * PAD).fill(NaN)), PAD, n);
}

/** The n elements of a `poisoned` view; asserts that the padding around it is still NaN. */
function readView(k: CudaKernels, v: CudaActivations, what: string): Float32Array {
  const whole = new Float32Array(v.length + 2 * PAD);
  k.download(new CudaActivations(v.handle, v.offset - PAD, whole.length, false), whole);
  for (let i = 0; i < PAD; i++) {
    assert.ok(Number.isNaN(whole[i]!) && Number.isNaN(whole[whole.length - 1 - i]!), `${what}: wrote outside its output`);
  }
  return whole.subarray(PAD, PAD + v.length);
}

function rejects(code: string, pattern: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof DuoError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, pattern);
    return true;
  };
}

test(`cuda model kernels (${label}): matmul = reference for f32, f16, bf16, q8_0, q4_0, q4_k and q6_k weights, odd shapes, more than one token tile, aligned and unaligned x, with and without bias`, { skip }, () =>
  withSets((s) => {
    let cases = 0;
    for (const dtype of ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k"] as const) {
      // [T, cols, rows, element offset of x]: cols a multiple of 8 with x 16-byte aligned take the kernel's vector loads
      const shapes = dtype === "q8_0" || dtype === "q4_0" ? [[1, 64, 5, 0], [11, 32, 9, 1]]
        : dtype === "q4_k" || dtype === "q6_k" ? [[1, 512, 3, 0], [9, 256, 5, 1]]
        : [[1, 1, 1, 0], [1, 37, 9, 0], [3, 64, 17, 0], [3, 64, 17, 1], [11, 40, 3, 0], [11, 40, 3, 2]];
      for (const [T, cols, rows, xOffset] of shapes as [number, number, number, number][]) {
        for (const withBias of [false, true]) {
          const seed = 100 * ++cases;
          const x = randomArray(T * cols, seed), w = randomArray(rows * cols, seed + 1), b = randomArray(rows, seed + 2);
          const [mc, mr] = matrices(s, w, rows, cols, dtype), ws = stored(w, dtype);
          const yr = new Float32Array(T * rows);
          s.ref.matmul(yr, x, mr, T, withBias ? s.ref.vector(b) : undefined);
          const Y = poisoned(s.cuda, T * rows);
          const X = s.cuda.view(device(s.cuda, new Float32Array(xOffset + x.length)), xOffset, x.length);
          s.cuda.upload(X, x);
          s.cuda.matmul(Y, X, mc, T, withBias ? s.cuda.vector(b) : undefined);
          const yc = readView(s.cuda, Y, `matmul ${dtype}`);
          for (let t = 0; t < T; t++) {
            for (let o = 0; o < rows; o++) {
              let mag = withBias ? Math.abs(b[o]!) : 0;
              for (let i = 0; i < cols; i++) mag += Math.abs(x[t * cols + i]! * ws[o * cols + i]!);
              // a lane sums at most max(cols/32, 8·cols/256) products (scalar / vector loads), then 32 lane sums and
              // the bias: (that + 34)·u·(|b| + Σ|x·w|)
              const tol = (Math.max(Math.ceil(cols / 32), 8 * Math.ceil(cols / 256)) + 34) * U * mag;
              const i = t * rows + o;
              assert.ok(Math.abs(yc[i]! - yr[i]!) <= tol, `${dtype} T=${T} cols=${cols} rows=${rows} x at +${xOffset} bias=${withBias}: y[${t}][${o}] cuda ${yc[i]} ref ${yr[i]} (tolerance ${tol})`);
            }
          }
        }
      }
    }
  }));

test(`cuda model kernels (${label}): embed = reference (the same bits) for f32, f16, bf16, q8_0, q4_0, q4_k and q6_k tables, repeated ids`, { skip }, () =>
  withSets((s) => {
    const rows = 7, cols = 256, ids = Int32Array.from([3, 0, 6, 3, 1]);
    for (const dtype of ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k"] as const) {
      const [mc, mr] = matrices(s, randomArray(rows * cols, 7, 3), rows, cols, dtype);
      const yr = new Float32Array(ids.length * cols);
      s.ref.embed(yr, ids, mr);
      const Y = poisoned(s.cuda, ids.length * cols);
      s.cuda.embed(Y, ids, mc);
      assert.deepEqual(readView(s.cuda, Y, `embed ${dtype}`), yr, dtype);
    }
  }));

test(`cuda model kernels (${label}): rmsnorm = reference within 8u relative, rows wider than a block, in place`, { skip }, () =>
  withSets((s) => {
    for (const [T, n] of [[1, 1], [3, 64], [2, 300]] as const) {
      const x = randomArray(T * n, n, 5), w = randomArray(n, n + 1, 2);
      const wc = s.cuda.vector(w), wr = s.ref.vector(w);
      const yr = new Float32Array(T * n);
      s.ref.rmsnorm(yr, x, wr, T, 1e-5);
      const Y = poisoned(s.cuda, T * n);
      s.cuda.rmsnorm(Y, device(s.cuda, x), wc, T, 1e-5);
      const yc = readView(s.cuda, Y, "rmsnorm");
      // the sum of squares takes a few f32 roundings per level (thread, warp, block), then sqrt, divide, 2 products
      for (let i = 0; i < yr.length; i++) assert.ok(Math.abs(yc[i]! - yr[i]!) <= 8 * U * Math.abs(yr[i]!), `T=${T} n=${n}: y[${i}] cuda ${yc[i]} ref ${yr[i]}`);
      const X = device(s.cuda, x); // y = x
      s.cuda.rmsnorm(X, X, wc, T, 1e-5);
      const inPlace = new Float32Array(T * n);
      s.cuda.download(X, inPlace);
      assert.deepEqual(inPlace, yc, "in place = out of place");
    }
  }));

test(`cuda model kernels (${label}): rope = reference within 4u·(|a| + |b|) per pair, on a view at an offset`, { skip }, () =>
  withSets((s) => {
    const T = 3, heads = 2, D = 64, half = D / 2;
    const { cos, sin } = ropeTables(inverseFrequencies(D, 500000, { type: "none" }), 1000, T);
    const x = randomArray(T * heads * D, 11, 4);
    const xr = x.slice();
    s.ref.rope(xr, T, heads, D, cos, sin);
    const X = poisoned(s.cuda, x.length);
    s.cuda.upload(X, x);
    s.cuda.rope(X, T, heads, D, cos, sin);
    const xc = readView(s.cuda, X, "rope");
    for (let th = 0; th < T * heads; th++) {
      for (let i = 0; i < half; i++) {
        const a = x[th * D + i]!, b = x[th * D + half + i]!, tol = 4 * U * (Math.abs(a) + Math.abs(b));
        for (const j of [th * D + i, th * D + half + i]) assert.ok(Math.abs(xc[j]! - xr[j]!) <= tol, `x[${j}] cuda ${xc[j]} ref ${xr[j]}`);
      }
    }
  }));

test(`cuda model kernels (${label}): swiglu = reference within 1e-6 relative (1e-30 absolute where e^-g overflows f32), also with y = gate`, { skip }, () =>
  withSets((s) => {
    const n = 1000, gate = randomArray(n, 21, 12), up = randomArray(n, 22, 3);
    gate.set([0, -100, 100, -88, 90, 1e-20]);
    const yr = new Float32Array(n);
    s.ref.swiglu(yr, gate, up);
    const Y = poisoned(s.cuda, n), G = device(s.cuda, gate), Up = device(s.cuda, up);
    s.cuda.swiglu(Y, G, Up);
    const yc = readView(s.cuda, Y, "swiglu");
    // expf within 2 ulp on a GPU, then 3 roundings
    for (let i = 0; i < n; i++) assert.ok(Math.abs(yc[i]! - yr[i]!) <= 1e-6 * Math.abs(yr[i]!) + 1e-30, `y[${i}] (gate ${gate[i]}) cuda ${yc[i]} ref ${yr[i]}`);
    s.cuda.swiglu(G, G, Up);
    const inPlace = new Float32Array(n);
    s.cuda.download(G, inPlace);
    assert.deepEqual(inPlace, yc, "y = gate");
  }));

test(`cuda model kernels (${label}): add is y += x exactly, on views of one buffer and with y = x`, { skip }, () =>
  withSets((s) => {
    const n = 777, a = randomArray(2 * n, 31, 100);
    const both = device(s.cuda, a), y = s.cuda.view(both, 0, n), x = s.cuda.view(both, n, n);
    s.cuda.add(y, x);
    const got = new Float32Array(2 * n);
    s.cuda.download(both, got);
    for (let i = 0; i < n; i++) assert.equal(got[i], Math.fround(a[i]! + a[n + i]!), `y[${i}]`);
    assert.deepEqual(got.subarray(n), a.subarray(n), "x unchanged");
    s.cuda.add(x, x);
    s.cuda.download(both, got);
    for (let i = 0; i < n; i++) assert.equal(got[n + i], 2 * a[n + i]!, `x[${i}] doubled`);
  }));

test(`cuda model kernels (${label}): argmax is the first largest, NaN never wins, 0 when all are NaN`, { skip }, () =>
  withSets((s) => {
    const oracle = (v: Float32Array) => {
      let best = -1;
      for (let i = 0; i < v.length; i++) if (!Number.isNaN(v[i]!) && (best < 0 || v[i]! > v[best]!)) best = i;
      return Math.max(best, 0);
    };
    const big = randomArray(5000, 41);
    big[4321] = 7;
    const cases: [string, Float32Array][] = [
      ["random, 5000 (past one block's threads)", big],
      ["ties: the first", Float32Array.from([1, 5, 2, 5, 5, -1])],
      ["NaN first and between", Float32Array.from([NaN, 1, NaN, 3, NaN, 2])],
      ["NaN only", new Float32Array(300).fill(NaN)],
      ["-Inf only", new Float32Array(9).fill(-Infinity)],
      ["Inf and NaN", Float32Array.from([NaN, -Infinity, Infinity, NaN, Infinity])],
      ["one", Float32Array.from([-3])],
    ];
    for (const [what, v] of cases) {
      const X = poisoned(s.cuda, v.length);
      s.cuda.upload(X, v);
      assert.equal(s.cuda.argmax(X), oracle(v), what);
    }
    assert.equal(oracle(cases[0]![1]), 4321);
  }));

test(`cuda model kernels (${label}): bad arguments are refused with a DuoError naming them, and the output is unchanged`, { skip }, () =>
  withSets(async (s) => {
    const [w] = matrices(s, randomArray(4 * 32, 51), 4, 32, "f32");
    const x = device(s.cuda, randomArray(2 * 32, 52)), Y = poisoned(s.cuda, 8);
    const unchanged = () => assert.ok(readView(s.cuda, Y, "refused").every(Number.isNaN), "the output is unchanged");
    assert.throws(() => s.cuda.matmul(Y, x, w, 3), rejects("INVALID_ARGUMENT", /matmul: x \[T=3, 32\] holds 64 elements, it needs at least 96/));
    assert.throws(() => s.cuda.matmul(s.cuda.view(Y, 0, 4), x, w, 2), rejects("INVALID_ARGUMENT", /matmul: y \[T=2, 4\] holds 4 elements, it needs at least 8/));
    assert.throws(() => s.cuda.matmul(Y, x, w, 2, s.cuda.vector(new Float32Array(3))), rejects("INVALID_ARGUMENT", /matmul: the bias has 3 elements, the matrix 4 rows/));
    // y overlapping x (two views of one buffer): the library refuses it
    const shared = device(s.cuda, new Float32Array(80));
    assert.throws(() => s.cuda.matmul(s.cuda.view(shared, 40, 8), s.cuda.view(shared, 0, 64), w, 2), rejects("INVALID_ARGUMENT", /duo_model_matmul: y .* overlaps x .* must be disjoint/));
    assert.throws(() => s.cuda.embed(Y, Int32Array.from([1, 9]), s.cuda.matrix(5, 4, "f32")), rejects("INVALID_ARGUMENT", /duo_model_embed: ids\[1\] must be in \[0, rows = 5\), got 9/));
    assert.throws(() => s.cuda.rope(Y, 1, 1, 7, new Float32Array(4), new Float32Array(4)), rejects("INVALID_ARGUMENT", /rope: the head dim must be even, got 7/));
    assert.throws(() => s.cuda.rope(Y, 2, 1, 4, new Float32Array(3), new Float32Array(4)), rejects("INVALID_ARGUMENT", /rope: cos \[T=2, 2\] holds 3 elements, it needs at least 4/));
    assert.throws(() => s.cuda.rmsnorm(Y, x, s.cuda.vector(new Float32Array(8).fill(1)), 1, -1), rejects("INVALID_ARGUMENT", /eps must be finite and >= 0, got -1/));
    assert.throws(() => s.cuda.swiglu(Y, s.cuda.view(x, 0, 4), x), rejects("INVALID_ARGUMENT", /swiglu: input 1 holds 4 elements, it needs at least 8/));
    assert.throws(() => s.cuda.argmax(s.cuda.view(x, 0, 0)), rejects("INVALID_ARGUMENT", /duo_model_argmax: n must be >= 1, got 0/));
    unchanged();
    // weights and views
    assert.throws(() => s.cuda.matrix(2, 32, "q4_k"), rejects("UNSUPPORTED", /a q4_k matrix needs rows of a multiple of 256 elements, got 32/));
    assert.throws(() => s.cuda.write(w, 4 * 32 * 4 - 4, new Uint8Array(8)), rejects("INVALID_ARGUMENT", /overruns a \[4, 32\] f32 matrix/));
    assert.throws(() => s.cuda.view(Y, 4, 5), rejects("INVALID_ARGUMENT", /view \[4, 9\) is past the end of activations of length 8/));
    const gone = device(s.cuda, new Float32Array(64));
    s.cuda.release(gone);
    s.cuda.release(gone); // twice: nothing
    assert.throws(() => s.cuda.matmul(Y, gone, w, 2), rejects("INVALID_ARGUMENT", /matmul x: activations released/));
    unchanged();
    // the library checks again what the TypeScript side already checked: ranges past a buffer, head dims, dtype codes
    const { lib } = await loadLibrary(library);
    assert.equal(lib.duo_model_add(Y.handle, Y.offset, x.handle, 0, 14), STATUS.ERR_CAPACITY);
    assert.match(lib.duo_last_error(), /duo_model_add: y: elements \[5, 19\) are past the end of buffer \d+ \(18 f32 elements\)/);
    assert.equal(lib.duo_model_rope(Y.handle, Y.offset, new Float32Array(4), new Float32Array(4), 1, 1, 7), STATUS.ERR_ARGUMENT);
    assert.match(lib.duo_last_error(), /duo_model_rope: head_dim must be even and >= 2, got 7/);
    assert.equal(lib.duo_model_matmul(Y.handle, Y.offset, x.handle, 0, (w as unknown as { handle: number }).handle, 7, 0, 2, 32, 4), STATUS.ERR_ARGUMENT);
    assert.match(lib.duo_last_error(), /dtype must be 0 \(f32\), 1 \(f16\), 2 \(bf16\), 3 \(q8_0\), 4 \(q4_0\), 5 \(q4_k\) or 6 \(q6_k\), got 7/);
    unchanged();
  }));

test(`cuda model kernels (${label}): memory counts weights, dispose frees every buffer, then the set refuses use`, { skip }, async () => {
  const backend = (await createCudaBackend({ cudaLibrary: library })) as CudaBackend;
  try {
    const before = backend.memory(0).allocated;
    const k = await backend.modelKernels();
    const m = k.matrix(8, 32, "bf16");
    k.write(m, 0, new Uint8Array(8 * 32 * 2));
    const v: Vector = k.vector(new Float32Array(8));
    k.activations(100);
    assert.equal(k.memory().weights, 8 * 32 * 2 + v.length * 4);
    assert.equal(backend.memory(0).allocated, before + 8 * 32 * 2 + 32 + 400);
    assert.throws(() => k.reserve(2 ** 60, 0), rejects("CAPACITY", /do not fit in the device's \d+ free bytes/));
    k.dispose();
    assert.equal(backend.memory(0).allocated, before);
    assert.throws(() => k.activations(1), rejects("DISPOSED", /after dispose/));
  } finally {
    await backend.dispose();
  }
});

test(`cuda model kernels (${label}): uploads larger than the 8 MiB pinned staging chunk arrive whole (weights and activations)`, { skip }, () =>
  withSets((s) => {
    const n = (9 << 20) / 4 + 3, src = randomArray(n, 61);
    const a = device(s.cuda, src), back = new Float32Array(n);
    s.cuda.download(a, back);
    assert.deepEqual(back, src);
    // a matrix written in two pieces, read through embed
    const rows = 3, cols = n - 1 - ((n - 1) % 32);
    const values = randomArray(rows * cols, 62), bytes = new Uint8Array(values.buffer), half = rows * cols * 2;
    const m = s.cuda.matrix(rows, cols, "f32");
    s.cuda.write(m, 0, bytes.subarray(0, half));
    s.cuda.write(m, half, bytes.subarray(half));
    const Y = s.cuda.activations(cols);
    s.cuda.embed(Y, Int32Array.from([2]), m);
    const row = new Float32Array(cols);
    s.cuda.download(Y, row);
    assert.deepEqual(row, values.subarray(2 * cols));
  }));
