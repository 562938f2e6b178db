/**
 * llama.cpp as the bar: the same RANDOM-weight GGUF file (written by src/model/write.ts, Llama-3 shaped) through
 * llama.cpp (node-llama-cpp's CPU prebuilt) and through this library's LlamaModel.
 *
 *   correctness  greedy tokens from the same prompt ids, `--steps` (64) of them, on f32 weights, both KV caches f32;
 *   speed        per thread count and weight dtype: prefill `--prompt` (512) tokens, then decode `--decode` (128),
 *                for llama.cpp, ours with full attention and ours with DuoAttention (half the KV heads of every layer
 *                streaming, sink 64 + recent 256), measured in alternation for `--rounds` rounds; the best of the
 *                rounds is reported (shared machines swing by ±30 %), with ours ÷ llama.cpp.
 *
 * node-llama-cpp is a dependency of this benchmark only (bench/peers/llama-cpp/package.json, exact version, the
 * linux-x64 CPU prebuilt; .npmrc skips the GPU builds and the install scripts):
 *   (cd bench/peers/llama-cpp && npm install)
 *   node --import tsx bench/peers/llama-cpp/bench.ts [--shape llama-3-180m] [--threads 1,2] [--dtypes bf16,f16]
 *        [--prompt 512] [--decode 128] [--steps 64] [--rounds 2] [--out DIR] [--json]
 * Ours loads with backend "auto" (native where its library loads: attention and model math on the native library's
 * threads, else wasm); `threads` is llama.cpp's thread count and ours.
 */
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LlamaModel } from "../../../src/model/llama.ts";
import { Prng } from "../../../src/model/sampler.ts";
import { RANDOM_WEIGHTS_NOTE, type WriteDtype, writeRandomModel } from "../../../src/model/write.ts";
import { enableRelaxedSimd, now } from "../../../src/runtime.ts";

// The parts of node-llama-cpp's API used here (imported by name at run time: it is not a package dependency).
interface LlamaSequence {
  evaluate(tokens: number[], options?: { temperature?: number }): AsyncGenerator<number, void, void>;
  clearHistory(): Promise<void>;
}
interface LlamaContext {
  getSequence(): LlamaSequence;
  dispose(): Promise<void>;
}
interface LlamaModelCpp {
  createContext(o: { contextSize: number; batchSize: number; threads: number; experimentalKvCacheKeyType?: string; experimentalKvCacheValueType?: string }): Promise<LlamaContext>;
  dispose(): Promise<void>;
}
interface NodeLlamaCpp {
  getLlama(o: { gpu: false; build: "never"; logLevel: string; maxThreads?: number }): Promise<{ loadModel(o: { modelPath: string }): Promise<LlamaModelCpp> }>;
}

const argv = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : dflt;
};
const shape = opt("shape", "llama-3-180m");
const threadCounts = opt("threads", "1,2").split(",").map(Number);
const dtypes = opt("dtypes", "bf16,f16").split(",") as WriteDtype[];
const promptLen = Number(opt("prompt", "512")), decodeLen = Number(opt("decode", "128")), steps = Number(opt("steps", "64"));
const rounds = Number(opt("rounds", "2"));
const outDir = opt("out", join(tmpdir(), "duo-llama-cpp-bench"));
const json = argv.includes("--json");
const log = (s: string) => process.stderr.write(s + "\n");

function promptIds(n: number, vocab: number, seed: number): number[] {
  const r = new Prng(seed);
  return [1, ...Array.from({ length: n - 1 }, () => 3 + (r.nextU32() % (vocab - 3)))];
}

/** A random model of `dtype` in outDir/<shape>-<dtype> (written once, reused). */
async function modelFile(dtype: WriteDtype): Promise<string> {
  const dir = join(outDir, `${shape}-${dtype}`), file = join(dir, `model-${dtype}.gguf`);
  if (!existsSync(file)) {
    log(`writing ${file} (random weights)`);
    await writeRandomModel(dir, { shape, dtype, format: "gguf", seed: 1 });
  }
  return file;
}

async function llamaCpp(): Promise<NodeLlamaCpp> {
  try {
    const name = "node-llama-cpp"; // a variable: type-checking must not need the package
    return (await import(name)) as NodeLlamaCpp;
  } catch (e) {
    throw new Error(`node-llama-cpp is not installed: run (cd bench/peers/llama-cpp && npm install) (${(e as Error).message})`);
  }
}

interface Timing {
  prefillMs: number;
  decodeMs: number;
  decodeSteps: number;
  tokens: number[];
}

/** llama.cpp: time to the first generated token is the prefill; the rest is decode. */
async function runCpp(seq: LlamaSequence, prompt: number[], n: number): Promise<Timing> {
  await seq.clearHistory();
  const tokens: number[] = [];
  const t0 = now();
  let t1 = t0;
  for await (const t of seq.evaluate(prompt, { temperature: 0 })) {
    if (tokens.length === 0) t1 = now();
    tokens.push(t);
    if (tokens.length === n) break;
  }
  return { prefillMs: t1 - t0, decodeMs: now() - t1, decodeSteps: n - 1, tokens };
}

async function runOurs(model: LlamaModel, prompt: number[], n: number): Promise<Timing> {
  model.reset();
  const run = model.generate(prompt, { maxTokens: n, greedy: true, ignoreEos: true });
  const tokens: number[] = [];
  for await (const t of run) tokens.push(t.id);
  return { prefillMs: run.stats.prefillMs, decodeMs: run.stats.decodeMs, decodeSteps: run.stats.decodeSteps, tokens };
}

/** Half the KV heads of every layer stream (alternating), the rest keep the full cache. */
const halfStreaming = (layers: number, kv: number) => Array.from({ length: layers }, (_, l) => Array.from({ length: kv }, (_, h) => (h + l) % 2 === 0));

async function main(): Promise<void> {
  await enableRelaxedSimd();
  const { getLlama } = await llamaCpp();
  const llama = await getLlama({ gpu: false, build: "never", logLevel: "error", maxThreads: Math.max(...threadCounts) });
  log(RANDOM_WEIGHTS_NOTE);
  const report: Record<string, unknown> = { shape, note: RANDOM_WEIGHTS_NOTE };

  // Correctness: f32 weights, f32 KV in both.
  {
    const file = await modelFile("f32");
    const ours = await LlamaModel.load(file, { kvDtype: "f32", threads: 1 });
    const cpp = await llama.loadModel({ modelPath: file });
    const ctx = await cpp.createContext({ contextSize: 1024, batchSize: 512, threads: 1, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
    const prompt = promptIds(32, ours.config.vocabSize, 7);
    const a = (await runOurs(ours, prompt, steps)).tokens, b = (await runCpp(ctx.getSequence(), prompt, steps)).tokens;
    const agree = a.findIndex((t, i) => t !== b[i]);
    const same = agree < 0 ? steps : agree;
    report.correctness = { steps, agreeing: same, ours: a, llamaCpp: b };
    log(`greedy tokens, f32 weights, ${steps} steps from the same ${prompt.length} prompt ids: ${same}/${steps} agree${same < steps ? ` (first difference at step ${same}: ours ${a[same]}, llama.cpp ${b[same]})` : ""}`);
    await ctx.dispose();
    await cpp.dispose();
    await ours.dispose();
  }

  // Speed.
  const rows: Record<string, unknown>[] = [];
  for (const dtype of dtypes) {
    const file = await modelFile(dtype);
    const cpp = await llama.loadModel({ modelPath: file });
    for (const threads of threadCounts) {
      const ctx = await cpp.createContext({ contextSize: promptLen + decodeLen + 16, batchSize: 512, threads });
      const seq = ctx.getSequence(); // one per context: cleared before each run
      const full = await LlamaModel.load(file, { threads });
      const duo = await LlamaModel.load(file, { threads, heads: halfStreaming(full.config.numLayers, full.config.numKvHeads) });
      const prompt = promptIds(promptLen, full.config.vocabSize, 11);
      const best: Record<string, Timing> = {};
      const keep = (k: string, t: Timing) => {
        const b = best[k];
        best[k] = b ? { ...b, prefillMs: Math.min(b.prefillMs, t.prefillMs), decodeMs: Math.min(b.decodeMs, t.decodeMs) } : t;
      };
      for (let r = 0; r < rounds; r++) {
        keep("llama.cpp", await runCpp(seq, prompt, decodeLen));
        keep("duo full", await runOurs(full, prompt, decodeLen));
        keep("duo Duo", await runOurs(duo, prompt, decodeLen));
      }
      const base = best["llama.cpp"]!;
      for (const [engine, t] of Object.entries(best)) {
        const prefill = (promptLen * 1000) / t.prefillMs, decode = (t.decodeSteps * 1000) / t.decodeMs;
        const row = {
          dtype, threads, engine, prefillTokS: prefill, decodeTokS: decode,
          prefillRatio: prefill / ((promptLen * 1000) / base.prefillMs), decodeRatio: decode / ((base.decodeSteps * 1000) / base.decodeMs),
        };
        rows.push(row);
        log(`${dtype} threads=${threads} ${engine.padEnd(9)} prefill ${prefill.toFixed(1).padStart(7)} tok/s (${row.prefillRatio.toFixed(2)}x)  decode ${decode.toFixed(1).padStart(7)} tok/s (${row.decodeRatio.toFixed(2)}x)`);
      }
      await full.dispose();
      await duo.dispose();
      await ctx.dispose();
    }
    await cpp.dispose();
  }
  report.speed = { promptLen, decodeLen, rounds, rows };
  if (json) process.stdout.write(JSON.stringify(report, null, 2) + "\n");
}

await main();
