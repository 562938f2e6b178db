// What the TypeScript layers above the kernels cost per decode call (cache bookkeeping, op plans, validation),
// measured on the null backend, which computes nothing. Run: node --import tsx bench/engine-overhead.ts
// (or bun / deno run -A). Llama-3-8B shape, 50% retrieval, context 32K (32 pages per retrieval layer-shard).
import { DuoAttention } from "../src/engine/duo.ts";
import { syntheticSchedule } from "../src/schedule/synthetic.ts";
import { runtime } from "../src/runtime.ts";

const shape = { numLayers: 32, numHeads: 32, numKvHeads: 8, headDim: 128 };
const duo = await DuoAttention.create({ shape, heads: syntheticSchedule(32, 8, 0.5), backend: "null", sinkSize: 64, recentSize: 256 });
const seq = duo.sequence();
const chunk = new Float32Array(1024 * 8 * 128), q1 = new Float32Array(32 * 128), k1 = new Float32Array(8 * 128);
for (let i = 0; i < 32; i++) for (let l = 0; l < 32; l++) await seq.fill(l, chunk, chunk);
const step = async () => {
  for (let l = 0; l < 32; l++) await seq.attend(l, q1, k1, k1);
};
for (let w = 0; w < 100; w++) await step();
const N = 500, t0 = performance.now();
for (let s = 0; s < N; s++) await step();
const ms = (performance.now() - t0) / N;
console.log(`${runtime().name} ${runtime().version}: engine overhead at context ${seq.length(0)}: ${((ms / 32) * 1000).toFixed(1)} µs per layer call, ${ms.toFixed(2)} ms per 32-layer token`);
await duo.dispose();
