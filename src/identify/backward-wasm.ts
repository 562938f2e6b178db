/**
 * The wasm backward kernels (backward-kernels.ts): wasm/model/backward.c's exports of the very duo-model.wasm
 * instance a WasmKernels set runs, so the transposed matmul reads the matrices where its forward matmul reads them.
 * Each call lays its arrays out in that instance's scratch area (above the weights, as the model kernels' own calls
 * do: calls are synchronous, so the two never overlap), runs, and copies the outputs back.
 */
import { DuoError } from "../errors.ts";
import type { Matrix, ModelKernels } from "../model/kernels.ts";
import { WasmKernels } from "../model/kernels-wasm.ts";
import { type AttendShape, type BackwardKernels, checkAttend, checkLinear, checkMix, checkRope, checkRows } from "./backward-kernels.ts";

type Arr = Float32Array | Float64Array | Int32Array;

interface Exports {
  memory: WebAssembly.Memory;
  bwd_linear_f32(dx: number, dy: number, w: number, T: number, nin: number, nout: number, k0: number, k1: number, acc: number): void;
  bwd_linear_f16(dx: number, dy: number, w: number, T: number, nin: number, nout: number, k0: number, k1: number, acc: number): void;
  bwd_linear_bf16(dx: number, dy: number, w: number, T: number, nin: number, nout: number, k0: number, k1: number, acc: number): void;
  bwd_rms_inv(rinv: number, x: number, T: number, n: number, eps: number): void;
  bwd_rmsnorm(dx: number, dy: number, x: number, w: number, rinv: number, T: number, n: number): void;
  bwd_swiglu(da: number, du: number, dm: number, a: number, u: number, n: number): void;
  bwd_rope(x: number, cos: number, sin: number, T: number, H: number, D: number): void;
  bwd_attend(out: number, lse: number, q: number, k: number, v: number, ranges: number, nq: number, Hq: number, Hkv: number, D: number, h0: number, h1: number): void;
  bwd_attend_backward(dq: number, dk: number, dv: number, dO: number, O: number, lse: number, q: number, k: number, v: number, ranges: number, nq: number, Hq: number, Hkv: number, D: number, g0: number, g1: number): void;
  bwd_mix(dstr: number, dalpha: number, dmix: number, afull: number, astr: number, alpha: number, nq: number, Hq: number, Hkv: number, D: number): void;
}

export function wasmBackward(model: ModelKernels): BackwardKernels {
  if (!(model instanceof WasmKernels)) throw new DuoError("INVALID_ARGUMENT", `wasm backward kernels run on a "wasm" model-kernel set, got "${model.name}"`);
  let has = false;
  model.callOnScratch([], 0, (ex) => (has = typeof (ex as unknown as Partial<Exports>).bwd_linear_f32 === "function"));
  if (!has) throw new DuoError("BACKEND_UNAVAILABLE", "wasm backward kernels: this duo-model.wasm has no bwd_* exports (rebuild it: bash wasm/model/build.sh)");
  return new WasmBackward(model);
}

class WasmBackward implements BackwardKernels {
  readonly name = "wasm" as const;

  constructor(private readonly k: WasmKernels) {}

  linearBackward(dx: Float32Array, dy: Float32Array, w: Matrix, T: number, accumulate: boolean): void {
    checkLinear(dx, dy, w, T);
    const ptr = this.k.matrixAddress(w), name = ({ f32: "bwd_linear_f32", f16: "bwd_linear_f16", bf16: "bwd_linear_bf16" } as const)[w.dtype as "f32"];
    this.call([dx.subarray(0, T * w.cols), dy.subarray(0, T * w.rows)], 1, (ex, [pdx, pdy]) => ex[name](pdx!, pdy!, ptr, T, w.cols, w.rows, 0, w.cols, accumulate ? 1 : 0));
  }

  rmsInv(rinv: Float32Array, x: Float32Array, T: number, n: number, eps: number): void {
    checkRows(T, n, ["rinv [T]", rinv, T], ["x [T, n]", x, T * n]);
    this.call([rinv.subarray(0, T), x.subarray(0, T * n)], 1, (ex, [pr, px]) => ex.bwd_rms_inv(pr!, px!, T, n, eps));
  }

  rmsnormBackward(dx: Float32Array, dy: Float32Array, x: Float32Array, w: Float32Array, rinv: Float32Array, T: number): void {
    const n = w.length;
    checkRows(T, n, ["dx [T, n]", dx, T * n], ["dy [T, n]", dy, T * n], ["x [T, n]", x, T * n], ["rinv [T]", rinv, T]);
    this.call([dx.subarray(0, T * n), dy.subarray(0, T * n), x.subarray(0, T * n), w, rinv.subarray(0, T)], 1,
      (ex, [a, b, c, d, r]) => ex.bwd_rmsnorm(a!, b!, c!, d!, r!, T, n));
  }

  swigluBackward(da: Float32Array, du: Float32Array, dm: Float32Array, a: Float32Array, u: Float32Array): void {
    const n = dm.length;
    checkRows(n, 1, ["da [n]", da, n], ["du [n]", du, n], ["a [n]", a, n], ["u [n]", u, n]);
    this.call([da.subarray(0, n), du.subarray(0, n), dm, a.subarray(0, n), u.subarray(0, n)], 2, (ex, [p0, p1, p2, p3, p4]) => ex.bwd_swiglu(p0!, p1!, p2!, p3!, p4!, n));
  }

  ropeInverse(x: Float32Array, T: number, heads: number, D: number, cos: Float32Array, sin: Float32Array): void {
    checkRope(x, T, heads, D, cos, sin);
    this.call([x.subarray(0, T * heads * D), cos.subarray(0, (T * D) / 2), sin.subarray(0, (T * D) / 2)], 1, (ex, [px, pc, ps]) => ex.bwd_rope(px!, pc!, ps!, T, heads, D));
  }

  attend(out: Float32Array, lse: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, ranges: Int32Array, s: AttendShape): void {
    checkAttend(s, ranges, [["out [nq, Hq, D]", out, "q"], ["lse [nq, Hq]", lse, "lse"], ["q [nq, Hq, D]", q, "q"], ["k [nk, Hkv, D]", k, "k"], ["v [nk, Hkv, D]", v, "k"]]);
    const nqd = s.nq * s.Hq * s.D, nkd = s.nk * s.Hkv * s.D;
    this.call([out.subarray(0, nqd), lse.subarray(0, s.nq * s.Hq), q.subarray(0, nqd), k.subarray(0, nkd), v.subarray(0, nkd), ranges.subarray(0, 3 * s.nq)], 2,
      (ex, [po, pl, pq, pk, pv, pr]) => ex.bwd_attend(po!, pl!, pq!, pk!, pv!, pr!, s.nq, s.Hq, s.Hkv, s.D, 0, s.Hq));
  }

  attendBackward(dq: Float32Array, dk: Float32Array, dv: Float32Array, dO: Float32Array, O: Float32Array, lse: Float32Array,
                 q: Float32Array, k: Float32Array, v: Float32Array, ranges: Int32Array, s: AttendShape): void {
    checkAttend(s, ranges, [["dq [nq, Hq, D]", dq, "q"], ["dk [nk, Hkv, D]", dk, "k"], ["dv [nk, Hkv, D]", dv, "k"], ["dO [nq, Hq, D]", dO, "q"],
      ["O [nq, Hq, D]", O, "q"], ["lse [nq, Hq]", lse, "lse"], ["q [nq, Hq, D]", q, "q"], ["k [nk, Hkv, D]", k, "k"], ["v [nk, Hkv, D]", v, "k"]]);
    const nqd = s.nq * s.Hq * s.D, nkd = s.nk * s.Hkv * s.D;
    this.call([dq.subarray(0, nqd), dk.subarray(0, nkd), dv.subarray(0, nkd), dO.subarray(0, nqd), O.subarray(0, nqd), lse.subarray(0, s.nq * s.Hq),
      q.subarray(0, nqd), k.subarray(0, nkd), v.subarray(0, nkd), ranges.subarray(0, 3 * s.nq)], 3,
    (ex, p) => ex.bwd_attend_backward(p[0]!, p[1]!, p[2]!, p[3]!, p[4]!, p[5]!, p[6]!, p[7]!, p[8]!, p[9]!, s.nq, s.Hq, s.Hkv, s.D, 0, s.Hkv));
  }

  mixBackward(dstr: Float32Array, dalpha: Float64Array, dmix: Float32Array, afull: Float32Array, astr: Float32Array, alpha: Float32Array, nq: number, h: { Hq: number; Hkv: number; D: number }): void {
    checkMix(dstr, dalpha, dmix, afull, astr, alpha, nq, h);
    const n = nq * h.Hq * h.D;
    this.call([dstr.subarray(0, n), dalpha.subarray(0, h.Hkv), dmix.subarray(0, n), afull.subarray(0, n), astr.subarray(0, n), alpha.subarray(0, h.Hkv)], 2,
      (ex, p) => ex.bwd_mix(p[0]!, p[1]!, p[2]!, p[3]!, p[4]!, p[5]!, nq, h.Hq, h.Hkv, h.D));
  }

  /** `fn` on the instance's exports with `arrays` in its scratch area; the first `outputs` of them copied back. */
  private call(arrays: Arr[], outputs: number, fn: (ex: Exports, ptrs: number[]) => void): void {
    this.k.callOnScratch(arrays, outputs, (ex, ptrs) => fn(ex as unknown as Exports, ptrs));
  }
}
