/**
 * The backward ops of gate identification on f32 activations (IDENTIFICATION.md §1.2), behind one interface with
 * three sets: `reference` (plain TS, float64 accumulation, results rounded to f32 once: the twin), `wasm` (the C of
 * wasm/model/backward.c inside the duo-model.wasm instance of a WasmKernels set) and `native` (the same C in
 * libduo.so, native/src/backward.c). A set is bound to the ModelKernels set that holds the weights, so that the
 * transposed matmul reads W where and as the forward matmul reads it (f32, or f16 / bf16: in file order on native,
 * packed by pack_u16 in wasm).
 *
 * All arrays are host typed arrays, row-major, one row per token. Every call checks its shapes first and throws
 * INVALID_ARGUMENT (writing nothing) when they do not fit. The wasm and native sets write no subnormals: gradients
 * below 2^-90 in magnitude and softmax weights below 2^-50 of their row's largest are flushed to 0 (x86 takes a
 * ~100x microcode assist per subnormal, and wasm cannot turn on FTZ; wasm/model/backward.c), so callers scale the
 * gradients they pass to about 1 (fast-optimize.ts gradientScale).
 */
import { DuoError } from "../errors.ts";
import type { Matrix, ModelKernels } from "../model/kernels.ts";

export interface AttendShape {
  /** query rows */
  nq: number;
  /** key rows */
  nk: number;
  Hq: number;
  Hkv: number;
  /** head dim: a multiple of 4, at most 256 */
  D: number;
}

export interface BackwardKernels {
  readonly name: "reference" | "wasm" | "native";
  /** dx[T, W.cols] (+)= dy[T, W.rows] · W: the input gradient of y = x·Wᵀ; W a matrix of the bound ModelKernels set
   *  in f32, f16 or bf16. */
  linearBackward(dx: Float32Array, dy: Float32Array, w: Matrix, T: number, accumulate: boolean): void;
  /** rinv[T] = 1/√(mean x² + eps) per row of x [T, n] (what the model's rmsnorm multiplied by) */
  rmsInv(rinv: Float32Array, x: Float32Array, T: number, n: number, eps: number): void;
  /** dx[T, n] += (w⊙dy)·ri − x·ri³·Σ(w⊙dy⊙x)/n per row; dy, x [T, n], w [n], rinv [T] */
  rmsnormBackward(dx: Float32Array, dy: Float32Array, x: Float32Array, w: Float32Array, rinv: Float32Array, T: number): void;
  /** da = dm⊙u⊙σ(a)(1 + a(1 − σ(a))), du = dm⊙silu(a), all [n] */
  swigluBackward(da: Float32Array, du: Float32Array, dm: Float32Array, a: Float32Array, u: Float32Array): void;
  /** RoPE⁻¹ in place on x [T, heads, D] (rotate-half): rotation by −θ; cos/sin [T, D/2] */
  ropeInverse(x: Float32Array, T: number, heads: number, D: number, cos: Float32Array, sin: Float32Array): void;
  /** out [nq, Hq, D], lse [nq, Hq] (natural log) = softmax attention of q [nq, Hq, D] over k, v [nk, Hkv, D] on the
   *  key rows [0, ranges[3i]) ∪ [ranges[3i+1], ranges[3i+2]) of query row i; a row with no key: out 0, lse −Inf */
  attend(out: Float32Array, lse: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, ranges: Int32Array, s: AttendShape): void;
  /** dq [nq, Hq, D], dk, dv [nk, Hkv, D] += the backward of `attend` given dO, O [nq, Hq, D] and its lse [nq, Hq]
   *  (rows whose dO is all zero are skipped) */
  attendBackward(dq: Float32Array, dk: Float32Array, dv: Float32Array, dO: Float32Array, O: Float32Array, lse: Float32Array,
                 q: Float32Array, k: Float32Array, v: Float32Array, ranges: Int32Array, s: AttendShape): void;
  /** The mix A_mix = (1 − α)A_str + α·A_full backward with the fused dα reduction, rows [nq] of [Hq, D]:
   *  dstr = (1 − alpha[h/G])·dmix; dalpha[g] += Σ_rows Σ_{h ∈ g} Σ_d dmix⊙(afull − astr). alpha [Hkv], dalpha [Hkv]. */
  mixBackward(dstr: Float32Array, dalpha: Float64Array, dmix: Float32Array, afull: Float32Array, astr: Float32Array,
              alpha: Float32Array, nq: number, heads: { Hq: number; Hkv: number; D: number }): void;
}

/** The backward set bound to `model` (a "reference", "wasm" or "native" ModelKernels set). */
export async function createBackwardKernels(model: ModelKernels, opts: { threads?: number } = {}): Promise<BackwardKernels> {
  if (model.name === "reference") return new (await import("./backward-reference.ts")).ReferenceBackward();
  if (model.name === "wasm") return (await import("./backward-wasm.ts")).wasmBackward(model);
  if (model.name === "native") return await (await import("./backward-native.ts")).nativeBackward(model, opts.threads);
  throw new DuoError("UNSUPPORTED", `the backward kernels run on model kernels "reference", "wasm" or "native", got "${model.name}"`);
}

// ---------------------------------------------------------------------------------------------------------------
// Shape checks, shared by the three sets.

function need(what: string, a: ArrayLike<number>, n: number, min = false): void {
  if (min ? a.length < n : a.length !== n) throw new DuoError("INVALID_ARGUMENT", `${what} has ${a.length} elements; the shapes need ${min ? "at least " : ""}${n}`);
}

function int(name: string, n: number, min: number): void {
  if (!Number.isInteger(n) || n < min) throw new DuoError("INVALID_ARGUMENT", `${name} must be an integer >= ${min}, got ${n}`);
}

export function checkLinear(dx: Float32Array, dy: Float32Array, w: Matrix, T: number): void {
  int("T", T, 0);
  if (w.dtype !== "f32" && w.dtype !== "f16" && w.dtype !== "bf16") throw new DuoError("UNSUPPORTED", `linearBackward reads f32, f16 or bf16 weights, got a ${w.dtype} matrix (dequantize it first)`);
  need("dx [T, W.cols]", dx, T * w.cols, true);
  need("dy [T, W.rows]", dy, T * w.rows, true);
}

export function checkRows(T: number, n: number, ...arrays: [string, ArrayLike<number>, number][]): void {
  int("T", T, 0);
  int("n", n, 1);
  for (const [what, a, len] of arrays) need(what, a, len, true);
}

export function checkRope(x: Float32Array, T: number, heads: number, D: number, cos: Float32Array, sin: Float32Array): void {
  int("T", T, 0);
  int("heads", heads, 0);
  if (!Number.isInteger(D) || D <= 0 || D % 2) throw new DuoError("INVALID_ARGUMENT", `head dim must be even and > 0, got ${D}`);
  need("x [T, heads, D]", x, T * heads * D, true);
  need("cos [T, D/2]", cos, (T * D) / 2, true);
  need("sin [T, D/2]", sin, (T * D) / 2, true);
}

export function checkHeads(Hq: number, Hkv: number, D: number): void {
  int("Hq", Hq, 1);
  int("Hkv", Hkv, 1);
  if (Hq % Hkv) throw new DuoError("INVALID_ARGUMENT", `Hkv (${Hkv}) must divide Hq (${Hq})`);
  if (!Number.isInteger(D) || D < 4 || D > 256 || D % 4) throw new DuoError("INVALID_ARGUMENT", `head dim must be a multiple of 4 in 4..256, got ${D}`);
}

export function checkAttend(s: AttendShape, ranges: Int32Array, arrays: [string, ArrayLike<number>, "q" | "k" | "lse"][]): void {
  checkHeads(s.Hq, s.Hkv, s.D);
  int("nq", s.nq, 0);
  int("nk", s.nk, 0);
  need("ranges [nq, 3]", ranges, 3 * s.nq, true);
  const size = { q: s.nq * s.Hq * s.D, k: s.nk * s.Hkv * s.D, lse: s.nq * s.Hq };
  for (const [what, a, kind] of arrays) need(what, a, size[kind], true);
  for (let i = 0; i < s.nq; i++) {
    const a = ranges[3 * i]!, b = ranges[3 * i + 1]!, e = ranges[3 * i + 2]!;
    if (!(a >= 0 && a <= b && b <= e && e <= s.nk)) {
      throw new DuoError("INVALID_ARGUMENT", `ranges[${i}] = (${a}, ${b}, ${e}) must satisfy 0 <= sinks <= start <= end <= nk = ${s.nk}`);
    }
  }
}

export function checkMix(dstr: Float32Array, dalpha: Float64Array, dmix: Float32Array, afull: Float32Array, astr: Float32Array, alpha: Float32Array, nq: number, h: { Hq: number; Hkv: number; D: number }): void {
  int("nq", nq, 0);
  int("Hq", h.Hq, 1);
  int("Hkv", h.Hkv, 1);
  int("D", h.D, 1);
  if (h.Hq % h.Hkv) throw new DuoError("INVALID_ARGUMENT", `Hkv (${h.Hkv}) must divide Hq (${h.Hq})`);
  const n = nq * h.Hq * h.D;
  need("dstr [nq, Hq, D]", dstr, n, true);
  need("dmix [nq, Hq, D]", dmix, n, true);
  need("afull [nq, Hq, D]", afull, n, true);
  need("astr [nq, Hq, D]", astr, n, true);
  need("alpha [Hkv]", alpha, h.Hkv, true);
  need("dalpha [Hkv]", dalpha, h.Hkv, true);
}
