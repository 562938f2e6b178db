/**
 * Length checks of the model-kernel ops, shared by every kernel set, so that a short activation buffer is a
 * DuoError naming the op and the sizes on every set (the native and wasm kernels would otherwise read or write past
 * it) and nothing is computed.
 */
import { DuoError } from "../errors.ts";
import type { Activations, Matrix, Vector } from "./kernels.ts";

function need(op: string, what: string, a: { length: number }, n: number): void {
  if (a.length < n) throw new DuoError("INVALID_ARGUMENT", `${op}: ${what} holds ${a.length} elements, it needs at least ${n}`);
}

function checkRows(op: string, T: number): void {
  if (!Number.isInteger(T) || T < 1) throw new DuoError("INVALID_ARGUMENT", `${op}: T must be a positive integer, got ${T}`);
}

export function checkMatmul(y: Activations, x: Activations, w: Matrix, T: number, bias?: Vector): void {
  checkRows("matmul", T);
  need("matmul", `x [T=${T}, ${w.cols}]`, x, T * w.cols);
  need("matmul", `y [T=${T}, ${w.rows}]`, y, T * w.rows);
  if (bias && bias.length !== w.rows) throw new DuoError("INVALID_ARGUMENT", `matmul: the bias has ${bias.length} elements, the matrix ${w.rows} rows`);
}

export function checkRmsnorm(y: Activations, x: Activations, w: Vector, T: number): void {
  checkRows("rmsnorm", T);
  need("rmsnorm", `x [T=${T}, ${w.length}]`, x, T * w.length);
  need("rmsnorm", `y [T=${T}, ${w.length}]`, y, T * w.length);
}

export function checkRope(x: Activations, T: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void {
  checkRows("rope", T);
  if (headDim % 2 !== 0 || headDim < 2) throw new DuoError("INVALID_ARGUMENT", `rope: the head dim must be even, got ${headDim}`);
  need("rope", `x [T=${T}, ${heads}, ${headDim}]`, x, T * heads * headDim);
  need("rope", `cos [T=${T}, ${headDim / 2}]`, cos, (T * headDim) / 2);
  need("rope", `sin [T=${T}, ${headDim / 2}]`, sin, (T * headDim) / 2);
}

export function checkElementwise(op: string, y: Activations, ...xs: Activations[]): void {
  xs.forEach((x, i) => need(op, `input ${i + 1}`, x, y.length));
}

export function checkEmbed(y: Activations, ids: Int32Array, table: Matrix): void {
  need("embed", `y [T=${ids.length}, ${table.cols}]`, y, ids.length * table.cols);
}
