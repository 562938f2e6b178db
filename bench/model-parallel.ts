// Decode (and a short prefill) of a random Llama-3.2-1B-shaped model (hidden 2048, 16 layers, 32/8 heads of 64,
// MLP 8192, vocab 128256, tied embeddings, bf16: 2.47 GB) with the model math on kernels "wasm" (one instance in
// this thread) and "wasm-parallel" (modelThreads workers, each holding 1/N of every matrix). Both models are loaded
// side by side (about twice the weights in memory) and measured in alternation, so that each round sees the same
// machine; the ratio of one round is the figure to quote. Attention runs on the default backend for both.
// The weights are random (written by this script into a temp directory, removed at the end): the speed does not
// depend on their values.
// Run: node --import tsx bench/model-parallel.ts [--threads 2] [--tokens 16] [--rounds 3] [--prompt 32]
//      [--layers 16 --hidden 2048 --intermediate 8192 --vocab 128256]   (or bun / deno run -A)
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LlamaModel } from "../src/model/llama.ts";
import { loadAverage, runtime } from "../src/runtime.ts";
import { tokenizerJson } from "../test/helpers/tiny-model.ts";

const g = globalThis as { process?: { argv: string[] }; Deno?: { args: string[] } };
const argv = g.Deno?.args ?? g.process?.argv.slice(2) ?? [];
const arg = (name: string, dflt: number) => (argv.includes(`--${name}`) ? Number(argv[argv.indexOf(`--${name}`) + 1]) : dflt);
const threads = arg("threads", 2), tokens = arg("tokens", 16), rounds = arg("rounds", 3), promptLen = arg("prompt", 32);
const L = arg("layers", 16), H = arg("hidden", 2048), I = arg("intermediate", 8192), V = arg("vocab", 128256);
const Hq = H / 64, Hkv = Math.max(1, Hq / 4), D = 64;

/** The model directory: config.json, tokenizer.json (a small byte-level BPE: ids past it are never decoded here),
 *  and model.safetensors streamed from one buffer of random bf16 values in ±0.05 (norm weights are 1). */
function writeModel(dir: string): number {
  const tensors: { name: string; shape: number[]; dtype: "BF16" | "F32" }[] = [{ name: "model.embed_tokens.weight", shape: [V, H], dtype: "BF16" }];
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    tensors.push(
      { name: `${p}input_layernorm.weight`, shape: [H], dtype: "F32" },
      { name: `${p}self_attn.q_proj.weight`, shape: [Hq * D, H], dtype: "BF16" },
      { name: `${p}self_attn.k_proj.weight`, shape: [Hkv * D, H], dtype: "BF16" },
      { name: `${p}self_attn.v_proj.weight`, shape: [Hkv * D, H], dtype: "BF16" },
      { name: `${p}self_attn.o_proj.weight`, shape: [H, Hq * D], dtype: "BF16" },
      { name: `${p}post_attention_layernorm.weight`, shape: [H], dtype: "F32" },
      { name: `${p}mlp.gate_proj.weight`, shape: [I, H], dtype: "BF16" },
      { name: `${p}mlp.up_proj.weight`, shape: [I, H], dtype: "BF16" },
      { name: `${p}mlp.down_proj.weight`, shape: [H, I], dtype: "BF16" },
    );
  }
  tensors.push({ name: "model.norm.weight", shape: [H], dtype: "F32" });
  const bytesOf = (t: (typeof tensors)[number]) => t.shape.reduce((a, b) => a * b, 1) * (t.dtype === "F32" ? 4 : 2);
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytesOf(t)] };
    offset += bytesOf(t);
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const random = new Uint16Array(1 << 22); // 8 MiB of bf16 in ±0.05
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  for (let i = 0, s = 12345; i < random.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    f[0] = ((s / 2 ** 32) * 2 - 1) * 0.05;
    random[i] = u[0]! >>> 16;
  }
  const ones = new Float32Array(H).fill(1);
  const fd = openSync(join(dir, "model.safetensors"), "w");
  try {
    const len = new Uint8Array(8);
    new DataView(len.buffer).setBigUint64(0, BigInt(json.length), true);
    writeSync(fd, len);
    writeSync(fd, new TextEncoder().encode(json));
    for (const t of tensors) {
      if (t.dtype === "F32") writeSync(fd, new Uint8Array(ones.buffer));
      else {
        const bytes = new Uint8Array(random.buffer);
        for (let left = bytesOf(t), k = 0; left > 0; k++) {
          const start = (k * 4096 * 2) % (bytes.length / 2); // shift the window so tensors differ
          const n = Math.min(left, bytes.length - start);
          writeSync(fd, bytes.subarray(start, start + n));
          left -= n;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(tokenizerJson().json));
  writeFileSync(join(dir, "config.json"), JSON.stringify({
    architectures: ["LlamaForCausalLM"], model_type: "llama", hidden_size: H, intermediate_size: I, num_hidden_layers: L,
    num_attention_heads: Hq, num_key_value_heads: Hkv, head_dim: D, vocab_size: V, hidden_act: "silu", rms_norm_eps: 1e-5,
    rope_theta: 500000, rope_scaling: null, max_position_embeddings: 131072, tie_word_embeddings: true, torch_dtype: "bfloat16",
    bos_token_id: 1, eos_token_id: 2,
  }));
  return offset;
}

const dir = mkdtempSync(join(tmpdir(), "duo-bench-model-"));
try {
  const bytes = writeModel(dir);
  console.log(`${runtime().name} ${runtime().version}, ${runtime().cores} cores, load ${(await loadAverage())?.toFixed(1) ?? "?"}: ` +
    `random ${L}-layer model, hidden ${H}, MLP ${I}, ${Hq}/${Hkv} heads of ${D}, vocab ${V}, bf16 (${(bytes / 1e9).toFixed(2)} GB)`);
  const sets = [
    { name: "wasm", options: { kernels: "wasm" as const } },
    { name: `wasm-parallel x${threads}`, options: { kernels: "wasm-parallel" as const, modelThreads: threads } },
  ];
  const models: { name: string; model: LlamaModel; decode: number[]; prefill: number[] }[] = [];
  for (const s of sets) {
    const t0 = performance.now();
    const model = await LlamaModel.load(dir, { ...s.options, prefillChunk: promptLen });
    console.log(`  ${s.name.padEnd(18)} loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s (attention: ${model.engine.backendName})`);
    models.push({ name: s.name, model, decode: [], prefill: [] });
  }
  // what one matmul costs beyond its arithmetic: a [1, 8] matrix, best of 5 runs of 2000 calls
  for (const m of models) {
    const k = m.model.kernels, w = k.matrix(1, 8, "f32"), x = k.activations(8), y = k.activations(1);
    k.write(w, 0, new Uint8Array(32));
    let best = Infinity;
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      for (let i = 0; i < 2000; i++) k.matmul(y, x, w, 1);
      best = Math.min(best, (performance.now() - t0) / 2);
    }
    console.log(`  ${m.name.padEnd(18)} ${best.toFixed(1)} µs per call of a [1, 8] matmul`);
  }
  const prompt = Array.from({ length: promptLen }, (_, i) => 3 + ((i * 7919) % (V - 3)));
  for (let r = 0; r < rounds; r++) {
    for (const m of models) {
      m.model.reset();
      let t0 = performance.now();
      await m.model.forward(prompt);
      m.prefill.push((promptLen * 1000) / (performance.now() - t0));
      t0 = performance.now();
      for (let i = 0; i < tokens; i++) await m.model.forward([3 + ((i * 104729) % (V - 3))]);
      m.decode.push((tokens * 1000) / (performance.now() - t0));
    }
    const [a, b] = models;
    console.log(`  round ${r + 1}: decode ${a!.decode[r]!.toFixed(2)} vs ${b!.decode[r]!.toFixed(2)} tokens/s (${(b!.decode[r]! / a!.decode[r]!).toFixed(2)}x), ` +
      `prefill of ${promptLen}: ${a!.prefill[r]!.toFixed(1)} vs ${b!.prefill[r]!.toFixed(1)} tokens/s (${(b!.prefill[r]! / a!.prefill[r]!).toFixed(2)}x)`);
  }
  const best = (xs: number[]) => Math.max(...xs);
  const [a, b] = models;
  console.log(`best of ${rounds}: decode ${best(a!.decode).toFixed(2)} (${a!.name}) vs ${best(b!.decode).toFixed(2)} (${b!.name}) tokens/s: ${(best(b!.decode) / best(a!.decode)).toFixed(2)}x`);
  for (const m of models) await m.model.dispose();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
