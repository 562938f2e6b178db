// The random Llama-shaped gate model the identification benches time (identify-step.ts, identify-cone.ts): hidden/32
// query heads of 32, 2 KV heads, MLP 2.6875·hidden (128 → 344), vocabulary 512, weights uniform with variance 1/fan-in
// and unit norms, from a seeded Random that the caller goes on drawing from (token ids, gates).
import { parseConfig } from "../src/model/config.ts";
import { gateModelFromTensors } from "../src/identify/model.ts";
import { expectedTensors } from "../src/model/weights.ts";
import { Random } from "../src/identify/random.ts";

export function randomGateModel(hidden: number, layers: number, maxPositions: number, seed = 1) {
  const config = parseConfig({ architectures: ["LlamaForCausalLM"], hidden_size: hidden, intermediate_size: Math.round((hidden * 344) / 128 / 8) * 8, num_hidden_layers: layers, num_attention_heads: hidden / 32, num_key_value_heads: 2, vocab_size: 512, max_position_embeddings: maxPositions });
  const r = new Random(seed);
  const tensors = new Map<string, Float64Array>();
  for (const [name, shape] of expectedTensors(config)) {
    const n = shape.reduce((a, b) => a * b, 1), norm = shape.length === 1;
    tensors.set(name, Float64Array.from({ length: n }, () => (norm ? 1 : (r.next() * 2 - 1) * Math.sqrt(3 / shape[1]!))));
  }
  return { config, model: gateModelFromTensors(config, (n) => tensors.get(n)), r };
}
