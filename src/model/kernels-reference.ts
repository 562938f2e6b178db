/**
 * The reference model kernels: plain TypeScript, float64 accumulation, results rounded to f32 once.
 * Every weight is decoded to f32 at load (exact for f16/bf16, and for the quantized types' q·d), so this set uses 4 bytes per
 * parameter of JS heap: it is the specification (the twin of the wasm kernels' in-register widening and q8_0 / q4_0
 * dequantization) and the tiny-model runner, not a way to run a 7B model.
 */
import { bf16BitsToF32, f16BitsToF32 } from "../dtype.ts";
import { hostArray, HostActivationKernels } from "./host-activations.ts";
import { checkElementwise, checkEmbed, checkMatmul, checkRmsnorm, checkRope } from "./kernel-checks.ts";
import { type Activations, type Matrix, type ModelKernels, type Vector, WEIGHT_BLOCKS, type WeightDtype } from "./kernels.ts";
import { dequantizeQ4_K, dequantizeQ6_K } from "./kquants.ts";
import { dequantizeQ4_0, dequantizeQ8_0 } from "./tensor-types.ts";

class RefMatrix implements Matrix {
  constructor(readonly rows: number, readonly cols: number, readonly dtype: WeightDtype, readonly data: Float32Array) {}
}
class RefVector implements Vector {
  constructor(readonly data: Float32Array) {}
  get length(): number {
    return this.data.length;
  }
}

export class ReferenceKernels extends HostActivationKernels implements ModelKernels {
  readonly name = "reference" as const;
  private weightBytes = 0;

  memory(): { weights: number; capacity: number } {
    return { weights: this.weightBytes, capacity: Infinity };
  }

  reserve(_weightBytes: number, _scratchBytes: number): void {}

  matrix(rows: number, cols: number, dtype: WeightDtype): Matrix {
    this.weightBytes += rows * cols * 4;
    return new RefMatrix(rows, cols, dtype, new Float32Array(rows * cols));
  }

  write(m: Matrix, byteOffset: number, bytes: Uint8Array): void {
    const { data, dtype } = m as RefMatrix;
    const b = WEIGHT_BLOCKS[dtype], elementOffset = (byteOffset / b.bytes) * b.elements;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (dtype === "q8_0") data.set(dequantizeQ8_0(bytes), elementOffset);
    else if (dtype === "q4_0") data.set(dequantizeQ4_0(bytes), elementOffset);
    else if (dtype === "q4_k") data.set(dequantizeQ4_K(bytes), elementOffset);
    else if (dtype === "q6_k") data.set(dequantizeQ6_K(bytes), elementOffset);
    else if (dtype === "f32") for (let i = 0; i < bytes.length / 4; i++) data[elementOffset + i] = view.getFloat32(i * 4, true);
    else {
      const widen = dtype === "bf16" ? bf16BitsToF32 : f16BitsToF32;
      for (let i = 0; i < bytes.length / 2; i++) data[elementOffset + i] = widen(view.getUint16(i * 2, true));
    }
  }

  vector(data: Float32Array): Vector {
    this.weightBytes += data.length * 4;
    return new RefVector(data.slice());
  }

  matmul(ya: Activations, xa: Activations, w: Matrix, T: number, bias?: Vector): void {
    checkMatmul(ya, xa, w, T, bias);
    const y = hostArray(ya, this.name), x = hostArray(xa, this.name);
    const { data: W, rows, cols } = w as RefMatrix;
    const b = (bias as RefVector | undefined)?.data;
    for (let t = 0; t < T; t++) {
      const xo = t * cols;
      for (let o = 0; o < rows; o++) {
        const wo = o * cols;
        let acc = b ? b[o]! : 0;
        for (let k = 0; k < cols; k++) acc += x[xo + k]! * W[wo + k]!;
        y[t * rows + o] = acc;
      }
    }
  }

  rmsnorm(ya: Activations, xa: Activations, w: Vector, T: number, eps: number): void {
    checkRmsnorm(ya, xa, w, T);
    const y = hostArray(ya, this.name), x = hostArray(xa, this.name);
    const W = (w as RefVector).data, n = W.length;
    for (let t = 0; t < T; t++) {
      let ss = 0;
      for (let i = 0; i < n; i++) ss += x[t * n + i]! ** 2;
      const r = 1 / Math.sqrt(ss / n + eps);
      for (let i = 0; i < n; i++) y[t * n + i] = x[t * n + i]! * r * W[i]!;
    }
  }

  rope(xa: Activations, T: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void {
    checkRope(xa, T, heads, headDim, cos, sin);
    const x = hostArray(xa, this.name), half = headDim / 2;
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < heads; h++) {
        const base = (t * heads + h) * headDim;
        for (let i = 0; i < half; i++) {
          const c = cos[t * half + i]!, s = sin[t * half + i]!;
          const a = x[base + i]!, b = x[base + half + i]!;
          x[base + i] = a * c - b * s;
          x[base + half + i] = b * c + a * s;
        }
      }
    }
  }

  swiglu(ya: Activations, ga: Activations, ua: Activations): void {
    checkElementwise("swiglu", ya, ga, ua);
    const y = hostArray(ya, this.name), gate = hostArray(ga, this.name), up = hostArray(ua, this.name);
    for (let i = 0; i < y.length; i++) y[i] = (gate[i]! / (1 + Math.exp(-gate[i]!))) * up[i]!;
  }

  embed(ya: Activations, ids: Int32Array, table: Matrix): void {
    checkEmbed(ya, ids, table);
    const y = hostArray(ya, this.name), { data, cols } = table as RefMatrix;
    for (let t = 0; t < ids.length; t++) y.set(data.subarray(ids[t]! * cols, (ids[t]! + 1) * cols), t * cols);
  }

  dispose(): void {}
}
