/**
 * `duo make-model`: write a Llama-shaped model with RANDOM weights (src/model/write.ts) as a Hugging Face directory
 * and/or a GGUF file, so that `duo generate` / `duo niah` / the llama.cpp comparison run offline at a real shape.
 */
import { checkOneOf, DuoError } from "../errors.ts";
import { MODEL_SHAPES, RANDOM_WEIGHTS_NOTE, WRITE_DTYPES, WRITE_FORMATS, writeRandomModel } from "../model/write.ts";
import { formatBytes } from "../report/table.ts";
import { numberArg, parseArgs } from "./args.ts";
import { write } from "./io.ts";
import { Progress } from "./progress.ts";

const USAGE = `usage: duo make-model --out DIR [--shape S] [--dtype D] [--format F] [--tokenizer T] [--seed N]
  Write a model with RANDOM weights (it runs at a real model's shape but produces noise, not language).
  --out DIR      directory to write (created)
  --shape S      ${Object.keys(MODEL_SHAPES).join(" | ")} (default tiny)
  --dtype D      weights: ${WRITE_DTYPES.join(" | ")} (default bf16); q4_k: Q4_K matrices with Q6_K embedding
                 and lm_head (random blocks, like llama.cpp's Q4_K_M); the quantized types' safetensors twin is f32
  --format F     ${WRITE_FORMATS.join(" | ")} (default both): config.json + model.safetensors + tokenizer.json,
                 and/or DIR/model-<dtype>.gguf (llama.cpp's format; load it by its path)
  --tokenizer T  gpt2 (byte-level BPE) | llama (SentencePiece); default llama for llama-2-7b and mistral-7b
  --seed N       random seed (default 0)
`;

export async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ["out", "shape", "dtype", "format", "tokenizer", "seed"], flags: ["help"] });
  if (args.flags.has("help")) {
    write(USAGE);
    return 0;
  }
  if (args.positional.length) throw new DuoError("INVALID_ARGUMENT", `unexpected argument ${JSON.stringify(args.positional[0])}; ${USAGE.split("\n")[0]}`);
  const out = args.values.get("out");
  if (!out) throw new DuoError("INVALID_ARGUMENT", `--out DIR is required; ${USAGE.split("\n")[0]}`);
  const shape = checkOneOf("--shape", args.values.get("shape") ?? "tiny", Object.keys(MODEL_SHAPES));
  const dtype = checkOneOf("--dtype", args.values.get("dtype") ?? "bf16", WRITE_DTYPES);
  const format = checkOneOf("--format", args.values.get("format") ?? "both", WRITE_FORMATS);
  const tok = args.values.get("tokenizer");
  const tokenizer = tok === undefined ? undefined : checkOneOf("--tokenizer", tok, ["gpt2", "llama"] as const);
  const seed = numberArg(args, "seed", { min: 0, max: 2 ** 32 - 1, integer: true }) ?? 0;
  let bar: Progress | undefined;
  const m = await writeRandomModel(out, {
    shape, dtype, format, seed, tokenizer,
    progress: (done, total) => (bar ??= new Progress(`writing ${formatBytes(total)}`, total)).update(done),
  });
  bar?.done();
  const c = m.config;
  write(`${RANDOM_WEIGHTS_NOTE}\n`);
  write(`${shape}: ${c.numLayers} layers, hidden ${c.hiddenSize}, ${c.numHeads} heads / ${c.numKvHeads} KV heads x ${c.headDim}, vocab ${c.vocabSize}; ${dtype} weights, ${formatBytes(m.bytes)} per format, seed ${seed}\n`);
  for (const f of m.files) write(`  ${f}\n`);
  const target = format === "gguf" ? m.gguf! : out;
  write(`try: duo generate --model ${target} --prompt "the" --max-tokens 16\n`);
  return 0;
}
