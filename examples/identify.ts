// Find retrieval heads with the library: upstream's passkey data over a haystack, the gate optimisation, and an
// upstream-format pattern directory that loadPattern (and `duo generate --pattern`) reads back. Runs as is, with
// a small random Llama built in memory and a word-level toy tokenizer in place of a real checkpoint:
// `node --import tsx examples/identify.ts`, `bun examples/identify.ts`, `deno run -A examples/identify.ts`.
// With a real model: `const { model, tokenizer } = await loadGateModel(dir)` and a real text for the haystack.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gateModelFromTensors, generatedHaystack, identifyHeads, loadPattern, PasskeyDataset, passkeySource, Random, writeIdentifyOutput } from "../src/index.ts";
import { parseConfig } from "../src/model/config.ts";
import { expectedTensors } from "../src/model/weights.ts";

// A toy tokenizer: one token per word or line break (ids by first appearance, wrapping at the vocabulary), BOS = 1.
const vocab = new Map<string, number>();
const tokenizer = {
  encode: (text: string, o: { addSpecialTokens?: boolean } = {}) =>
    [...(o.addSpecialTokens ?? true ? [1] : []), ...(text.match(/\n+|[^ \n]+/g) ?? []).map((w) => vocab.get(w) ?? vocab.set(w, 2 + (vocab.size % 254)).get(w)!)],
};

// A random 2-layer GQA Llama (hidden 64, 4 query / 2 KV heads) with every weight the config implies.
const config = parseConfig({ architectures: ["LlamaForCausalLM"], hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 256 });
const r = new Random(3), weights = new Map<string, Float64Array>();
for (const [name, shape] of expectedTensors(config)) {
  weights.set(name, Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (shape.length === 1 ? 1 : (r.next() * 2 - 1) * Math.sqrt(3 / shape[1]!))));
}
const model = gateModelFromTensors(config, (name) => weights.get(name));

// Two needles of 8 NATO words in 400–600 haystack tokens; the streaming window while identifying is S 16 + R 32
// in blocks of 16 (upstream: 128 + 256 in blocks of 128, contexts up to 32K, 2000 steps).
const data = new PasskeyDataset(tokenizer, generatedHaystack(tokenizer, 1200), { ctxMin: 400, ctxMax: 1200, lengths: 4, passkeys: 2, passkeyWords: 8 }, new Random(42));
const run = await identifyHeads(model, {
  method: "optimize", data: passkeySource(data, 42), steps: 8, window: { sink: 16, recent: 32, blockSize: 16 },
  onStep: (s) => console.log(`step ${s.step}/${s.steps}: ${s.tokens} tokens, loss ${s.loss.toExponential(3)}, gates ${s.gateMin.toFixed(3)}..${s.gateMax.toFixed(3)}`),
});

const out = mkdtempSync(join(tmpdir(), "duo-identify-example-"));
await writeIdentifyOutput(out, run, { steps: 8 }, { note: "examples/identify.ts" });
const pattern = await loadPattern(out);
console.log(`wrote ${out}: ${pattern.numLayers} layers x ${pattern.numKvHeads} KV heads, gates ${Array.from(pattern.gates, (g) => g.toFixed(4)).join(" ")}`);
