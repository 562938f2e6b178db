/**
 * `duo generate`: load a Llama-family model (full attention, or DuoAttention with a head pattern), run a prompt and
 * stream the generated text to stdout; timings (prefill and decode tokens/s) and KV memory go to stderr.
 */
import { DuoError } from "../errors.ts";
import { LlamaModel } from "../model/llama.ts";
import { readText } from "../runtime.ts";
import { numberArg, parseArgs } from "./args.ts";
import { formatBytes } from "../report/table.ts";
import { write } from "./io.ts";
import { MODEL_FLAGS, MODEL_USAGE, MODEL_VALUES, modelOptions } from "./model-args.ts";

const USAGE = `usage: duo generate --model DIR [--prompt TEXT | --prompt-file F | --prompt-ids 1,2,3] [options]
  Generate text with a Llama / Mistral / Qwen2 model; without --pattern every head is a retrieval head.
${MODEL_USAGE}  --pattern DIR|URL    head pattern (full_attention_heads.tsv + config.json): DuoAttention
  --sparsity s         fraction of KV heads that stream (default 0.5)
  --prompt TEXT        the prompt (BOS added), or --prompt-file F, or --prompt-ids 1,2,3 (ids as given)
  --chat               wrap the prompt in the model's chat template as one user message
  --max-tokens N       most tokens to generate (default 128)
  --greedy             argmax decoding (the default)
  --temperature t      sample from softmax(logits / t); with --top-k k, --top-p p, --seed n
  --print-ids          print token ids as they come (instead of text)
`;

function parseIds(s: string): number[] {
  const ids = s.split(",").map((x) => x.trim()).filter(Boolean).map(Number);
  if (ids.length === 0 || ids.some((n) => !Number.isInteger(n) || n < 0)) {
    throw new DuoError("INVALID_ARGUMENT", `--prompt-ids must be comma-separated non-negative integers, got ${JSON.stringify(s)}`);
  }
  return ids;
}

export async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, {
    values: [...MODEL_VALUES, "pattern", "sparsity", "prompt", "prompt-file", "prompt-ids", "max-tokens", "temperature", "top-p", "top-k", "seed"],
    flags: ["help", "greedy", "print-ids", "chat", ...MODEL_FLAGS],
  });
  if (args.flags.has("help")) {
    write(USAGE);
    return 0;
  }
  if (args.positional.length) throw new DuoError("INVALID_ARGUMENT", `unexpected argument ${JSON.stringify(args.positional[0])}; ${USAGE.split("\n")[0]}`);
  const { dir, options } = modelOptions(args);
  const pattern = args.values.get("pattern");
  const sparsity = numberArg(args, "sparsity", { min: 0, max: 1 });
  if (pattern !== undefined) Object.assign(options, { pattern, sparsity: sparsity ?? 0.5 });
  else if (sparsity !== undefined) throw new DuoError("INVALID_ARGUMENT", "--sparsity needs --pattern");

  const sources = ["prompt", "prompt-file", "prompt-ids"].filter((k) => args.values.has(k));
  if (sources.length !== 1) throw new DuoError("INVALID_ARGUMENT", `give exactly one of --prompt, --prompt-file, --prompt-ids${sources.length ? ` (got ${sources.map((s) => `--${s}`).join(" and ")})` : ""}`);
  const temperature = numberArg(args, "temperature", { min: 0 });
  const sampling = temperature !== undefined || ["top-p", "top-k", "seed"].some((k) => args.values.has(k));
  if (sampling && args.flags.has("greedy")) throw new DuoError("INVALID_ARGUMENT", "--greedy takes no --temperature / --top-p / --top-k / --seed");
  const gen = {
    maxTokens: numberArg(args, "max-tokens", { min: 1, integer: true }) ?? 128,
    chat: args.flags.has("chat"),
    ...(sampling
      ? {
        temperature: temperature ?? 1,
        topP: numberArg(args, "top-p", { min: 0, max: 1 }),
        topK: numberArg(args, "top-k", { min: 0, integer: true }),
        seed: numberArg(args, "seed", { min: 0, max: 2 ** 32 - 1, integer: true }),
      }
      : { greedy: true }),
  };
  const idsArg = args.values.get("prompt-ids");
  const fileArg = args.values.get("prompt-file");
  const prompt = idsArg !== undefined ? parseIds(idsArg) : fileArg !== undefined ? await readText(fileArg) : args.values.get("prompt")!;

  const model = await LlamaModel.load(dir, options);
  try {
    const printIds = args.flags.has("print-ids");
    const run = model.generate(prompt, Object.fromEntries(Object.entries(gen).filter(([, v]) => v !== undefined)));
    let first = true;
    for await (const t of run) {
      write(printIds ? `${first ? "" : " "}${t.id}` : t.text);
      first = false;
    }
    write("\n");
    const s = run.stats, kv = model.kvBytes(), cfg = model.config;
    const rate = (n: number, ms: number) => (ms > 0 ? `${(n / (ms / 1000)).toFixed(1)} tokens/s` : "-");
    const retrieval = model.schedule.retrievalHeads, total = cfg.numLayers * cfg.numKvHeads;
    const windowFrom = pattern !== undefined && options.sinkSize === undefined && options.recentSize === undefined ? " (the pattern's config.json)" : "";
    write(
      [
        `prefill: ${s.promptTokens} tokens in ${s.prefillMs.toFixed(1)} ms (${rate(s.promptTokens, s.prefillMs)})`,
        `decode: ${s.decodeSteps} tokens in ${s.decodeMs.toFixed(1)} ms (${rate(s.decodeSteps, s.decodeMs)}); ${s.generatedTokens} generated, stopped by ${s.stopReason}${s.seed !== null ? `, seed ${s.seed}` : ""}`,
        `KV cache: ${formatBytes(kv.total)} (retrieval ${formatBytes(kv.retrieval)} + streaming ${formatBytes(kv.streaming)}; full attention: ${formatBytes(kv.fullAttention)}; allocated ${formatBytes(kv.allocated)})`,
        `heads: ${retrieval}/${total} KV heads retrieval, S=${model.engine.sinkSize} R=${model.engine.recentSize}${windowFrom}, kv ${model.engine.kvDtype}; attention: ${model.engine.backendName} backend, model math: ${model.kernels.name} kernels`,
        "",
      ].join("\n"),
      "stderr",
    );
  } finally {
    await model.dispose();
  }
  return 0;
}
