/** `duo bench model` command-line options: parsed, validated, with defaults. Bad input throws INVALID_ARGUMENT. */
import { KV_DTYPES, type KvDtype } from "../../dtype.ts";
import { checkOneOf } from "../../errors.ts";
import { PRESETS } from "../../schedule/presets.ts";
import { numberArg, parseArgs } from "../args.ts";
import { parseSize } from "../size.ts";
import type { RandomDtype } from "./model-random.ts";
import { parseTokenList } from "./options.ts";

export const WEIGHT_DTYPES = ["bf16", "f16", "f32"] as const;

export const MODEL_USAGE = `usage: duo bench model [options]
  Decode of a whole model on the native backend — random weights made in memory, the head pattern's schedule —
  for full attention and DuoAttention at growing contexts, until full attention's KV no longer fits beside the
  weights in the memory budget: ms/token, memory, and the context each reaches (the paper's capacity figure, on CPU).
  The KV cache is filled with random K/V (no prefill). Duo/full decode time is compared with
  (weights + Duo KV bytes) / (weights + full KV bytes), the ratio of bytes a memory-bound decode step reads.
  --shape name         model shape (default llama-3-8b); one of ${Object.keys(PRESETS).join(", ")}
  --pattern DIR|URL    head pattern (default: the shape's published pattern from $DUO_PATTERNS_DIR or ../shared/patterns)
  --sparsity s         fraction of KV heads that stream (default 0.5)
  --contexts a,b,...   contexts (default: 8K doubling until DuoAttention no longer fits)
  --memory size        budget for weights + KV, e.g. 20GiB (default: MemAvailable now)
  --weights-dtype d    ${WEIGHT_DTYPES.join(" | ")} (default bf16)
  --kv-dtype d         ${KV_DTYPES.join(" | ")} (default bf16)
  --layers n           run n of the shape's layers, spread over the model (their pattern rows; default all)
  --hidden n, --intermediate n, --vocab n
                       override the shape's sizes (short runs and tests); heads and head_dim stay the shape's
  --steps n            decode steps timed per point, after one untimed (default 5; the best is reported)
  --threads n          native threads (default: one per core)
`;

export interface ModelBenchOptions {
  help: boolean;
  shape: string;
  pattern: string | undefined;
  sparsity: number;
  contexts: number[] | undefined;
  memory: number | undefined;
  weightsDtype: RandomDtype;
  kvDtype: KvDtype;
  layers: number | undefined;
  hidden: number | undefined;
  intermediate: number | undefined;
  vocab: number | undefined;
  steps: number;
  threads: number | undefined;
}

export function parseModelBenchArgs(argv: readonly string[]): ModelBenchOptions {
  const args = parseArgs(argv, {
    values: ["shape", "pattern", "sparsity", "contexts", "memory", "weights-dtype", "kv-dtype", "layers", "hidden", "intermediate", "vocab", "steps", "threads"],
    flags: ["help"],
  });
  const int = (name: string, min = 1) => numberArg(args, name, { min, integer: true });
  const memory = args.values.get("memory");
  return {
    help: args.flags.has("help"),
    shape: checkOneOf("--shape", args.values.get("shape") ?? "llama-3-8b", Object.keys(PRESETS)),
    pattern: args.values.get("pattern"),
    sparsity: numberArg(args, "sparsity", { min: 0, max: 1 }) ?? 0.5,
    contexts: args.values.has("contexts") ? parseTokenList("contexts", args.values.get("contexts")!) : undefined,
    memory: memory === undefined ? undefined : parseSize("--memory", memory),
    weightsDtype: checkOneOf("--weights-dtype", args.values.get("weights-dtype") ?? "bf16", WEIGHT_DTYPES),
    kvDtype: checkOneOf("--kv-dtype", args.values.get("kv-dtype") ?? "bf16", KV_DTYPES),
    layers: int("layers"),
    hidden: int("hidden"),
    intermediate: int("intermediate"),
    vocab: int("vocab"),
    steps: int("steps") ?? 5,
    threads: int("threads"),
  };
}
