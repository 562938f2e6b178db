/**
 * The native backward kernels (backward-kernels.ts): wasm/model/backward.c compiled for this CPU in libduo.so,
 * through native/src/backward.c's checked entry points (ffi/symbols.ts). The transposed matmul reads the blocks a
 * NativeKernels set holds and splits dx's columns over `threads`; attention splits its heads.
 */
import { DuoError } from "../errors.ts";
import { STATUS } from "../backend/abi.ts";
import type { NativeLibrary } from "../../ffi/symbols.ts";
import type { Matrix, ModelKernels } from "../model/kernels.ts";
import { NativeKernels, WEIGHT_CODE } from "../model/kernels-native.ts";
import { type AttendShape, type BackwardKernels, checkAttend, checkLinear, checkMix, checkRope, checkRows } from "./backward-kernels.ts";

export async function nativeBackward(model: ModelKernels, threads?: number): Promise<BackwardKernels> {
  if (!(model instanceof NativeKernels)) throw new DuoError("INVALID_ARGUMENT", `native backward kernels run on a "native" model-kernel set, got "${model.name}"`);
  const lib = model.library;
  if (typeof (lib as Partial<NativeLibrary>).duo_bwd_linear !== "function") throw new DuoError("BACKEND_UNAVAILABLE", "native backward kernels: libduo.so lacks duo_bwd_* (rebuild: bash native/build.sh)");
  return new NativeBackward(lib, model, Math.max(1, threads ?? model.threads));
}

class NativeBackward implements BackwardKernels {
  readonly name = "native" as const;

  constructor(private readonly lib: NativeLibrary, private readonly model: NativeKernels, private readonly threads: number) {}

  linearBackward(dx: Float32Array, dy: Float32Array, w: Matrix, T: number, accumulate: boolean): void {
    checkLinear(dx, dy, w, T);
    this.lib.duo_threads(this.threads);
    this.check(this.lib.duo_bwd_linear(dx, dy, this.model.matrixAddress(w), T, w.cols, w.rows, WEIGHT_CODE[w.dtype], accumulate ? 1 : 0), "duo_bwd_linear");
  }

  rmsInv(rinv: Float32Array, x: Float32Array, T: number, n: number, eps: number): void {
    checkRows(T, n, ["rinv [T]", rinv, T], ["x [T, n]", x, T * n]);
    this.check(this.lib.duo_bwd_rms_inv(rinv, x, T, n, eps), "duo_bwd_rms_inv");
  }

  rmsnormBackward(dx: Float32Array, dy: Float32Array, x: Float32Array, w: Float32Array, rinv: Float32Array, T: number): void {
    const n = w.length;
    checkRows(T, n, ["dx [T, n]", dx, T * n], ["dy [T, n]", dy, T * n], ["x [T, n]", x, T * n], ["rinv [T]", rinv, T]);
    this.check(this.lib.duo_bwd_rmsnorm(dx, dy, x, w, rinv, T, n), "duo_bwd_rmsnorm");
  }

  swigluBackward(da: Float32Array, du: Float32Array, dm: Float32Array, a: Float32Array, u: Float32Array): void {
    const n = dm.length;
    checkRows(n, 1, ["da [n]", da, n], ["du [n]", du, n], ["a [n]", a, n], ["u [n]", u, n]);
    this.check(this.lib.duo_bwd_swiglu(da, du, dm, a, u, n), "duo_bwd_swiglu");
  }

  ropeInverse(x: Float32Array, T: number, heads: number, D: number, cos: Float32Array, sin: Float32Array): void {
    checkRope(x, T, heads, D, cos, sin);
    this.check(this.lib.duo_bwd_rope(x, cos, sin, T, heads, D), "duo_bwd_rope");
  }

  attend(out: Float32Array, lse: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, ranges: Int32Array, s: AttendShape): void {
    checkAttend(s, ranges, [["out [nq, Hq, D]", out, "q"], ["lse [nq, Hq]", lse, "lse"], ["q [nq, Hq, D]", q, "q"], ["k [nk, Hkv, D]", k, "k"], ["v [nk, Hkv, D]", v, "k"]]);
    this.lib.duo_threads(this.threads);
    this.check(this.lib.duo_bwd_attend(out, lse, q, k, v, ranges, s.nq, s.nk, s.Hq, s.Hkv, s.D), "duo_bwd_attend");
  }

  attendBackward(dq: Float32Array, dk: Float32Array, dv: Float32Array, dO: Float32Array, O: Float32Array, lse: Float32Array,
                 q: Float32Array, k: Float32Array, v: Float32Array, ranges: Int32Array, s: AttendShape): void {
    checkAttend(s, ranges, [["dq [nq, Hq, D]", dq, "q"], ["dk [nk, Hkv, D]", dk, "k"], ["dv [nk, Hkv, D]", dv, "k"], ["dO [nq, Hq, D]", dO, "q"],
      ["O [nq, Hq, D]", O, "q"], ["lse [nq, Hq]", lse, "lse"], ["q [nq, Hq, D]", q, "q"], ["k [nk, Hkv, D]", k, "k"], ["v [nk, Hkv, D]", v, "k"]]);
    this.lib.duo_threads(this.threads);
    this.check(this.lib.duo_bwd_attend_backward(dq, dk, dv, dO, O, lse, q, k, v, ranges, s.nq, s.nk, s.Hq, s.Hkv, s.D), "duo_bwd_attend_backward");
  }

  mixBackward(dstr: Float32Array, dalpha: Float64Array, dmix: Float32Array, afull: Float32Array, astr: Float32Array, alpha: Float32Array, nq: number, h: { Hq: number; Hkv: number; D: number }): void {
    checkMix(dstr, dalpha, dmix, afull, astr, alpha, nq, h);
    this.check(this.lib.duo_bwd_mix(dstr, dalpha, dmix, afull, astr, alpha, nq, h.Hq, h.Hkv, h.D), "duo_bwd_mix");
  }

  private check(status: number, fn: string): void {
    if (status >= 0) return;
    throw new DuoError(status === STATUS.E_CAPACITY ? "CAPACITY" : "INVALID_ARGUMENT", `native backward kernels: ${fn} refused: ${this.lib.duo_last_error() || `status ${status}`}`);
  }
}
