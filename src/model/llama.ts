/**
 * LlamaModel: a Llama-family causal LM (Llama 2/3/3.1, Mistral, Qwen2) whose attention runs through the
 * DuoAttention engine, everything else through the model kernels (kernels.ts).
 *
 *   const model = await LlamaModel.load(dir, { pattern: "patterns/Llama-3-8B-...", sparsity: 0.5 });
 *   const logits = await model.forward(ids);            // [vocab] of the last position; continues the sequence
 *   for await (const t of model.generate("Hello", { maxTokens: 32 })) write(t.text);
 *   const chat = model.session();                       // another sequence (own KV cache) of the same weights
 *
 * `dir` is a Hugging Face model directory (safetensors) or a llama.cpp GGUF file (or a directory holding one).
 * Per layer, for a chunk of T tokens at absolute positions p0 .. p0+T−1:
 *   h = rmsnorm(x) · q/k/v = h·Wᵀ (+b) · RoPE(q, k) · a = attend(q, k, v) · x += a·Woᵀ
 *   h = rmsnorm(x) · x += down(silu(gate(h)) · up(h))
 * then logits = lm_head(rmsnorm(x[T−1])). Prompts are prefilled in chunks of `prefillChunk` tokens.
 * Heads are permuted at load so that each layer's retrieval heads come first (weights.ts); the engine is given the
 * permuted mask, so nothing is permuted back.
 */
import type { BackendChoice } from "../backend/registry.ts";
import type { Backend } from "../backend/types.ts";
import type { PrefillMode } from "../cache/layer-shard.ts";
import type { KvDtype } from "../dtype.ts";
import { DuoAttention } from "../engine/duo.ts";
import { DEFAULT_RECENT, DEFAULT_SINK } from "../engine/options.ts";
import type { Sequence } from "../engine/sequence.ts";
import { checkInt, DuoError } from "../errors.ts";
import type { HeadPattern } from "../pattern/pattern.ts";
import { kvBytes } from "../schedule/kv.ts";
import { HeadSchedule } from "../schedule/schedule.ts";
import { type ModelConfig, loadConfig } from "./config.ts";
import type { Generation, GenerateOptions } from "./generate.ts";
import { findGguf, openGguf } from "./gguf.ts";
import { createModelKernels, type KernelsName, type ModelKernels, type ModelKernelsOptions } from "./kernels.ts";
import { decoderLayer, logitsOf, logitsOn } from "./layer.ts";
import { inverseFrequencies, ropeTables } from "./rope.ts";
import { availableMemory, checkFits } from "./ram.ts";
import { openWeights, type TensorEntry } from "./safetensors.ts";
import { Session } from "./session.ts";
import { TextTokenizer } from "./tokenizer.ts";
import { checkTensors, expectedTensors, loadWeights, type ModelWeights } from "./weights.ts";
import { Workspace } from "./workspace.ts";

export interface LoadOptions {
  /** attention backend of the engine (default "auto"); "reference" also runs the model math on the reference kernels */
  backend?: BackendChoice | Backend;
  /** model math: "auto" (default: the attention backend's own, Backend.modelKernels — reference on reference, the
   *  library's on native, duo-model.wasm on wasm (in this thread, or wasm-parallel for models of 128 MiB and more
   *  where workers can share memory), the device's on cuda), a kernel set by name, or a kernel set (the model
   *  disposes it) */
  kernels?: KernelsName | "auto" | ModelKernels;
  /** kernels "wasm-parallel": worker count (default: one per core; 0 with "auto": the model math stays in this
   *  thread, as it does with threads: 0) */
  modelThreads?: number;
  /** a head pattern directory / URL, or a loaded HeadPattern; sparsified with `sparsity` */
  pattern?: string | URL | HeadPattern;
  /** fraction of KV heads that stream (default 0.5; needs `pattern`) */
  sparsity?: number;
  /** explicit mask [layer][kvHead] in the model's head order, true = retrieval (instead of a pattern) */
  heads?: HeadSchedule | readonly (readonly boolean[])[];
  /** sink tokens S of a streaming head (default: the pattern's config.json sink_size, else 64) */
  sinkSize?: number;
  /** recent tokens R of a streaming head (default: the pattern's config.json recent_size, else 256) */
  recentSize?: number;
  kvDtype?: KvDtype;
  prefill?: PrefillMode;
  /** most tokens of one sequence (default: the engine's 1 Mi, or the sliding window where the model has one) */
  maxContext?: number;
  /** prompt tokens per forward pass (default 512) */
  prefillChunk?: number;
  /** wasm attention backend: worker count; native: threads of the attention and the model math */
  threads?: number;
  /** native: path of libduo.so (default: $DUO_NATIVE_LIB, then native/dist/<os>-<arch>/) */
  nativeLibrary?: string;
  /** backend "auto": refuse rather than fall back to the reference backend (BackendOptions.strict) */
  strict?: boolean;
  /** a precompiled duo-model.wasm (edge runtimes, bundlers) */
  modelWasm?: WebAssembly.Module;
  /** kernels "native": bytes of RAM the weights and the KV cache share (default: the RAM available now, /proc/meminfo
   *  MemAvailable); a model whose weights + KV budget (at maxContext, else one prefill chunk) exceed it is refused
   *  before anything is read */
  memory?: number;
  /** kernels "native": map the checkpoint files read-only and use their tensors (every type: the native kernels read
   *  each as stored) in place, their pages the file's page cache, instead of copying them (default true; rows
   *  reordered at load are copied). false, like llama.cpp's --no-mmap, copies every tensor:
   *  for files that may be truncated or rewritten while the model is loaded (a mapped file truncated later crashes
   *  the process with SIGBUS, native/src/map.c). */
  mmap?: boolean;
  /** called as the weights load: bytes loaded so far and in all (the CLI draws a progress bar on stderr) */
  onProgress?: (loaded: number, total: number) => void;
}

const LOAD_KEYS = ["backend", "kernels", "pattern", "sparsity", "heads", "sinkSize", "recentSize", "kvDtype", "prefill", "maxContext", "prefillChunk", "threads", "nativeLibrary", "strict", "modelWasm", "modelThreads", "memory", "mmap", "onProgress"];

/** The head schedule in the model's order, and the pattern it came from (whose config.json gives the window). */
async function scheduleFor(o: LoadOptions, cfg: ModelConfig): Promise<{ schedule: HeadSchedule; pattern?: HeadPattern }> {
  if (o.pattern !== undefined && o.heads !== undefined) throw new DuoError("INVALID_ARGUMENT", "pass either pattern (+ sparsity) or heads, not both");
  if (o.sparsity !== undefined && o.pattern === undefined) throw new DuoError("INVALID_ARGUMENT", "sparsity needs a pattern (a head-pattern directory, URL or HeadPattern)");
  if (o.pattern !== undefined) {
    const { loadPattern } = await import("../pattern/io.ts");
    const { sparsify } = await import("../pattern/sparsify.ts");
    const pattern = typeof o.pattern === "string" || o.pattern instanceof URL ? await loadPattern(o.pattern) : o.pattern;
    if (pattern.numLayers !== cfg.numLayers || pattern.numKvHeads !== cfg.numKvHeads) {
      throw new DuoError("SHAPE_MISMATCH", `the head pattern${pattern.source ? ` ${pattern.source}` : ""} is ${pattern.numLayers} layers x ${pattern.numKvHeads} KV heads, but the model has ${cfg.numLayers} layers x ${cfg.numKvHeads} KV heads`);
    }
    return { schedule: sparsify(pattern, { sparsity: o.sparsity ?? 0.5 }), pattern };
  }
  const s = o.heads === undefined ? HeadSchedule.full(cfg.numLayers, cfg.numKvHeads)
    : o.heads instanceof HeadSchedule ? o.heads : HeadSchedule.fromMask(o.heads);
  s.checkShape(cfg.numLayers, cfg.numKvHeads, "the head mask");
  return { schedule: s };
}

export class LlamaModel {
  private readonly sessions = new Set<Session>();
  private readonly main: Session;
  private disposed = false;
  /** the activations of one pass (prefillChunk rows), made at the first pass; passes take turns on it */
  private workspace: Workspace | undefined;
  private turn: Promise<void> = Promise.resolve();

  private constructor(
    readonly config: ModelConfig,
    readonly tokenizer: TextTokenizer,
    /** the head schedule in the model's original head order */
    readonly schedule: HeadSchedule,
    readonly engine: DuoAttention,
    readonly kernels: ModelKernels,
    private readonly weights: ModelWeights,
    readonly prefillChunk: number,
    /** [D/2] RoPE inverse frequencies */
    private readonly invFreq: Float64Array,
  ) {
    this.main = this.session();
  }

  /** Load a Hugging Face model directory (config.json, model.safetensors[.index.json], tokenizer.json), or a GGUF
   *  file (llama / qwen2 architecture; F32, F16, BF16, Q8_0 tensors), or a directory holding one GGUF file. */
  static async load(dir: string, options: LoadOptions = {}): Promise<LlamaModel> {
    if (options === null || typeof options !== "object") throw new DuoError("INVALID_ARGUMENT", "LlamaModel.load options must be an object");
    const unknown = Object.keys(options).find((k) => !LOAD_KEYS.includes(k));
    if (unknown) throw new DuoError("INVALID_ARGUMENT", `unknown LlamaModel.load option "${unknown}"; valid options: ${LOAD_KEYS.join(", ")}`);
    if (options.mmap !== undefined && typeof options.mmap !== "boolean") throw new DuoError("INVALID_ARGUMENT", `LlamaModel.load option mmap must be true or false, got ${JSON.stringify(options.mmap)}`);
    dir = dir.replace(/[/\\]+$/, "");
    const source = await openSource(dir);
    const cfg = source.config;
    const prefillChunk = checkInt("prefillChunk", options.prefillChunk ?? 512, 1);
    const maxContext = options.maxContext ?? cfg.slidingWindow ?? undefined;
    if (cfg.slidingWindow !== null && maxContext !== undefined && maxContext > cfg.slidingWindow) {
      throw new DuoError("UNSUPPORTED", `this model attends through a sliding window of ${cfg.slidingWindow} tokens, which the engine does not implement; pass maxContext <= ${cfg.slidingWindow} (the two agree up to there)`);
    }
    const { tokenizer, tensors } = source;
    const weightBytes = checkTensors(tensors, cfg);
    const { schedule, pattern } = await scheduleFor(options, cfg);
    let engine: DuoAttention | undefined;
    let kernels: ModelKernels | undefined;
    try {
      // Retrieval heads first in every layer, as the weights will be permuted.
      const permuted = schedule.retrieval.map((r) => Array.from({ length: cfg.numKvHeads }, (_, j) => j < r.length));
      engine = await DuoAttention.create({
        shape: { numLayers: cfg.numLayers, numHeads: cfg.numHeads, numKvHeads: cfg.numKvHeads, headDim: cfg.headDim },
        heads: permuted,
        sinkSize: options.sinkSize ?? pattern?.sinkSize,
        recentSize: options.recentSize ?? pattern?.recentSize,
        kvDtype: options.kvDtype,
        backend: options.backend,
        prefill: options.prefill,
        maxContext,
        threads: options.threads,
        strict: options.strict,
      });
      // The model math runs where attention does (Backend.modelKernels), unless a kernel set is named or given.
      const choice = options.kernels ?? "auto";
      const backend = engine.backend;
      const native = typeof choice === "object" ? choice.name === "native" : choice === "native" || (choice === "auto" && backend.name === "native");
      const memoryBudget = native ? await checkRam(dir, tensors, weightBytes, cfg, schedule, options, pattern, prefillChunk, maxContext) : undefined;
      const opts: ModelKernelsOptions = {
        wasmModule: options.modelWasm, weightBytes, modelThreads: options.modelThreads ?? (choice === "auto" && options.threads === 0 ? 0 : undefined),
        nativeLibrary: options.nativeLibrary, threads: options.threads, memoryBudget,
      };
      kernels = typeof choice === "object" ? choice
        : choice !== "auto" ? await createModelKernels(choice, opts)
        : backend.modelKernels ? await backend.modelKernels(opts)
        : await createModelKernels("auto", opts);
      // + 64-byte alignment for each of the at most 4 + 16 per layer tensors
      kernels.reserve(weightBytes + 64 * (4 + 16 * cfg.numLayers), scratchBytes(cfg, prefillChunk));
      let loaded = 0;
      const total = [...expectedTensors(cfg).keys()].reduce((a, name) => a + tensors.get(name)!.byteLength, 0);
      const progress = options.onProgress && ((bytes: number) => options.onProgress!((loaded += bytes), total));
      const weights = await loadWeights(tensors, cfg, kernels, schedule, progress, options.mmap ?? true);
      const invFreq = inverseFrequencies(cfg.headDim, cfg.ropeTheta, cfg.ropeScaling);
      source.ropeFreqFactors?.forEach((f, i) => (invFreq[i]! /= f));
      return new LlamaModel(cfg, tokenizer, schedule, engine, kernels, weights, prefillChunk, invFreq);
    } catch (e) {
      kernels?.dispose();
      await engine?.dispose();
      throw e;
    }
  }

  /** A new sequence of this model, with its own KV cache (freed by session.dispose() or model.dispose()). */
  session(): Session {
    this.checkAlive();
    const s = new Session(this, this.engine.sequence(), (x) => this.sessions.delete(x));
    this.sessions.add(s);
    return s;
  }

  /** Memory in one budget: weights held by the kernels, the KV cache of every live session (the default one and
   *  those of session(); allocated bytes), and the budget they share (kernels.memory().capacity: the RAM budget on
   *  native, Infinity where unbounded). The load's RAM check reserved KV for one sequence only: each further
   *  session's cache comes out of the same budget. */
  memory(): { weights: number; kv: number; budget: number } {
    this.checkAlive();
    const k = this.kernels.memory();
    let kv = 0;
    for (const s of this.sessions) kv += s.kvBytes().allocated;
    return { weights: k.weights, kv, budget: k.capacity };
  }

  /** Tokens in the default session's sequence (prompt and generated). */
  get tokens(): readonly number[] {
    return this.main.tokens;
  }

  /** The default session's KV cache bytes (SPEC §4.4). */
  kvBytes(): ReturnType<Sequence["bytes"]> {
    return this.main.kvBytes();
  }

  /** Session.forward on the default session. */
  async forward(ids: Int32Array | readonly number[]): Promise<Float32Array> {
    return await this.main.forward(ids);
  }

  /** Session.generate on the default session. */
  generate(prompt: string | Int32Array | readonly number[], options: GenerateOptions = {}): Generation {
    return this.main.generate(prompt, options);
  }

  /** Forget the default session's sequence (its cache memory is returned); ready for a new prompt. */
  reset(): void {
    this.main.reset();
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    for (const s of [...this.sessions]) s.dispose();
    this.disposed = true;
    await this.engine.dispose();
    this.workspace = undefined; // its memory goes with the kernel set's
    this.kernels.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  /** @internal */
  checkAlive(): void {
    if (this.disposed) throw new DuoError("DISPOSED", "this model has been disposed; load it again");
  }

  /** @internal `feed` (already checked) at positions pos0.. of `seq`, in chunks of prefillChunk; the logits [vocab]
   *  of the last position. */
  async run(seq: Sequence, feed: Int32Array, pos0: number): Promise<Float32Array> {
    return await this.pass(seq, feed, pos0, (ws, T) =>
      logitsOf(this.kernels, ws, ws.pass(T), T - 1, this.weights.norm, this.weights.lmHead, this.config.rmsNormEps, new Float32Array(this.config.vocabSize)));
  }

  /** @internal `run`, then the greedy next token (the largest logit, the first on ties) by the kernel set's argmax:
   *  one integer crosses back instead of the logits. Only where the set has argmax (`greedyOnKernels`). */
  async runGreedy(seq: Sequence, feed: Int32Array, pos0: number): Promise<number> {
    const argmax = this.kernels.argmax;
    if (!argmax) throw new DuoError("UNSUPPORTED", `the ${this.kernels.name} model kernels have no argmax; take the logits of run()`);
    return await this.pass(seq, feed, pos0, (ws, T) =>
      argmax.call(this.kernels, logitsOn(this.kernels, ws, ws.pass(T), T - 1, this.weights.norm, this.weights.lmHead, this.config.rmsNormEps)));
  }

  /** @internal true when greedy decoding can take the next token from the kernel set (ModelKernels.argmax). */
  get greedyOnKernels(): boolean {
    return this.kernels.argmax !== undefined;
  }

  /** The passes of `feed` through every layer, then `finish` on the workspace and the last chunk's T. */
  private async pass<R>(seq: Sequence, feed: Int32Array, pos0: number, finish: (ws: Workspace, T: number) => R): Promise<R> {
    // One pass at a time: every session shares the workspace (and the kernel set computes one call at a time anyway).
    const before = this.turn;
    let done!: () => void;
    this.turn = new Promise((r) => (done = r));
    await before;
    try {
      this.checkAlive();
      this.workspace ??= new Workspace(this.kernels, this.config, this.prefillChunk);
      let T = 0;
      for (let c = 0; c < feed.length; c += this.prefillChunk) T = await this.chunk(seq, feed.subarray(c, c + this.prefillChunk), pos0 + c);
      return finish(this.workspace, T);
    } finally {
      done();
    }
  }

  /** One chunk of T tokens at positions pos0.. through every layer, leaving its residual in the workspace; returns T. */
  private async chunk(seq: Sequence, ids: Int32Array, pos0: number): Promise<number> {
    const { numHeads: Hq, numKvHeads: Hkv, headDim: D, rmsNormEps: eps } = this.config;
    const k = this.kernels, T = ids.length, ws = this.workspace!, s = ws.pass(T);
    k.embed(s.x, ids, this.weights.embed);
    const { cos, sin } = ropeTables(this.invFreq, pos0, T); // [T, D/2]
    const heads = { Hq, Hkv, D };
    for (let l = 0; l < this.weights.layers.length; l++) {
      await decoderLayer(k, this.weights.layers[l]!, ws, s, T, eps, heads, cos, sin, seq, l);
    }
    return T;
  }
}

/** The model's config, tokenizer and tensors, from a GGUF file or a Hugging Face directory. */
async function openSource(path: string): Promise<{ config: ModelConfig; tokenizer: TextTokenizer; tensors: Map<string, TensorEntry>; ropeFreqFactors: Float32Array | null }> {
  const file = await findGguf(path);
  if (file !== null) {
    const g = await openGguf(file);
    return { ...g, tokenizer: await TextTokenizer.fromJson(g.tokenizer.json, g.tokenizer.config, file) };
  }
  const config = await loadConfig(path);
  return { config, tokenizer: await TextTokenizer.load(path), tensors: await openWeights(path), ropeFreqFactors: null };
}

/**
 * The RAM check of a native load, before anything is read: weights + the KV cache at maxContext (else one prefill
 * chunk) under the schedule must fit in LoadOptions.memory, else in the RAM available now. Returns the budget.
 */
async function checkRam(dir: string, tensors: Map<string, TensorEntry>, weightBytes: number, cfg: ModelConfig, schedule: HeadSchedule,
  o: LoadOptions, pattern: HeadPattern | undefined, prefillChunk: number, maxContext: number | undefined): Promise<number> {
  const { budget, source } = o.memory !== undefined ? { budget: checkInt("memory", o.memory, 1), source: "the memory option" }
    : await availableMemory().then((a) => ({ budget: a.bytes, source: a.source }));
  const kv = kvBytes(schedule, {
    headDim: cfg.headDim, context: maxContext ?? prefillChunk, sinkSize: o.sinkSize ?? pattern?.sinkSize ?? DEFAULT_SINK,
    recentSize: o.recentSize ?? pattern?.recentSize ?? DEFAULT_RECENT, dtype: o.kvDtype ?? "bf16",
  });
  let largest: TensorEntry | undefined;
  for (const t of tensors.values()) if (!largest || t.byteLength > largest.byteLength) largest = t;
  checkFits({ what: dir, weights: weightBytes, kv, largest: largest && { name: largest.name, file: largest.file, bytes: largest.byteLength } }, budget, source);
  return budget;
}

/** Bytes of activations a pass of `chunk` tokens holds (the workspace) plus one call's host inputs (RoPE tables, ids). */
function scratchBytes(cfg: ModelConfig, chunk: number): number {
  return Workspace.bytes(cfg, chunk) + 4 * chunk * (cfg.headDim + 1) + 4 * 64;
}
