/**
 * Upstream's training loss (SPEC §5.3) and its gradient in the gates:
 *   L = Σ_{labelled rows} mean_d (H_teacher − H_student)² / nLab  +  λ·mean|gate|,   λ = 0.05
 * with α = clamp(gate, 0, 1) in the mix. The clamp passes gradients for 0 ≤ gate ≤ 1 inclusive; the L1 term's
 * gradient is λ·sign(gate)/N (sign(0) = 0, as torch).
 */
import { studentBackward } from "./backward.ts";
import { type Rows, type Sample, sampleRows, studentForward, teacherForward, type TeacherRun } from "./forward.ts";
import type { GateModel } from "./model.ts";
import type { StreamingWindow } from "./window.ts";

export const UPSTREAM_REG = 0.05;

export interface ObjectiveOptions {
  window: StreamingWindow;
  /** weight of mean|gate| (default 0.05, upstream) */
  reg?: number;
  /** run the student on the cone only (default true; false = all rows, the same numbers) */
  cone?: boolean;
  /** skip the backward (finite differences, loss curves) */
  gradient?: boolean;
  /** reuse a teacher run of this sample with the same rows */
  teacher?: TeacherRun;
}

export interface ObjectiveResult {
  loss: number;
  distill: number;
  reg: number;
  /** dL/dgate [layers·Hkv] (empty without gradient) */
  grad: Float64Array;
  rows: Rows;
  teacher: TeacherRun;
  /** dL/dx of layer 0's input rows (keys[0]), from the distillation term */
  dInput?: Float64Array;
}

export function objective(m: GateModel, s: Sample, gates: Float64Array, o: ObjectiveOptions): ObjectiveResult {
  const lambda = o.reg ?? UPSTREAM_REG, H = m.config.hiddenSize;
  const rows = sampleRows(m, s, o.window, o.cone ?? true);
  const teacher = o.teacher ?? teacherForward(m, s, rows);
  const alpha = gates.map((g) => Math.min(1, Math.max(0, g)));
  const student = studentForward(m, s, alpha, teacher, rows, o.window);
  const nLab = s.ids.length - s.labelStart;
  const dH = new Float64Array(nLab * H);
  const distill = distillation(student.hidden, teacher.hidden, nLab, H, dH), reg = gateRegularizer(gates, lambda);
  const out: ObjectiveResult = { loss: distill + reg, distill, reg, grad: new Float64Array(0), rows, teacher };
  if (o.gradient === false) return out;
  const grad = studentBackward(m, s, alpha, dH, teacher, student, rows, o.window, (dx) => (out.dInput = dx));
  out.grad = finishGateGradient(grad, gates, lambda);
  return out;
}

/** The distillation term (SPEC §5.3): mean over the nLab labelled rows of the per-row MSE over the hidden size H of
 *  student − teacher ([nLab, H] each); writes its gradient dL/dH into dH. Shared by the float64 objective and the
 *  fast one (fast-optimize.ts). */
export function distillation(student: ArrayLike<number>, teacher: ArrayLike<number>, nLab: number, H: number, dH: Float32Array | Float64Array): number {
  let distill = 0;
  for (let t = 0; t < nLab; t++) {
    let row = 0;
    for (let d = 0; d < H; d++) {
      const diff = student[t * H + d]! - teacher[t * H + d]!;
      row += diff * diff;
      dH[t * H + d] = (2 * diff) / (nLab * H);
    }
    distill += row / H;
  }
  return distill / nLab;
}

/** λ · mean |gate| over all gates (upstream's l1_loss: sum / numel). */
export function gateRegularizer(gates: Float64Array, lambda: number): number {
  let abs = 0;
  for (const g of gates) abs += Math.abs(g);
  return lambda * (abs / gates.length);
}

/** dL/dgate from the distillation's dL/dα: the clamp passes gates in [0, 1], plus the regularizer's λ·sign/N. In place. */
export function finishGateGradient(grad: Float64Array, gates: Float64Array, lambda: number): Float64Array {
  const N = gates.length;
  for (let i = 0; i < N; i++) {
    const g = gates[i]!;
    grad[i] = (g >= 0 && g <= 1 ? grad[i]! : 0) + (lambda * Math.sign(g)) / N;
  }
  return grad;
}
