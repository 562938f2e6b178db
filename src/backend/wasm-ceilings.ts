/**
 * The machine's two ceilings as a kernel backend sees them, measured by its own ceiling kernels (duo.wasm in the wasm
 * backend's workers; libduo.so's over the native backend's threads): same runtime, same thread count as the attention
 * kernels they are compared with (ANCHORS §4):
 *  - streaming-read bandwidth: a SIMD sum over 256 MiB per shard (well past any cache), all shards at once;
 *  - multiply-add throughput: a register-resident loop of independent f32x4 multiply-add chains (2 FLOP per lane),
 *    issued with the same VF_MAD as the attention kernels of the loaded build: mul + add in duo.wasm, the fused
 *    relaxed_madd in duo-relaxed.wasm (wasm/src/simd.h).
 * Each is the best of a few trials after a warm-up of short calls (V8 only tiers wasm up after many calls).
 */
/** What the ceilings are measured on: WasmBackend, or NativeBackend (one shard whose `threads` each run the mad
 *  steps, and share the read bytes). */
export interface CeilingKernels {
  readonly shards: number;
  /** the build that measures (its multiply-add is the kernels') */
  readonly kernels: string;
  /** threads of one shard that each run all `amount` multiply-add steps (native; 1 for wasm) */
  readonly madThreads?: number;
  measure(shard: number, kind: "read" | "mad", amount: number, reps: number): Promise<number>;
}

export interface WasmCeilings {
  /** streaming-read bandwidth of all shards together, GB/s (1e9 bytes) */
  readGBps: number;
  /** multiply-add throughput of all shards together, GFLOP/s (one multiply-add = 2 FLOP) */
  gflops: number;
  /** shards (workers, or 1 in-thread) that ran at once */
  workers: number;
  /** the build that measured them (its multiply-add is the kernels') */
  kernels: string;
}

const READ_BYTES = 256 * 2 ** 20;
const MAD_STEPS = 10_000_000;
/** FLOP of one step of duo_bench_mad: 12 chains × 4 lanes × one multiply-add */
const MAD_FLOP_PER_STEP = 96;

/** Best wall time (ms) over `trials` of every shard running `reps` calls at once. */
async function best(b: CeilingKernels, kind: "read" | "mad", amount: number, reps: number, trials: number): Promise<number> {
  let ms = Infinity;
  for (let i = 0; i < trials; i++) {
    const t0 = performance.now();
    await Promise.all(Array.from({ length: b.shards }, (_, s) => b.measure(s, kind, amount, reps)));
    ms = Math.min(ms, performance.now() - t0);
  }
  return ms;
}

export async function measureWasmCeilings(b: CeilingKernels, trials = 3): Promise<WasmCeilings> {
  await best(b, "read", 64 * 1024, 200, 1);
  await best(b, "mad", 1000, 200, 1);
  const readMs = await best(b, "read", READ_BYTES, 4, trials);
  const madMs = await best(b, "mad", MAD_STEPS, 2, trials);
  return {
    readGBps: (b.shards * READ_BYTES * 4) / (readMs * 1e6),
    gflops: (b.shards * (b.madThreads ?? 1) * MAD_STEPS * 2 * MAD_FLOP_PER_STEP) / (madMs * 1e6),
    workers: b.shards * (b.madThreads ?? 1),
    kernels: b.kernels,
  };
}
