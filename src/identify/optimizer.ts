/**
 * Upstream's optimiser for the gates (SPEC §5.5): AdamW (β 0.9/0.999, eps 1e-8, weight decay 0), lr 0.02 under
 * LambdaLR f(s) = min(1, max((s+1)/W, 0.1), max((N−s)/W, 0.1)), W = ⌊N/5⌋; each step first clamps the gates to
 * [0, 1] in place, then forward/backward, then the update (so saved gates are post-step and may dip below 0).
 *
 * Gates, gradients and both moments live in bf16 as under FSDP2's bf16 policy: every in-place op of torch's AdamW
 * is computed in f32 and rounded to bf16 (lerp for m; mul then addcmul for v; sqrt, divide, add eps for the
 * denominator; addcdiv for the update). "f32" keeps everything in f32 (cleaner, not upstream).
 */
import { bf16BitsToF32, f32ToBf16Bits } from "../dtype.ts";
import { checkOneOf } from "../errors.ts";

export const GATE_DTYPES = ["bf16", "f32"] as const;
export type GateDtype = (typeof GATE_DTYPES)[number];

export const UPSTREAM_LR = 0.02;
const BETA1 = 0.9, BETA2 = 0.999, EPS = 1e-8;

/** LambdaLR's factor at 0-based step s of n. */
export function lrFactor(s: number, n: number): number {
  const w = Math.max(1, Math.floor(n / 5));
  return Math.min(1, Math.max((s + 1) / w, 0.1), Math.max((n - s) / w, 0.1));
}

export interface AdamState {
  step: number;
  m: number[];
  v: number[];
}

export class GateOptimizer {
  private readonly round: (x: number) => number;
  readonly state: AdamState;

  constructor(n: number, readonly dtype: GateDtype = "bf16", state?: AdamState) {
    checkOneOf("gate dtype", dtype, GATE_DTYPES);
    this.round = dtype === "bf16" ? (x) => bf16BitsToF32(f32ToBf16Bits(x)) : Math.fround;
    this.state = state ? { step: state.step, m: [...state.m], v: [...state.v] } : { step: 0, m: new Array(n).fill(0), v: new Array(n).fill(0) };
  }

  /** Gates as stored (initial value 1.0 is exact in both dtypes). */
  store(x: number): number {
    return this.round(x);
  }

  /** Clamp to [0, 1] in place (before each step's forward). */
  clamp(gates: Float64Array): void {
    for (let i = 0; i < gates.length; i++) gates[i] = Math.min(1, Math.max(0, gates[i]!));
  }

  /** One AdamW update in place with learning rate `lr` (base lr × schedule factor). */
  update(gates: Float64Array, grad: Float64Array, lr: number): void {
    const r = this.round, f = Math.fround, st = this.state;
    st.step++;
    const bc1 = 1 - BETA1 ** st.step, bc2sqrt = Math.sqrt(1 - BETA2 ** st.step), stepSize = lr / bc1;
    for (let i = 0; i < gates.length; i++) {
      const g = r(grad[i]!);
      st.m[i] = r(f(st.m[i]! + f(f(1 - BETA1) * f(g - st.m[i]!))));
      st.v[i] = r(f(r(f(st.v[i]! * BETA2)) + f(f(1 - BETA2) * f(g * g))));
      const denom = r(f(r(f(r(f(Math.sqrt(st.v[i]!))) / bc2sqrt)) + EPS));
      gates[i] = r(f(gates[i]! - f(stepSize * f(st.m[i]! / denom))));
    }
  }
}
