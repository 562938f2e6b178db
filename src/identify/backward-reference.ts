/**
 * The reference backward kernels (backward-kernels.ts): plain TypeScript loops with float64 accumulation, every
 * result rounded to f32 once; the twin the wasm and native sets are checked against (test/identify-backward-kernels).
 * The transposed matmul reads the f32 weights a ReferenceKernels set decoded at load.
 */
import type { Matrix } from "../model/kernels.ts";
import { type AttendShape, type BackwardKernels, checkAttend, checkLinear, checkMix, checkRope, checkRows } from "./backward-kernels.ts";

export class ReferenceBackward implements BackwardKernels {
  readonly name = "reference" as const;

  linearBackward(dx: Float32Array, dy: Float32Array, w: Matrix, T: number, accumulate: boolean): void {
    checkLinear(dx, dy, w, T);
    const W = (w as unknown as { data: Float32Array }).data, nin = w.cols, nout = w.rows;
    const acc = new Float64Array(nin);
    for (let t = 0; t < T; t++) {
      for (let k = 0; k < nin; k++) acc[k] = accumulate ? dx[t * nin + k]! : 0;
      for (let o = 0; o < nout; o++) {
        const g = dy[t * nout + o]!;
        if (g === 0) continue;
        for (let k = 0; k < nin; k++) acc[k]! += g * W[o * nin + k]!;
      }
      dx.set(acc, t * nin);
    }
  }

  rmsInv(rinv: Float32Array, x: Float32Array, T: number, n: number, eps: number): void {
    checkRows(T, n, ["rinv [T]", rinv, T], ["x [T, n]", x, T * n]);
    for (let t = 0; t < T; t++) {
      let ss = 0;
      for (let i = 0; i < n; i++) ss += x[t * n + i]! ** 2;
      rinv[t] = 1 / Math.sqrt(ss / n + eps);
    }
  }

  rmsnormBackward(dx: Float32Array, dy: Float32Array, x: Float32Array, w: Float32Array, rinv: Float32Array, T: number): void {
    const n = w.length;
    checkRows(T, n, ["dx [T, n]", dx, T * n], ["dy [T, n]", dy, T * n], ["x [T, n]", x, T * n], ["rinv [T]", rinv, T]);
    for (let t = 0; t < T; t++) {
      const ri = rinv[t]!, o = t * n;
      let dot = 0;
      for (let i = 0; i < n; i++) dot += w[i]! * dy[o + i]! * x[o + i]!;
      const c = (dot * ri * ri * ri) / n;
      for (let i = 0; i < n; i++) dx[o + i] = dx[o + i]! + (w[i]! * dy[o + i]! * ri - x[o + i]! * c);
    }
  }

  swigluBackward(da: Float32Array, du: Float32Array, dm: Float32Array, a: Float32Array, u: Float32Array): void {
    const n = dm.length;
    checkRows(n, 1, ["da [n]", da, n], ["du [n]", du, n], ["a [n]", a, n], ["u [n]", u, n]);
    for (let i = 0; i < n; i++) {
      const s = 1 / (1 + Math.exp(-a[i]!));
      da[i] = dm[i]! * u[i]! * s * (1 + a[i]! * (1 - s));
      du[i] = dm[i]! * a[i]! * s;
    }
  }

  ropeInverse(x: Float32Array, T: number, heads: number, D: number, cos: Float32Array, sin: Float32Array): void {
    checkRope(x, T, heads, D, cos, sin);
    const half = D / 2;
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < heads; h++) {
        const base = (t * heads + h) * D;
        for (let i = 0; i < half; i++) {
          const c = cos[t * half + i]!, s = sin[t * half + i]!, a = x[base + i]!, b = x[base + half + i]!;
          x[base + i] = a * c + b * s;
          x[base + half + i] = b * c - a * s;
        }
      }
    }
  }

  attend(out: Float32Array, lse: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, ranges: Int32Array, s: AttendShape): void {
    checkAttend(s, ranges, [["out [nq, Hq, D]", out, "q"], ["lse [nq, Hq]", lse, "lse"], ["q [nq, Hq, D]", q, "q"], ["k [nk, Hkv, D]", k, "k"], ["v [nk, Hkv, D]", v, "k"]]);
    const { nq, Hq, Hkv, D } = s, G = Hq / Hkv, scale = 1 / Math.sqrt(D);
    const acc = new Float64Array(D);
    for (let i = 0; i < nq; i++) {
      const keys = visibleKeys(ranges, i);
      for (let h = 0; h < Hq; h++) {
        const qo = (i * Hq + h) * D, g = Math.floor(h / G);
        const sc = keys.map((j) => dot(q, qo, k, (j * Hkv + g) * D, D) * scale);
        const max = Math.max(...sc);
        let sum = 0;
        acc.fill(0);
        keys.forEach((j, m) => {
          const p = Math.exp(sc[m]! - max), vo = (j * Hkv + g) * D;
          sum += p;
          for (let d = 0; d < D; d++) acc[d]! += p * v[vo + d]!;
        });
        for (let d = 0; d < D; d++) out[qo + d] = keys.length ? acc[d]! / sum : 0;
        lse[i * Hq + h] = keys.length ? max + Math.log(sum) : -Infinity;
      }
    }
  }

  attendBackward(dq: Float32Array, dk: Float32Array, dv: Float32Array, dO: Float32Array, O: Float32Array, lse: Float32Array,
                 q: Float32Array, k: Float32Array, v: Float32Array, ranges: Int32Array, s: AttendShape): void {
    checkAttend(s, ranges, [["dq [nq, Hq, D]", dq, "q"], ["dk [nk, Hkv, D]", dk, "k"], ["dv [nk, Hkv, D]", dv, "k"], ["dO [nq, Hq, D]", dO, "q"],
      ["O [nq, Hq, D]", O, "q"], ["lse [nq, Hq]", lse, "lse"], ["q [nq, Hq, D]", q, "q"], ["k [nk, Hkv, D]", k, "k"], ["v [nk, Hkv, D]", v, "k"]]);
    const { nq, nk, Hq, Hkv, D } = s, G = Hq / Hkv, scale = 1 / Math.sqrt(D);
    // float64 sums, rounded into the f32 outputs at the end
    const gq = Float64Array.from(dq.subarray(0, nq * Hq * D)), gk = Float64Array.from(dk.subarray(0, nk * Hkv * D)), gv = Float64Array.from(dv.subarray(0, nk * Hkv * D));
    for (let i = 0; i < nq; i++) {
      const keys = visibleKeys(ranges, i);
      for (let h = 0; h < Hq; h++) {
        const qo = (i * Hq + h) * D, g = Math.floor(h / G), L = lse[i * Hq + h]!;
        let zero = true;
        for (let d = 0; d < D; d++) if (dO[qo + d] !== 0) zero = false;
        if (zero) continue;
        const delta = dot(dO, qo, O, qo, D);
        for (const j of keys) {
          const ko = (j * Hkv + g) * D;
          const p = Math.exp(dot(q, qo, k, ko, D) * scale - L), ds = p * (dot(dO, qo, v, ko, D) - delta) * scale;
          for (let d = 0; d < D; d++) {
            gq[qo + d]! += ds * k[ko + d]!;
            gk[ko + d]! += ds * q[qo + d]!;
            gv[ko + d]! += p * dO[qo + d]!;
          }
        }
      }
    }
    dq.set(gq);
    dk.set(gk);
    dv.set(gv);
  }

  mixBackward(dstr: Float32Array, dalpha: Float64Array, dmix: Float32Array, afull: Float32Array, astr: Float32Array, alpha: Float32Array, nq: number, h: { Hq: number; Hkv: number; D: number }): void {
    checkMix(dstr, dalpha, dmix, afull, astr, alpha, nq, h);
    const { Hq, Hkv, D } = h, G = Hq / Hkv;
    for (let i = 0; i < nq; i++) {
      for (let hh = 0; hh < Hq; hh++) {
        const g = Math.floor(hh / G), keep = 1 - alpha[g]!, o = (i * Hq + hh) * D;
        let s = 0;
        for (let d = 0; d < D; d++) {
          s += dmix[o + d]! * (afull[o + d]! - astr[o + d]!);
          dstr[o + d] = keep * dmix[o + d]!;
        }
        dalpha[g]! += s;
      }
    }
  }
}

/** The key rows query row i sees: [0, a) then [b, e). */
function visibleKeys(ranges: Int32Array, i: number): number[] {
  const a = ranges[3 * i]!, b = ranges[3 * i + 1]!, e = ranges[3 * i + 2]!, out: number[] = [];
  for (let j = 0; j < a; j++) out.push(j);
  for (let j = b; j < e; j++) out.push(j);
  return out;
}

function dot(x: Float32Array, xo: number, y: Float32Array, yo: number, n: number): number {
  let s = 0;
  for (let d = 0; d < n; d++) s += x[xo + d]! * y[yo + d]!;
  return s;
}
