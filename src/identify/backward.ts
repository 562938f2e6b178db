/**
 * The student's activation-only backward over the cone (IDENTIFICATION.md §1.1–1.3), float64, from dL/dH on the
 * labelled rows down to dL/dα. Per layer, top down:
 *   dm = dx·W_down · (da, du) = swiglu⁻¹ · dx1 = dx + rms⁻¹(da·W_gate + du·W_up) · dA_mix = dx1·W_o
 *   dα[l, g] = Σ_rows Σ_{h ∈ group g} Σ_d dA_mix[h] ⊙ (A_full − A_str)[h]      (the clamp passes 0 ≤ α ≤ 1)
 *   dA_str = (1 − α)·dA_mix → streaming attention backward → RoPE⁻¹ → dx_in = dx1 + rms⁻¹(dq·W_q + dk·W_k + dv·W_v)
 * The teacher is detached: nothing flows into A_full.
 */
import { attendBackward } from "./attention.ts";
import { headsOf, type Rows, type Sample, type StudentRun, type TeacherRun } from "./forward.ts";
import type { GateModel } from "./model.ts";
import { linearBackward, rmsnormBackward, rope, swigluBackward } from "./ops.ts";
import type { StreamingWindow } from "./window.ts";

/** dL/dα [layers·Hkv] of the distillation term, given dL/dH [nLab, hidden] on the labelled rows. `dInput`, when
 *  given, receives dL/dx of the student's input rows of layer 0 ([|keys[0]|, hidden]; the cone test reads it). */
export function studentBackward(m: GateModel, s: Sample, alpha: Float64Array, dHidden: Float64Array, teacher: TeacherRun, student: StudentRun, rows: Rows, window: StreamingWindow, dInput?: (dx: Float64Array) => void): Float64Array {
  const c = m.config, H = c.hiddenSize, I = c.intermediateSize, heads = headsOf(m), { Hq, Hkv, D } = heads, G = Hq / Hkv;
  const T = s.ids.length, nL = c.numLayers, grad = new Float64Array(nL * Hkv);
  // final norm: scatter dH onto the last layer's query rows
  const Qlast = rows.queries[nL - 1]!;
  const dNormed = new Float64Array(Qlast.length * H);
  for (let t = s.labelStart; t < T; t++) dNormed.set(dHidden.subarray((t - s.labelStart) * H, (t - s.labelStart + 1) * H), Qlast.indexOf(t) * H);
  let dx = new Float64Array(Qlast.length * H);
  rmsnormBackward(dx, dNormed, student.xL, m.norm, student.rf, Qlast.length);
  for (let l = nL - 1; l >= 0; l--) {
    const L = m.layers[l]!, S = student.layers[l]!, P = rows.keys[l]!, Q = rows.queries[l]!, nq = Q.length, nk = P.length;
    // MLP
    const dm = new Float64Array(nq * I), da = new Float64Array(nq * I), du = new Float64Array(nq * I);
    linearBackward(dm, dx, L.down, nq, H, I);
    swigluBackward(da, du, dm, S.a, S.u);
    const dh2 = new Float64Array(nq * H);
    linearBackward(dh2, da, L.gate, nq, I, H);
    linearBackward(dh2, du, L.up, nq, I, H, true);
    const dx1 = dx.slice();
    rmsnormBackward(dx1, dh2, S.x1, L.postNorm, S.r2, nq);
    // o-proj, the mix and the fused dα reduction
    const dmix = new Float64Array(nq * Hq * D);
    linearBackward(dmix, dx1, L.o, nq, H, Hq * D);
    const At = teacher.attn[l]!, dstr = new Float64Array(nq * Hq * D);
    for (let i = 0; i < nq; i++) {
      for (let h = 0; h < Hq; h++) {
        const g = l * Hkv + Math.floor(h / G), al = alpha[g]!, o = (i * Hq + h) * D;
        let dot = 0;
        for (let d = 0; d < D; d++) {
          dot += dmix[o + d]! * (At[o + d]! - S.str[o + d]!);
          dstr[o + d] = (1 - al) * dmix[o + d]!;
        }
        grad[g]! += dot;
      }
    }
    // streaming attention, RoPE, q/k/v projections, input norm
    const dq = new Float64Array(nq * Hq * D), dk = new Float64Array(nk * Hkv * D), dv = new Float64Array(nk * Hkv * D);
    attendBackward(dq, dk, dv, dstr, S.str, S.lse, S.q, Q, S.k, S.v, P, heads, window);
    rope(dq, nq, Hq, D, S.cosQ, S.sinQ, true);
    rope(dk, nk, Hkv, D, S.cosK, S.sinK, true);
    const dhq = new Float64Array(nq * H), dh1 = new Float64Array(nk * H);
    linearBackward(dhq, dq, L.q, nq, Hq * D, H);
    linearBackward(dh1, dk, L.k, nk, Hkv * D, H);
    linearBackward(dh1, dv, L.v, nk, Hkv * D, H, true);
    const dxin = new Float64Array(nk * H);
    for (let i = 0; i < nq; i++) {
      const at = P.indexOf(Q.position(i)) * H;
      for (let d = 0; d < H; d++) {
        dh1[at + d]! += dhq[i * H + d]!;
        dxin[at + d] = dx1[i * H + d]!;
      }
    }
    rmsnormBackward(dxin, dh1, S.x, L.inputNorm, S.r1, nk);
    dx = dxin;
  }
  dInput?.(dx);
  return grad;
}
