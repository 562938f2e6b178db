// The model-op conformance grid: every kernel set a backend gives (Backend.modelKernels) against the reference
// kernels (float64 accumulation, weights decoded at load: src/model/kernels-reference.ts), op by op, on the same host
// data uploaded into each set's own activations. Outputs are poisoned with NaN before every run, and each output
// buffer is longer than the op's output by a guard row that must still be NaN afterwards.
// Tolerances (f32 arithmetic against float64):
//   matmul  |y − ref| ≤ 4e-6 · (|b| + Σ|x·w|) per output (f32 accumulation over ≤ 512 terms, any order)
//   rmsnorm |y − ref| ≤ 1e-6 · |ref| + 1e-7         rope |x − ref| ≤ 1e-6
//   swiglu  |y − ref| ≤ 1e-6 · |ref| + 1e-30        add, embed: exact (one f32 addition; a decode of stored bits)
import assert from "node:assert/strict";
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "../../src/dtype.ts";
import { createModelKernels, type Activations, type ModelKernels, type WeightDtype } from "../../src/model/kernels.ts";
import { inverseFrequencies, ropeTables } from "../../src/model/rope.ts";
import { dequantizeQ4_0, dequantizeQ8_0, quantizeQ4_0, quantizeQ8_0 } from "../../src/model/tensor-types.ts";
import { randomArray } from "./random.ts";

export type ModelOp = "matmul" | "rmsnorm" | "rope" | "swiglu" | "add" | "embed";
export interface ModelCase {
  op: ModelOp;
  dtype: WeightDtype;
  T: number;
  /** matmul: [rows, cols] = [out, in]; embed: [vocab, cols]; rmsnorm/swiglu/add: cols = width; rope: rows = heads, cols = D */
  rows: number;
  cols: number;
  bias?: boolean;
}

export const modelCaseName = (c: ModelCase) => `${c.op} ${c.dtype} T=${c.T} [${c.rows}, ${c.cols}]${c.bias ? " +bias" : ""}`;

/** The grid: every weight dtype the sets hold in matmul and embed (odd row counts, T across the 32-token tile and the
 *  AVX-512 tiles of 4 tokens x 4 rows and 32 columns, a row of 45 = 32 + 8 + 5 columns for the tails), biases, and
 *  the small ops at odd widths. */
export function modelCases(): ModelCase[] {
  const cases: ModelCase[] = [];
  for (const dtype of ["f32", "f16", "bf16"] as const) {
    for (const [T, rows, cols] of [[1, 7, 40], [3, 33, 64], [9, 6, 45], [37, 9, 24], [70, 5, 96]] as const) cases.push({ op: "matmul", dtype, T, rows, cols, bias: T === 3 });
    cases.push({ op: "embed", dtype, T: 6, rows: 11, cols: 40 });
  }
  for (const dtype of ["q8_0", "q4_0"] as const) {
    for (const [T, rows, cols] of [[1, 5, 64], [33, 6, 96]] as const) cases.push({ op: "matmul", dtype, T, rows, cols });
    cases.push({ op: "embed", dtype, T: 4, rows: 7, cols: 64 });
  }
  for (const [T, cols] of [[1, 3], [5, 37], [4, 128]] as const) {
    cases.push({ op: "rmsnorm", dtype: "f32", T, rows: 0, cols });
    cases.push({ op: "swiglu", dtype: "f32", T, rows: 0, cols });
    cases.push({ op: "add", dtype: "f32", T, rows: 0, cols });
  }
  for (const [T, heads, D] of [[1, 1, 2], [3, 4, 8], [5, 3, 64]] as const) cases.push({ op: "rope", dtype: "f32", T, rows: heads, cols: D });
  return cases;
}

/** Raw bytes of a random [rows, cols] matrix in `dtype`, and its values as stored. */
function weights(dtype: WeightDtype, rows: number, cols: number, seed: number): { bytes: Uint8Array; stored: Float32Array } {
  const v = randomArray(rows * cols, seed, 1);
  if (dtype === "f32") return { bytes: new Uint8Array(v.slice().buffer), stored: v };
  if (dtype === "q8_0" || dtype === "q4_0") {
    const bytes = dtype === "q8_0" ? quantizeQ8_0(v) : quantizeQ4_0(v);
    return { bytes, stored: dtype === "q8_0" ? dequantizeQ8_0(bytes) : dequantizeQ4_0(bytes) };
  }
  const bits = Uint16Array.from(v, dtype === "bf16" ? f32ToBf16Bits : f32ToF16Bits);
  return { bytes: new Uint8Array(bits.buffer), stored: Float32Array.from(bits, dtype === "bf16" ? bf16BitsToF32 : f16BitsToF32) };
}

/** Run case `c` on `kn` with the given host inputs; returns the output (with its guard row) as host floats. */
function run(kn: ModelKernels, c: ModelCase, seed: number): Float32Array {
  const up = (x: Float32Array) => {
    const a = kn.activations(x.length);
    kn.upload(a, x);
    return a;
  };
  const poisoned = (n: number, guard: number) => up(new Float32Array(n + guard).fill(NaN));
  const made: Activations[] = [];
  const keep = <A extends Activations>(a: A) => (made.push(a), a);
  try {
    let y: Activations;
    if (c.op === "matmul" || c.op === "embed") {
      const { bytes } = weights(c.dtype, c.rows, c.cols, seed);
      const w = kn.matrix(c.rows, c.cols, c.dtype);
      kn.write(w, 0, bytes);
      if (c.op === "matmul") {
        const x = keep(up(randomArray(c.T * c.cols, seed + 1, 1)));
        y = keep(poisoned(c.T * c.rows, c.rows));
        kn.matmul(kn.view(y, 0, c.T * c.rows), x, w, c.T, c.bias ? kn.vector(randomArray(c.rows, seed + 2, 1)) : undefined);
      } else {
        y = keep(poisoned(c.T * c.cols, c.cols));
        kn.embed(kn.view(y, 0, c.T * c.cols), Int32Array.from({ length: c.T }, (_, t) => (t * 5 + 3) % c.rows), w);
      }
    } else if (c.op === "rope") {
      const n = c.T * c.rows * c.cols, inv = inverseFrequencies(c.cols, 10000, { type: "none" });
      const { cos, sin } = ropeTables(inv, 1000, c.T);
      y = keep(poisoned(n, c.cols));
      kn.upload(y, randomArray(n, seed, 3));
      kn.rope(kn.view(y, 0, n), c.T, c.rows, c.cols, cos, sin);
    } else {
      const n = c.T * c.cols, x = keep(up(randomArray(n, seed, 3)));
      y = keep(poisoned(n, c.cols));
      const out = kn.view(y, 0, n);
      if (c.op === "rmsnorm") kn.rmsnorm(out, x, kn.vector(randomArray(c.cols, seed + 1, 1)), c.T, 1e-5);
      else if (c.op === "swiglu") kn.swiglu(out, x, keep(up(randomArray(n, seed + 1, 2))));
      else {
        kn.upload(y, randomArray(n, seed + 1, 1));
        kn.add(out, x);
      }
    }
    const host = new Float32Array(y.length);
    kn.download(y, host);
    return host;
  } finally {
    for (const a of made) kn.release(a);
  }
}

/** The tolerance bound of output i of case c (seeded inputs regenerated here: the bound needs |x·w|). */
function bound(c: ModelCase, seed: number, ref: Float32Array): (i: number) => number {
  if (c.op === "add" || c.op === "embed") return () => 0;
  if (c.op === "rope") return () => 1e-6;
  if (c.op === "rmsnorm") return (i) => 1e-6 * Math.abs(ref[i]!) + 1e-7;
  if (c.op === "swiglu") return (i) => 1e-6 * Math.abs(ref[i]!) + 1e-30;
  const { stored } = weights(c.dtype, c.rows, c.cols, seed), x = randomArray(c.T * c.cols, seed + 1, 1), b = randomArray(c.rows, seed + 2, 1);
  return (i) => {
    const t = Math.floor(i / c.rows), o = i % c.rows;
    let mag = c.bias ? Math.abs(b[o]!) : 0;
    for (let k = 0; k < c.cols; k++) mag += Math.abs(x[t * c.cols + k]! * stored[o * c.cols + k]!);
    return 4e-6 * mag;
  };
}

/** Every case on every set against the reference kernels; returns the cases run. */
export async function conformModel(cases: ModelCase[], sets: { name: string; kn: ModelKernels }[]): Promise<number> {
  const ref = await createModelKernels("reference");
  let ran = 0;
  cases.forEach((c, ci) => {
    const seed = 1000 + 17 * ci, want = run(ref, c, seed), tol = bound(c, seed, want);
    const n = want.length - (c.op === "matmul" ? c.rows : c.cols);
    for (const { name, kn } of sets) {
      const got = run(kn, c, seed);
      for (let i = 0; i < n; i++) {
        const err = Math.abs(got[i]! - want[i]!);
        assert.ok(err <= tol(i), `${name}, ${modelCaseName(c)}: output ${i} = ${got[i]}, reference ${want[i]} (error ${err.toExponential(2)}, bound ${tol(i).toExponential(2)})`);
      }
      for (let i = n; i < got.length; i++) assert.ok(Number.isNaN(got[i]), `${name}, ${modelCaseName(c)}: the guard row past the output was written at ${i}`);
      ran++;
    }
  });
  ref.dispose();
  return ran;
}
