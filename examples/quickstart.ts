// Quick start: DuoAttention on one layer-stack, checked against full attention on the retrieval heads.
// Runs as is: `node --import tsx examples/quickstart.ts`, `bun examples/quickstart.ts`, `deno run -A examples/quickstart.ts`.
// (From the npm package, import from "duo-attention" instead of "../src/index.ts".)
import { DuoAttention, HeadSchedule, syntheticSchedule } from "../src/index.ts";

const shape = { numLayers: 4, numHeads: 8, numKvHeads: 2, headDim: 64 };
const heads = syntheticSchedule(shape.numLayers, shape.numKvHeads, 0.5); // or sparsify(await loadPattern(dir), { sparsity: 0.5 })
const options = { shape, sinkSize: 16, recentSize: 64, kvDtype: "bf16" as const, backend: "wasm" as const, threads: 0 };
const duo = await DuoAttention.create({ ...options, heads });
const full = await DuoAttention.create({ ...options, heads: HeadSchedule.full(shape.numLayers, shape.numKvHeads) });

// Seeded inputs standing in for a model's post-RoPE q/k/v: q [T, Hq, D], k/v [T, Hkv, D].
let s = 7;
const random = (n: number) => Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1);
const T = 200, { numHeads: Hq, numKvHeads: Hkv, headDim: D } = shape;
const seqDuo = duo.sequence(), seqFull = full.sequence();
let maxDiff = 0;
for (let start = 0; start < 3 * T; start += T) { // three chunked-prefill calls of 200 tokens per layer
  for (let layer = 0; layer < shape.numLayers; layer++) {
    const q = random(T * Hq * D), k = random(T * Hkv * D), v = random(T * Hkv * D);
    const a = await seqDuo.attend(layer, q, k, v), b = await seqFull.attend(layer, q, k, v);
    // Retrieval heads must equal full attention; streaming heads see only S sinks + R recent tokens.
    for (const h of heads.retrieval[layer]!) {
      for (let t = 0; t < T; t++) for (let g = 0; g < Hq / Hkv; g++) for (let d = 0; d < D; d++) {
        const i = (t * Hq + h * (Hq / Hkv) + g) * D + d;
        maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
      }
    }
  }
}
const bytes = seqDuo.bytes();
console.log(`${seqDuo.length(0)} tokens per layer; KV held: DuoAttention ${bytes.total} B, full attention ${bytes.fullAttention} B (${(bytes.fullAttention / bytes.total).toFixed(2)}x less)`);
console.log(`retrieval heads vs full attention: max |difference| ${maxDiff.toExponential(2)}`);
await duo.dispose();
await full.dispose();
if (maxDiff > 1e-5) throw new Error("retrieval heads should match full attention");
