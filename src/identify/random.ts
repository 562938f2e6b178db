/**
 * The seeded random source of identification (data, shuffles): numpy's MT19937 stream (src/pattern/mt19937.ts).
 * Reproducible in every runtime for a given seed; not torch's generator, so upstream's exact draws are not
 * reproduced (nothing could: they depend on its DataLoader workers).
 */
import { MT19937 } from "../pattern/mt19937.ts";

export class Random {
  private readonly mt: MT19937;
  constructor(seed: number) {
    this.mt = new MT19937(seed >>> 0);
  }
  /** uniform in [0, 1) */
  next(): number {
    return this.mt.randomSample();
  }
  /** uniform integer in [0, n) */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** a random permutation of 0 .. n−1 (Fisher–Yates) */
  permutation(n: number): Int32Array {
    const p = Int32Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [p[i], p[j]] = [p[j]!, p[i]!];
    }
    return p;
  }
}
