/**
 * Activations in host memory: the Float32Arrays the reference and native kernel sets compute on (the native library
 * reads and writes them in place through FFI). The activation members of ModelKernels for those sets, in one place.
 */
import { DuoError } from "../errors.ts";
import { checkElementwise } from "./kernel-checks.ts";
import type { Activations } from "./kernels.ts";

/** `a` as the Float32Array it must be, or INVALID_ARGUMENT naming the kernel set. */
export function hostArray(a: Activations, set: string): Float32Array {
  if (a instanceof Float32Array) return a;
  throw new DuoError("INVALID_ARGUMENT", `${set} model kernels compute on host Float32Arrays (their activations() and views); got activations of another kernel set`);
}

export abstract class HostActivationKernels {
  abstract readonly name: string;
  readonly hostActivations = true;

  activations(length: number): Activations {
    return new Float32Array(length);
  }

  view(a: Activations, offset: number, length: number): Activations {
    const x = hostArray(a, this.name);
    if (offset < 0 || length < 0 || offset + length > x.length) throw new DuoError("INVALID_ARGUMENT", `a view of elements [${offset}, ${offset + length}) overruns activations of ${x.length}`);
    return x.subarray(offset, offset + length);
  }

  /** Host arrays are garbage-collected: nothing to return. */
  release(a: Activations): void {
    hostArray(a, this.name);
  }

  upload(a: Activations, src: Float32Array): void {
    hostArray(a, this.name).set(src);
  }

  download(a: Activations, dst: Float32Array): void {
    dst.set(hostArray(a, this.name).subarray(0, dst.length));
  }

  add(y: Activations, x: Activations): void {
    const Y = hostArray(y, this.name), X = hostArray(x, this.name);
    checkElementwise("add", Y, X);
    for (let i = 0; i < Y.length; i++) Y[i]! += X[i]!;
  }
}
