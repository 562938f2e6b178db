/**
 * MT19937, bit-exact with numpy's legacy global RNG (`np.random.seed(s)`; `np.random.random_sample()`), which
 * upstream's `sparsify_attention_heads` uses for its tie-breaking noise (SPEC.md §1.3).
 * 32-bit arithmetic: Math.imul for the products, `>>> 0` to stay unsigned.
 */
import { checkInt } from "../errors.ts";

const N = 624;
const M = 397;
const UPPER = 0x80000000;
const LOWER = 0x7fffffff;
const MATRIX_A = 0x9908b0df;

export class MT19937 {
  private readonly mt = new Uint32Array(N);
  private index = N;

  /** Matsumoto & Nishimura's init_genrand, the same as numpy's `mt19937_seed` for an integer seed. */
  constructor(seed: number) {
    this.mt[0] = checkInt("MT19937 seed", seed, 0, 0xffffffff);
    for (let i = 1; i < N; i++) {
      const prev = this.mt[i - 1]!;
      this.mt[i] = (Math.imul(1812433253, prev ^ (prev >>> 30)) + i) >>> 0;
    }
  }

  /** Regenerate all 624 words (the "twist"). */
  private twist(): void {
    const mt = this.mt;
    for (let i = 0; i < N; i++) {
      const y = (mt[i]! & UPPER) | (mt[(i + 1) % N]! & LOWER);
      mt[i] = mt[(i + M) % N]! ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
    }
    this.index = 0;
  }

  /** Next tempered 32-bit output, an integer in [0, 2^32). */
  nextUint32(): number {
    if (this.index >= N) this.twist();
    let y = this.mt[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** numpy's `random_sample()`: 53 random bits from two outputs (27 + 26), in [0, 1). a·2^26 + b is exact. */
  randomSample(): number {
    const a = this.nextUint32() >>> 5;
    const b = this.nextUint32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }
}
