/**
 * `--method score`: the value-aware deviation of IDENTIFICATION.md §2, forward only. For KV head g of layer l, on
 * the labelled rows of each sample, with the plain model's own activations (α = 1, where student = teacher):
 *   dev[l, g] = mean_t ‖ Σ_{h ∈ group g} W_o[:, h] · (A_full − A_str)[t, h] ‖₂
 * i.e. how far the o-projection's output moves when the group switches to the streaming window. Since
 * A_full − A_str = (1 − P_W)(v̄_out − v̄_W) it sees both the attention mass outside the window and what the values
 * carry, so a head that looks far back but writes almost nothing (a decoy) scores low.
 *
 * Known weaknesses (asserted in test/identify-planted.test.ts): it is local (one head at a time, the others at
 * full attention, no downstream effect), and every head whose window already holds what it reads scores ≈ 0, so
 * the order among streaming-safe heads is arbitrary. Scores are mapped to [0, 1] by rank (rankGates) so that
 * `sparsify --sparsity` works unchanged; a threshold like 0.5 means nothing for them.
 */
import { attend } from "./attention.ts";
import { headsOf, type Sample, teacherForward } from "./forward.ts";
import type { GateModel } from "./model.ts";
import { RowSet, type StreamingWindow } from "./window.ts";

/** Accumulates dev over samples; `scores()` is the mean per sample. */
export class DeviationScore {
  private readonly sum: Float64Array;
  private samples = 0;

  constructor(private readonly m: GateModel, private readonly window: StreamingWindow) {
    this.sum = new Float64Array(m.config.numLayers * m.config.numKvHeads);
  }

  add(s: Sample): void {
    const m = this.m, heads = headsOf(m), { Hq, Hkv, D } = heads, G = Hq / Hkv, H = m.config.hiddenSize;
    const T = s.ids.length, all = new RowSet(0, 0, T), lab = new RowSet(0, s.labelStart, T), nLab = lab.length;
    const str = new Float64Array(nLab * Hq * D), lse = new Float64Array(nLab * Hq), y = new Float64Array(H);
    teacherForward(m, s, null, ({ layer, q, k, v, attn }) => {
      const qLab = q.subarray(s.labelStart * Hq * D);
      attend(str, lse, qLab, lab, k, v, all, heads, this.window);
      const Wo = m.layers[layer]!.o;
      for (let i = 0; i < nLab; i++) {
        const t = s.labelStart + i;
        for (let g = 0; g < Hkv; g++) {
          y.fill(0);
          for (let h = g * G; h < (g + 1) * G; h++) {
            for (let d = 0; d < D; d++) {
              const delta = attn[(t * Hq + h) * D + d]! - str[(i * Hq + h) * D + d]!;
              if (delta === 0) continue;
              const col = h * D + d;
              for (let o = 0; o < H; o++) y[o]! += Wo[o * Hq * D + col]! * delta;
            }
          }
          let n2 = 0;
          for (let o = 0; o < H; o++) n2 += y[o]! ** 2;
          this.sum[layer * Hkv + g]! += Math.sqrt(n2) / nLab;
        }
      }
    });
    this.samples++;
  }

  scores(): Float64Array {
    return this.sum.map((x) => x / Math.max(1, this.samples));
  }
}

/** Ranks 0 .. N−1 ascending (ties get their average rank). */
export function ranks(x: ArrayLike<number>): Float64Array {
  const n = x.length, order = Array.from({ length: n }, (_, i) => i).sort((a, b) => x[a]! - x[b]!);
  const r = new Float64Array(n);
  for (let i = 0; i < n;) {
    let j = i;
    while (j + 1 < n && x[order[j + 1]!] === x[order[i]!]) j++;
    for (let k = i; k <= j; k++) r[order[k]!] = (i + j) / 2;
    i = j + 1;
  }
  return r;
}

/** Scores → gates in [0, 1] by rank: rank / (N − 1), the top score 1. */
export function rankGates(scores: ArrayLike<number>): Float64Array {
  const n = scores.length;
  return ranks(scores).map((r) => (n > 1 ? r / (n - 1) : 1));
}
