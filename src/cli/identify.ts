/**
 * `duo identify --model DIR --out DIR`: find a model's retrieval heads (src/identify/) and write an upstream-format
 * pattern directory plus identify.json. Progress on stderr; Ctrl-C stops after the current step and keeps the
 * gates of the last finished step; --resume continues from identify-state.json.
 */
import { checkOneOf, DuoError } from "../errors.ts";
import { PasskeyDataset } from "../identify/dataset.ts";
import { generatedHaystack } from "../identify/haystack.ts";
import { identifyHeads, type IdentifyOptions, type IdentifyState, METHODS, passkeySource } from "../identify/identify.ts";
import { loadGateModel } from "../identify/model.ts";
import { GATE_DTYPES, UPSTREAM_LR } from "../identify/optimizer.ts";
import { UPSTREAM_REG } from "../identify/objective.ts";
import { readState, writeIdentifyOutput, writeState } from "../identify/output.ts";
import { Random } from "../identify/random.ts";
import { loadConfig } from "../model/config.ts";
import { expectedTensors } from "../model/weights.ts";
import { createBackend, probeBackend } from "../backend/registry.ts";
import type { Backend } from "../backend/types.ts";
import { createModelKernels, KERNELS, type ModelKernels } from "../model/kernels.ts";
import { runtime } from "../runtime.ts";
import { availableMemory } from "../model/ram.ts";
import { TextTokenizer } from "../model/tokenizer.ts";
import { type FastModel, loadFastModel } from "../identify/fast-model.ts";
import { identifyHeadsFast } from "../identify/identify.ts";
import { loadOptimizeModel, type OptimizeModel } from "../identify/fast-optimize.ts";
import type { GateModel } from "../identify/model.ts";
import { exists, makeDir, readText } from "../runtime.ts";
import { type Args, numberArg, parseArgs } from "./args.ts";
import { write } from "./io.ts";

/** the fast kernel sets score runs on (kernels.ts); "reference" here names the float64 path instead */
const FAST_KERNELS = KERNELS.filter((k) => k !== "reference");

const DEFAULTS = { steps: 200, samples: 16, ctxMin: 1000, ctxMax: 4000, lengths: 10, passkeys: 10, passkeyWords: 32, depths: 1000, sink: 128, recent: 256, block: 128, seed: 42, maxMemoryGiB: 4 };

const USAGE = `usage: duo identify --model DIR --out DIR [options]
  Find the retrieval heads of a Llama-family model (Llama, Mistral, Qwen2): by DuoAttention's gate optimisation
  (upstream's duo_attn/train.py) or by a forward-only score. Writes DIR/full_attention_heads.tsv + config.json (upstream's format:
  duo pattern, loadPattern, upstream and kvpress read it) and DIR/identify.json. Both methods run on the fast kernels
  by default (native where its library loads, else wasm); --kernels reference computes in float64 TypeScript (the
  reference: exact, slow on real models).
  CPU-scaled defaults are marked "upstream: ...".
  --model DIR          Hugging Face model directory (config.json, model.safetensors[.index.json], tokenizer.json)
  --out DIR            output pattern directory
  --method m           ${METHODS.join(" | ")} (default optimize). optimize: the upstream objective (distillation
                       + ${UPSTREAM_REG}·mean|gate|, AdamW lr ${UPSTREAM_LR}, LambdaLR, bf16 gates), student on the loss's
                       cone of rows. score: value-aware deviation ‖W_o(A_full − A_str)‖ on the answer rows,
                       forward only, gates = rank/(N−1) (select with --sparsity, not a threshold)
  --steps N            optimize steps (default ${DEFAULTS.steps}; upstream 2000; the schedule scales with N)
  --samples N          score samples (default ${DEFAULTS.samples})
  --kernels k          score: auto | reference | ${FAST_KERNELS.join(" | ")} (default auto: native where its library
                       loads, else wasm / wasm-parallel — the fast model kernels, weights in the model's dtype, f32
                       activations; native: native kernels and the native attention backend; the wasm sets: attention
                       on the wasm backend, tiled;
                       reference: the float64 TypeScript path, its twin; 25x slower on a small model). optimize:
                       auto | reference (the float64 path) | native | wasm (f32: the model kernels, the attention
                       backend for the teacher, the backward kernels of wasm/model/backward.c; weights in the model's
                       dtype, f32 / f16 / bf16; default auto: native where its library loads, else wasm, else — or
                       for a head dim that is not a multiple of 4 up to 256 — the float64 path)
  --threads n          score, fast kernels: workers of the model kernels and of the attention backend (default:
                       one per core; 0: everything in this thread)
  data: upstream's multi-passkey retrieval samples (duo_attn/data.py)
  --haystack FILE      text the needles are hidden in (default: a built-in generated haystack; the output says so)
  --ctx-min N, --ctx-max N   haystack tokens per sample (default ${DEFAULTS.ctxMin}, ${DEFAULTS.ctxMax}; upstream 1000, 32000)
  --lengths N          context lengths between them, the items of an epoch (default ${DEFAULTS.lengths}; upstream 50)
  --passkeys N         needles per sample, at most 20 (default 10)
  --passkey-words N    NATO words per passkey (default 32)
  --pad-upstream       add upstream's 1–16 padding tokens before the questions. Off by default: upstream pads
                       only so a sample splits over 8 sequence-parallel GPUs, and a precedence bug makes it always
                       pad (16 tokens when none were needed); on one device it just inserts haystack tokens
  --seed N             data seed (default ${DEFAULTS.seed})
  streaming window while identifying (upstream trains with 128 / 256 / 128-token blocks; deploy may differ)
  --sink S, --recent R, --block B    (default ${DEFAULTS.sink}, ${DEFAULTS.recent}, ${DEFAULTS.block}; --block 0 = token granular)
  --lr x, --reg x      learning rate, L1 weight (default ${UPSTREAM_LR}, ${UPSTREAM_REG})
  --gate-dtype d       ${GATE_DTYPES.join(" | ")} (default bf16, as upstream; f32 is cleaner)
  --max-memory GiB     refuse runs whose weights and activations would need more (default: ${DEFAULTS.maxMemoryGiB} for the
                       float64 path, the RAM available now for the fast kernels)
  --resume             continue from --out's identify-state.json (same arguments)
`;

const VALUES = ["model", "out", "method", "kernels", "threads", "steps", "samples", "haystack", "ctx-min", "ctx-max", "lengths", "passkeys", "passkey-words", "seed", "sink", "recent", "block", "lr", "reg", "gate-dtype", "max-memory"];

function int(args: Args, name: string, fallback: number, min = 1, max?: number): number {
  return numberArg(args, name, { min, max, integer: true }) ?? fallback;
}

function duration(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(Math.round(s % 60)).padStart(2, "0")}s` : `${s.toFixed(1)}s`;
}

async function sha256(ids: readonly number[]): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", Int32Array.from(ids).buffer as ArrayBuffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Ctrl-C sets a flag (the run stops after the current step and saves); a second one exits at once. */
function onInterrupt(fn: () => void): () => void {
  // deno-lint-ignore no-explicit-any
  const g = globalThis as any;
  let count = 0;
  const handler = () => (++count > 1 ? g.Deno ? g.Deno.exit(130) : g.process.exit(130) : fn());
  if (g.Deno) {
    g.Deno.addSignalListener("SIGINT", handler);
    return () => g.Deno.removeSignalListener("SIGINT", handler);
  }
  g.process.on("SIGINT", handler);
  return () => g.process.off("SIGINT", handler);
}

export async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: VALUES, flags: ["help", "resume", "pad-upstream"] });
  if (args.flags.has("help")) {
    write(USAGE);
    return 0;
  }
  const dir = args.values.get("model"), out = args.values.get("out");
  if (!dir) throw new DuoError("INVALID_ARGUMENT", "--model DIR is required (a Hugging Face model directory)");
  if (!out) throw new DuoError("INVALID_ARGUMENT", "--out DIR is required (where the pattern directory is written)");
  const method = checkOneOf("--method", args.values.get("method") ?? "optimize", METHODS);
  const gateDtype = checkOneOf("--gate-dtype", args.values.get("gate-dtype") ?? "bf16", GATE_DTYPES);
  const steps = int(args, "steps", DEFAULTS.steps), samples = int(args, "samples", DEFAULTS.samples);
  const ctxMin = int(args, "ctx-min", DEFAULTS.ctxMin), ctxMax = int(args, "ctx-max", Math.max(DEFAULTS.ctxMax, ctxMin));
  if (ctxMax < ctxMin) throw new DuoError("INVALID_ARGUMENT", `--ctx-max (${ctxMax}) must be >= --ctx-min (${ctxMin})`);
  const data = {
    ctxMin, ctxMax, lengths: int(args, "lengths", DEFAULTS.lengths), passkeys: int(args, "passkeys", DEFAULTS.passkeys, 1, 20),
    passkeyWords: int(args, "passkey-words", DEFAULTS.passkeyWords), pad: args.flags.has("pad-upstream"),
  };
  const seed = int(args, "seed", DEFAULTS.seed, 0, 0xffffffff);
  const window = { sink: int(args, "sink", DEFAULTS.sink, 0), recent: int(args, "recent", DEFAULTS.recent), blockSize: int(args, "block", DEFAULTS.block, 0) };
  const lr = numberArg(args, "lr", { min: 0 }) ?? UPSTREAM_LR, reg = numberArg(args, "reg", { min: 0 }) ?? UPSTREAM_REG;
  const maxMemoryArg = numberArg(args, "max-memory", { min: 0 });
  const resume = args.flags.has("resume");
  const kernelsArg = checkOneOf("--kernels", args.values.get("kernels") ?? "auto", ["auto", "reference", ...FAST_KERNELS] as const);
  if (method === "optimize" && kernelsArg === "wasm-parallel") {
    throw new DuoError("INVALID_ARGUMENT", `--method optimize runs on --kernels native, wasm or reference (the backward kernels have no worker set); got --kernels ${kernelsArg}`);
  }
  const threads = numberArg(args, "threads", { min: 0, integer: true });
  if (resume && method !== "optimize") throw new DuoError("INVALID_ARGUMENT", "--resume applies to --method optimize (score runs have no optimiser state)");

  if (!(await exists(dir))) throw new DuoError("IO", `--model ${dir} does not exist; give a Hugging Face model directory (config.json, model.safetensors, tokenizer.json)`);
  const t0 = performance.now();
  const c = await loadConfig(dir); // a non-Llama architecture fails here, naming the supported ones
  // optimize, auto: the fast kernels (native where its library loads, else wasm) where they run this model's heads,
  // else the float64 path
  const nativeUsable = kernelsArg === "auto" && (await probeBackend("native", { threads })).usable;
  const fastHeads = c.headDim % 4 === 0 && c.headDim <= 256 && runtime().wasmSimd;
  const fast = method === "score" ? kernelsArg !== "reference"
    : kernelsArg === "native" || kernelsArg === "wasm" || (kernelsArg === "auto" && fastHeads);
  if (ctxMax > c.maxPositionEmbeddings) {
    throw new DuoError("CAPACITY", `--ctx-max ${ctxMax} is over the model's max_position_embeddings (${c.maxPositionEmbeddings}); lower --ctx-max`);
  }
  // float64: every weight, plus per token the teacher's working set and the student's activations on up to every
  // row of every layer
  let params = 0;
  for (const [name, shape] of expectedTensors(c)) if (name !== "lm_head.weight") params += shape.reduce((a, b) => a * b, 1);
  const perToken = 2 * c.hiddenSize + 2 * (c.numHeads + c.numKvHeads) * c.headDim + 2 * c.intermediateSize +
    c.numLayers * (3 * c.hiddenSize + (3 * c.numHeads + 2 * c.numKvHeads) * c.headDim + 2 * c.intermediateSize + c.numHeads);
  // the float64 path: 8 bytes a weight and an activation; the fast kernels: about 2 (bf16 / f16 files) and 4 (f32),
  // and the fast score keeps one layer's activations at a time (the workspace, its host mirrors, one layer's K/V)
  // default: 4 GiB for the float64 path (a guard against runs that would swap), the RAM available now for the fast one
  const maxMemory = maxMemoryArg !== undefined ? maxMemoryArg * 2 ** 30 : fast ? (await availableMemory()).bytes : DEFAULTS.maxMemoryGiB * 2 ** 30;
  const [wb, ab, how] = fast ? [2, 4, "f32 activations, weights in the file's dtype"] : [8, 8, "float64 weights and activations"];
  const perPass = 2 * (3 * c.hiddenSize + 2 * (c.numHeads + c.numKvHeads) * c.headDim + 2 * c.intermediateSize);
  const bytes = wb * params + ab * (fast && method === "score" ? perPass : perToken) * (ctxMax + 64 * data.passkeys * 2);
  if (wb * params > maxMemory) {
    throw new DuoError("CAPACITY", `the model's weights alone take ${(wb * params / 2 ** 30).toFixed(1)} GiB ${fast ? "in the fast kernels" : "in float64"}, over --max-memory ${(maxMemory / 2 ** 30).toFixed(1)} GiB; raise --max-memory if this machine has the memory`);
  }
  if (bytes > maxMemory) {
    throw new DuoError("CAPACITY", `a ${ctxMax}-token context needs about ${(bytes / 2 ** 30).toFixed(1)} GiB (${how}), over --max-memory ${(maxMemory / 2 ** 30).toFixed(1)} GiB; lower --ctx-max (or raise --max-memory)`);
  }
  let model: GateModel | undefined, fastModel: FastModel | undefined, optimizeModel: OptimizeModel | undefined, kernels: ModelKernels | undefined, backend: Backend | undefined, tokenizer: TextTokenizer;
  if (fast) {
    // auto: native where its library loads (the fastest here: a 0.5B model's score sample took 81-84 s of CPU on
    // native against ~107 s on wasm-parallel), else the model runner's own rule; weightBytes: that rule picks workers
    // by model size, and 2 bytes a weight (bf16/f16) is the common case, close enough
    const choice = nativeUsable ? "native" : kernelsArg === "auto" && method === "optimize" ? "wasm" : kernelsArg;
    kernels = await createModelKernels(choice as typeof FAST_KERNELS[number] | "auto", { modelThreads: threads, threads, weightBytes: 2 * params });
    try {
      // attention on the backend of the kernels' kind (native with native; reference with reference; else wasm)
      backend = await createBackend(kernels.name === "reference" || kernels.name === "native" ? kernels.name : "wasm", { threads });
      if (method === "optimize") optimizeModel = await loadOptimizeModel(dir, kernels);
      else fastModel = await loadFastModel(dir, kernels);
      tokenizer = await TextTokenizer.load(dir);
    } catch (e) {
      kernels.dispose();
      await backend?.dispose();
      throw e;
    }
  } else ({ model, tokenizer } = await loadGateModel(dir));
  try {
    return await identifyInto(out);
  } finally {
    kernels?.dispose();
    await backend?.dispose();
  }

  // the run itself, between loading (above) and freeing the fast kernels and backend (the finally above)
  async function identifyInto(out: string): Promise<number> {
    const haystackFile = args.values.get("haystack");
    let text: string;
    if (haystackFile !== undefined) {
      try {
        text = await readText(haystackFile);
      } catch (e) {
        throw new DuoError("IO", `cannot read --haystack ${haystackFile}: ${(e as Error).message}`, { cause: e });
      }
    } else text = generatedHaystack(tokenizer, ctxMax, seed);
    const haystackName = haystackFile ?? "built-in generated haystack (seeded pseudo-prose; give --haystack FILE for real text)";
    const dataset = new PasskeyDataset(tokenizer, text, data, new Random(seed));
    const source = passkeySource(dataset, seed);
    const runArgs = { method, model: dir, steps, samples, haystack: haystackFile ?? "generated", context_length_min: ctxMin, context_length_max: ctxMax, context_lengths_num_intervals: data.lengths, num_passkeys: data.passkeys, passkey_length: data.passkeyWords, pad_upstream: data.pad, seed, block_size: window.blockSize, lr, reg_weight: reg, gate_dtype: gateDtype, initial_value: 1.0, supervision: "distill" };
    const fingerprint = JSON.stringify({ c: [c.architecture, c.numLayers, c.numKvHeads, c.hiddenSize], ...runArgs, window });
    await makeDir(out);
    let state: IdentifyState | undefined;
    if (resume) state = await readState(out, fingerprint);
    const hash = await sha256(dataset.haystack);
    const report = {
      model: { dir, architecture: c.architecture, layers: c.numLayers, heads: c.numHeads, kvHeads: c.numKvHeads },
      engine: fast ? `model kernels ${kernels!.name}, attention backend ${backend!.name} (${backend!.shards} shard${backend!.shards === 1 ? "" : "s"}), f32` : "reference (float64 TypeScript)",
      data: { haystack: haystackName, haystackTokens: dataset.haystack.length, haystackSha256: hash, ...data, seed },
      arguments: runArgs,
    };
    write(`duo identify: ${method} on ${dir} (${c.numLayers} layers x ${c.numKvHeads} KV heads) on ${report.engine}; haystack: ${haystackName}${state ? `; resuming at step ${state.step}` : ""}\n`, "stderr");

    let stop = false;
    const off = onInterrupt(() => {
      stop = true;
      write("\nduo identify: stopping after this step (Ctrl-C again to quit at once)\n", "stderr");
    });
    try {
      const options: IdentifyOptions = {
        method, data: source, steps, samples, window, lr, reg, gateDtype, resume: state, shouldStop: () => stop,
        onStep: (s) => {
          const what = method === "optimize"
            ? `step ${s.step}/${s.steps}  loss ${s.loss.toExponential(3)}  gates [${s.gateMin.toFixed(3)}, ${s.gateMax.toFixed(3)}]`
            : `sample ${s.step}/${s.steps}`;
          const cost = method === "optimize" ? `  step/forward ${(s.seconds / s.teacherSeconds).toFixed(2)}` : "";
          write(`  ${what}  ${s.tokens} tokens  ${s.tokensPerSecond.toFixed(0)} tok/s${cost}  ETA ${duration(s.etaSeconds)}\n`, "stderr");
        },
        onCheckpoint: async (st) => {
          await writeState(out, st, fingerprint);
          await writeIdentifyOutput(out, { method, numLayers: c.numLayers, numKvHeads: c.numKvHeads, gates: Float64Array.from(st.gates), window, steps: st.step, stopped: st.step < steps, losses: st.losses, timings: { seconds: (performance.now() - t0) / 1000, teacherSeconds: NaN, tokens: NaN } }, runArgs, report);
        },
      };
      const run = fast ? await identifyHeadsFast(optimizeModel ?? fastModel!, backend!, options) : await identifyHeads(model!, options);
      await writeIdentifyOutput(out, run, runArgs, { ...report, seconds: (performance.now() - t0) / 1000 });
      const order = Array.from(run.gates.keys()).sort((a, b) => run.gates[b]! - run.gates[a]!).slice(0, Math.min(8, run.gates.length));
      const top = order.map((i) => `L${Math.floor(i / c.numKvHeads)}h${i % c.numKvHeads}`).join(" ");
      write(`${run.stopped ? "stopped" : "done"}: ${run.steps} ${method === "optimize" ? "steps" : "samples"} in ${duration(run.timings.seconds)}; wrote ${out}/full_attention_heads.tsv, config.json, identify.json\n` +
        `haystack: ${haystackName}\ntop heads: ${top}\n`);
      return run.stopped ? 130 : 0;
    } finally {
      off();
    }
  }
}
