// A whole model on the best backend here, offline: write a small random Llama-shaped model (random weights: the
// tokens are noise, the arithmetic is real), then run it with full attention and with DuoAttention (half the KV heads
// streaming), on `backend: "auto"` — the model math comes from the same backend as attention (Backend.modelKernels).
// Runs as is: `node --import tsx examples/model.ts`, `bun examples/model.ts`, `deno run -A examples/model.ts`.
// (From the npm package, import from "duo-attention" and "duo-attention/model" instead of "../src/….ts".)
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LlamaModel, syntheticSchedule } from "../src/index.ts";
import { writeRandomModel } from "../src/model/index.ts";

const dir = mkdtempSync(join(tmpdir(), "duo-example-"));
try {
  const shape = { architectures: ["LlamaForCausalLM"], hidden_size: 256, intermediate_size: 688, num_hidden_layers: 4,
    num_attention_heads: 8, num_key_value_heads: 4, vocab_size: 1024, rope_theta: 500000, max_position_embeddings: 8192 };
  const { config } = await writeRandomModel(dir, { shape, dtype: "bf16", seed: 1 });
  const heads = syntheticSchedule(config.numLayers, config.numKvHeads, 0.5);
  const prompt = Array.from({ length: 1500 }, (_, i) => 3 + ((i * 7919) % (config.vocabSize - 3)));
  for (const [name, options] of [["full attention", {}], ["DuoAttention", { heads, sinkSize: 32, recentSize: 128 }]] as const) {
    const model = await LlamaModel.load(dir, { ...options, backend: "auto", strict: false });
    try {
      let t0 = performance.now();
      let logits = await model.forward(prompt); // [vocab] of the last prompt position
      const prefill = performance.now() - t0;
      const tokens: number[] = [];
      t0 = performance.now();
      for (let i = 0; i < 32; i++) { // greedy decode
        const id = logits.indexOf(Math.max(...logits));
        tokens.push(id);
        logits = await model.forward([id]);
      }
      const decode = (performance.now() - t0) / tokens.length;
      const kv = model.kvBytes(), mem = model.memory();
      console.log(`${name}: attention on ${model.engine.backendName}, model math on ${model.kernels.name}; ` +
        `prefill ${prompt.length} tokens in ${prefill.toFixed(0)} ms, decode ${decode.toFixed(2)} ms/token; ` +
        `KV ${kv.total} bytes (full attention would hold ${kv.fullAttention}); weights ${mem.weights} bytes; first tokens ${tokens.slice(0, 6).join(" ")}`);
    } finally {
      await model.dispose();
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
