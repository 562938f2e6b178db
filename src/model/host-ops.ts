/**
 * A kernel set driven with host Float32Arrays, for code that computes on host arrays around the model ops (the fast
 * identification objective's student and its backward; conformance tests comparing sets on the same host data).
 * Sets whose activations are host arrays (reference, native) take them as they are; the others get each op's inputs
 * uploaded into their own activations and its output downloaded (in place for rope). The weight members (matrix,
 * write, vector, …) pass through unchanged.
 */
import type { Matrix, ModelKernels, Vector } from "./kernels.ts";

export interface HostOps extends Omit<ModelKernels, "matmul" | "rmsnorm" | "rope" | "swiglu" | "add" | "embed"> {
  matmul(y: Float32Array, x: Float32Array, w: Matrix, T: number, bias?: Vector): void;
  rmsnorm(y: Float32Array, x: Float32Array, w: Vector, T: number, eps: number): void;
  rope(x: Float32Array, T: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void;
  swiglu(y: Float32Array, gate: Float32Array, up: Float32Array): void;
  add(y: Float32Array, x: Float32Array): void;
  embed(y: Float32Array, ids: Int32Array, table: Matrix): void;
  /** the set itself */
  readonly kernels: ModelKernels;
}

export function hostOps(kn: ModelKernels): HostOps {
  const up = (x: Float32Array) => {
    const a = kn.activations(x.length);
    kn.upload(a, x);
    return a;
  };
  /** y ← f(Y, ...inputs) through the set; `y` may be one of the inputs (in-place ops) */
  const run = (y: Float32Array, inputs: Float32Array[], f: (...a: ReturnType<typeof up>[]) => void) => {
    const ins = inputs.map(up), Y = kn.activations(y.length);
    f(Y, ...ins);
    kn.download(Y, y);
    for (const a of [...ins, Y]) kn.release(a);
  };
  const ops = {
    matmul: (y: Float32Array, x: Float32Array, w: Matrix, T: number, bias?: Vector) => run(y, [x], (Y, X) => kn.matmul(Y, X!, w, T, bias)),
    rmsnorm: (y: Float32Array, x: Float32Array, w: Vector, T: number, eps: number) => run(y, [x], (Y, X) => kn.rmsnorm(Y, X!, w, T, eps)),
    rope: (x: Float32Array, T: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array) => {
      const X = up(x);
      kn.rope(X, T, heads, headDim, cos, sin);
      kn.download(X, x);
      kn.release(X);
    },
    swiglu: (y: Float32Array, gate: Float32Array, upv: Float32Array) => run(y, [gate, upv], (Y, G, U) => kn.swiglu(Y, G!, U!)),
    add: (y: Float32Array, x: Float32Array) => {
      const Y = up(y), X = up(x);
      kn.add(Y, X);
      kn.download(Y, y);
      kn.release(X);
      kn.release(Y);
    },
    embed: (y: Float32Array, ids: Int32Array, table: Matrix) => run(y, [], (Y) => kn.embed(Y, ids, table)),
  };
  const host = kn.hostActivations === true; // its ops take host arrays as they are
  return new Proxy(kn, {
    get(target, p, receiver) {
      if (p === "kernels") return kn;
      if (!host && p in ops) return ops[p as keyof typeof ops];
      const v = Reflect.get(target, p, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  }) as unknown as HostOps;
}
