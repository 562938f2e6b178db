/** The model-loading options `duo generate` and `duo niah` share, parsed into LlamaModel.load options. */
import { BACKEND_CHOICES, type BackendChoice } from "../backend/registry.ts";
import { PREFILL_MODES } from "../engine/options.ts";
import { KV_DTYPES } from "../dtype.ts";
import { checkOneOf, DuoError } from "../errors.ts";
import { KERNELS } from "../model/kernels.ts";
import type { LoadOptions } from "../model/llama.ts";
import { formatBytes } from "../report/table.ts";
import { type Args, numberArg } from "./args.ts";
import { Progress } from "./progress.ts";
import { parseSize } from "./size.ts";

export const MODEL_VALUES = ["model", "backend", "kernels", "sink", "recent", "kv-dtype", "prefill", "prefill-chunk", "max-context", "threads", "model-threads", "memory"] as const;
export const MODEL_FLAGS = ["no-mmap"] as const;

export const MODEL_USAGE = `  --model DIR          Hugging Face model directory (config.json, model.safetensors[.index.json], tokenizer.json),
                       or a llama.cpp .gguf file, or a directory holding one
  --backend b          attention backend: ${BACKEND_CHOICES.join(" | ")} (default auto)
  --kernels k          model math: auto | ${KERNELS.join(" | ")} (default auto: the attention backend's own —
                       reference, native, cuda, or on wasm wasm-parallel for models of 128 MiB and more where
                       workers share memory, else wasm)
  --sink S, --recent R streaming heads keep S sink + R recent tokens (default: the pattern's config.json
                       sink_size and recent_size, else 64, 256)
  --kv-dtype d         KV cache storage: ${KV_DTYPES.join(" | ")} (default bf16)
  --prefill m          streaming-head prefill: ${PREFILL_MODES.join(" | ")} (default upstream)
  --prefill-chunk C    prompt tokens per forward pass (default 512)
  --max-context N      most tokens of the sequence (default 1 Mi, or the model's sliding window)
  --threads n          wasm attention backend worker count
  --model-threads n    kernels wasm-parallel: workers that each hold 1/n of the weights (default: one per core;
                       0 with auto: the model math stays in this thread)
  --memory size        kernels native: RAM the weights and KV may take, e.g. 20GiB (default: MemAvailable); a model
                       that does not fit is refused before anything is read
  --no-mmap            kernels native: copy every weight instead of mapping the checkpoint files read-only and using
                       their tensors in place
`;

/** The model directory and the load options (without the head choice, which each command decides). */
export function modelOptions(args: Args): { dir: string; options: LoadOptions } {
  const dir = args.values.get("model");
  if (!dir) throw new DuoError("INVALID_ARGUMENT", "--model DIR is required (a Hugging Face model directory or a .gguf file)");
  const options: LoadOptions = {};
  const backend = args.values.get("backend");
  if (backend !== undefined) options.backend = checkOneOf("--backend", backend, BACKEND_CHOICES) as BackendChoice;
  const kernels = args.values.get("kernels");
  if (kernels !== undefined) options.kernels = checkOneOf("--kernels", kernels, ["auto", ...KERNELS] as const);
  const kv = args.values.get("kv-dtype");
  if (kv !== undefined) options.kvDtype = checkOneOf("--kv-dtype", kv, KV_DTYPES);
  const prefill = args.values.get("prefill");
  if (prefill !== undefined) options.prefill = checkOneOf("--prefill", prefill, PREFILL_MODES);
  options.sinkSize = numberArg(args, "sink", { min: 0, integer: true });
  options.recentSize = numberArg(args, "recent", { min: 0, integer: true });
  options.prefillChunk = numberArg(args, "prefill-chunk", { min: 1, integer: true });
  options.maxContext = numberArg(args, "max-context", { min: 1, integer: true });
  options.threads = numberArg(args, "threads", { min: 0, integer: true });
  options.modelThreads = numberArg(args, "model-threads", { min: 0, integer: true });
  const memory = args.values.get("memory");
  if (memory !== undefined) options.memory = parseSize("--memory", memory);
  if (args.flags.has("no-mmap")) options.mmap = false;
  for (const k of Object.keys(options) as (keyof LoadOptions)[]) if (options[k] === undefined) delete options[k];
  // A bar on stderr as the weights load (a line per quarter when stderr is not a terminal), for models of 256 MiB+.
  let bar: Progress | undefined;
  options.onProgress = (loaded, total) => {
    if (total < 256 * 2 ** 20) return;
    bar ??= new Progress("loading weights", total);
    if (loaded < total) bar.update(loaded, formatBytes(loaded));
    else bar.done(formatBytes(total));
  };
  return { dir, options };
}
