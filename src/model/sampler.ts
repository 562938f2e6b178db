/**
 * Choosing the next token from logits: greedy (argmax, lowest id on ties) or sampling with temperature, top-k and
 * top-p (nucleus), driven by a small seeded PRNG so that a seed reproduces a generation in every runtime.
 */
import { DuoError } from "../errors.ts";

export interface SamplingOptions {
  /** argmax (the default when no temperature is given) */
  greedy?: boolean;
  /** > 0 samples from softmax(logits / temperature); 0 = greedy */
  temperature?: number;
  /** keep only the k most likely tokens (0 = no limit) */
  topK?: number;
  /** keep the smallest set of most likely tokens whose probability reaches p (1 = no limit) */
  topP?: number;
  /** PRNG seed (an integer; default: random) */
  seed?: number;
}

/** xoshiro128** (Blackman & Vigna), seeded through splitmix32; uniform floats in [0, 1) with 32 random bits. */
export class Prng {
  private s = new Uint32Array(4);

  constructor(seed: number) {
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }

  nextU32(): number {
    const s = this.s;
    const r = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return r;
  }

  next(): number {
    return this.nextU32() / 2 ** 32;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

export class Sampler {
  readonly greedy: boolean;
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  readonly seed: number;
  private readonly rng: Prng;

  constructor(o: SamplingOptions = {}) {
    const t = o.temperature ?? (o.greedy === false ? 1 : 0);
    if (typeof t !== "number" || !(t >= 0) || !Number.isFinite(t)) throw new DuoError("INVALID_ARGUMENT", `temperature must be a finite number >= 0, got ${String(o.temperature)}`);
    const k = o.topK ?? 0, p = o.topP ?? 1;
    if (!Number.isInteger(k) || k < 0) throw new DuoError("INVALID_ARGUMENT", `topK must be an integer >= 0 (0 = no limit), got ${String(o.topK)}`);
    if (typeof p !== "number" || !(p > 0 && p <= 1)) throw new DuoError("INVALID_ARGUMENT", `topP must be in (0, 1], got ${String(o.topP)}`);
    const seed = o.seed ?? Math.floor(Math.random() * 2 ** 32);
    if (!Number.isInteger(seed)) throw new DuoError("INVALID_ARGUMENT", `seed must be an integer, got ${String(o.seed)}`);
    if (o.greedy === true && o.temperature !== undefined && o.temperature > 0) {
      throw new DuoError("INVALID_ARGUMENT", "greedy decoding takes no temperature; pass either greedy or temperature/topK/topP");
    }
    this.greedy = o.greedy === true || t === 0;
    this.temperature = t;
    this.topK = k;
    this.topP = p;
    this.seed = seed >>> 0;
    this.rng = new Prng(this.seed);
  }

  sample(logits: Float32Array): number {
    if (this.greedy) return argmax(logits);
    // Candidates: every token in id order, or (with top-k / top-p) by decreasing logit, ties to the lower id.
    let order = Array.from(logits.keys());
    if (this.topK > 0 || this.topP < 1) order.sort((a, b) => logits[b]! - logits[a]! || a - b);
    if (this.topK > 0) order = order.slice(0, this.topK);
    const m = logits[argmax(logits)]!;
    const w = order.map((i) => Math.exp((logits[i]! - m) / this.temperature));
    let total = w.reduce((a, b) => a + b, 0);
    // Nucleus: the shortest prefix whose probability mass reaches topP.
    if (this.topP < 1) {
      let acc = 0, n = 0;
      while (n < w.length && acc < this.topP * total) acc += w[n++]!;
      order.length = w.length = n;
      total = acc;
    }
    let u = this.rng.next() * total;
    for (let j = 0; j < order.length; j++) {
      u -= w[j]!;
      if (u < 0) return order[j]!;
    }
    return order[order.length - 1]!;
  }
}
