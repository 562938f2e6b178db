/**
 * The float64 forward and activation-only backward ops of gate identification (IDENTIFICATION.md §1.2): the
 * reference twins of what a fast backend would run. Row-major, one row per token; weights in Hugging Face layout
 * W [out, in] with y = x·Wᵀ (+ b). No weight gradients are ever formed: the only parameters are the gates.
 */

/** y[T, out] = x[T, in] · Wᵀ (+ b[out]). Four outputs at a time share each load of x (about 2× in V8 and JSC);
 *  every output still sums b (or 0) then k = 0, 1, … in order. */
export function linear(y: Float64Array, x: Float64Array, W: Float64Array, T: number, out: number, inp: number, b?: Float64Array): void {
  for (let t = 0; t < T; t++) {
    const xo = t * inp, yo = t * out;
    let o = 0;
    for (; o + 4 <= out; o += 4) {
      const w0 = o * inp, w1 = w0 + inp, w2 = w1 + inp, w3 = w2 + inp;
      let a0 = b ? b[o]! : 0, a1 = b ? b[o + 1]! : 0, a2 = b ? b[o + 2]! : 0, a3 = b ? b[o + 3]! : 0;
      for (let k = 0; k < inp; k++) {
        const xv = x[xo + k]!;
        a0 += xv * W[w0 + k]!;
        a1 += xv * W[w1 + k]!;
        a2 += xv * W[w2 + k]!;
        a3 += xv * W[w3 + k]!;
      }
      y[yo + o] = a0;
      y[yo + o + 1] = a1;
      y[yo + o + 2] = a2;
      y[yo + o + 3] = a3;
    }
    for (; o < out; o++) {
      const wo = o * inp;
      let acc = b ? b[o]! : 0;
      for (let k = 0; k < inp; k++) acc += x[xo + k]! * W[wo + k]!;
      y[yo + o] = acc;
    }
  }
}

/** dx[T, in] (+)= dy[T, out] · W: the input gradient of `linear` (the bias needs none). Rows of dy that are all
 *  zero (outside the cone) add nothing. */
export function linearBackward(dx: Float64Array, dy: Float64Array, W: Float64Array, T: number, out: number, inp: number, accumulate = false): void {
  if (!accumulate) dx.fill(0, 0, T * inp);
  for (let t = 0; t < T; t++) {
    const xo = t * inp, yo = t * out;
    let o = 0;
    for (; o + 4 <= out; o += 4) {
      const g0 = dy[yo + o]!, g1 = dy[yo + o + 1]!, g2 = dy[yo + o + 2]!, g3 = dy[yo + o + 3]!;
      if (g0 === 0 && g1 === 0 && g2 === 0 && g3 === 0) continue;
      const w0 = o * inp, w1 = w0 + inp, w2 = w1 + inp, w3 = w2 + inp;
      for (let k = 0; k < inp; k++) dx[xo + k]! += g0 * W[w0 + k]! + g1 * W[w1 + k]! + g2 * W[w2 + k]! + g3 * W[w3 + k]!;
    }
    for (; o < out; o++) {
      const g = dy[yo + o]!;
      if (g === 0) continue;
      const wo = o * inp;
      for (let k = 0; k < inp; k++) dx[xo + k]! += g * W[wo + k]!;
    }
  }
}

/** y = g ⊙ x / r per row, r = √(mean x² + eps); writes r [T] for the backward. */
export function rmsnorm(y: Float64Array, r: Float64Array, x: Float64Array, g: Float64Array, T: number, eps: number): void {
  const n = g.length;
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[t * n + i]! ** 2;
    const rt = Math.sqrt(ss / n + eps);
    r[t] = rt;
    for (let i = 0; i < n; i++) y[t * n + i] = (x[t * n + i]! / rt) * g[i]!;
  }
}

/** dx += (g⊙dy)/r − x · Σ_i (g⊙dy)_i x_i / (n r³), per row. */
export function rmsnormBackward(dx: Float64Array, dy: Float64Array, x: Float64Array, g: Float64Array, r: Float64Array, T: number): void {
  const n = g.length;
  for (let t = 0; t < T; t++) {
    const rt = r[t]!, o = t * n;
    let dot = 0;
    for (let i = 0; i < n; i++) dot += g[i]! * dy[o + i]! * x[o + i]!;
    const c = dot / (n * rt * rt * rt);
    for (let i = 0; i < n; i++) dx[o + i]! += (g[i]! * dy[o + i]!) / rt - x[o + i]! * c;
  }
}

/** cos and sin [T, D/2] at the given absolute positions, float64. */
export function ropeTables(invFreq: Float64Array, positions: ArrayLike<number>): { cos: Float64Array; sin: Float64Array } {
  const half = invFreq.length, T = positions.length;
  const cos = new Float64Array(T * half), sin = new Float64Array(T * half);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const a = positions[t]! * invFreq[i]!;
      cos[t * half + i] = Math.cos(a);
      sin[t * half + i] = Math.sin(a);
    }
  }
  return { cos, sin };
}

/** In place on x [T, heads, D], rotate-half layout: (a, b) ← (a·c − b·s, b·c + a·s). `inverse` rotates by −θ,
 *  which is the transpose, i.e. RoPE's backward (any scaling only changes θ). */
export function rope(x: Float64Array, T: number, heads: number, D: number, cos: Float64Array, sin: Float64Array, inverse = false): void {
  const half = D / 2, sign = inverse ? -1 : 1;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * D;
      for (let i = 0; i < half; i++) {
        const c = cos[t * half + i]!, s = sign * sin[t * half + i]!;
        const a = x[base + i]!, b = x[base + half + i]!;
        x[base + i] = a * c - b * s;
        x[base + half + i] = b * c + a * s;
      }
    }
  }
}

/** m = silu(a) ⊙ u, silu(a) = a·σ(a) */
export function swiglu(m: Float64Array, a: Float64Array, u: Float64Array): void {
  for (let i = 0; i < m.length; i++) m[i] = (a[i]! / (1 + Math.exp(-a[i]!))) * u[i]!;
}

/** da = dm ⊙ u ⊙ σ(a)(1 + a(1 − σ(a))), du = dm ⊙ silu(a) */
export function swigluBackward(da: Float64Array, du: Float64Array, dm: Float64Array, a: Float64Array, u: Float64Array): void {
  for (let i = 0; i < dm.length; i++) {
    const s = 1 / (1 + Math.exp(-a[i]!));
    da[i] = dm[i]! * u[i]! * s * (1 + a[i]! * (1 - s));
    du[i] = dm[i]! * a[i]! * s;
  }
}
