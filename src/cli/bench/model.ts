/**
 * `duo bench model`: decode of a whole Llama-shaped model (random weights, made in memory on the native kernels)
 * with full attention and with DuoAttention at growing contexts, in one memory budget shared by weights and KV.
 * Per context: decode ms/token (best of --steps) and memory (weights + the KV the backend allocated) of each,
 * until a mode's KV no longer fits beside the weights; then the context each reaches in the budget. A decode step
 * is memory-bound, so Duo's time should follow (weight bytes read + Duo KV) / (weight bytes read + full KV), and each
 * step's bytes (weights read + KV) ÷ its time is compared with the streaming-read bandwidth measured in the same run
 * by the backend's own ceiling kernels (ceilings.ts).
 * Options: model-options.ts. One mode at a time holds KV (full first, then Duo), grown context by context.
 */
import { createBackend } from "../../backend/registry.ts";
import type { Backend } from "../../backend/types.ts";
import { SyntheticInputs } from "../../demo/stack.ts";
import { DuoAttention } from "../../engine/duo.ts";
import { DuoError } from "../../errors.ts";
import { createModelKernels } from "../../model/kernels.ts";
import { availableMemory } from "../../model/ram.ts";
import { formatBytes, renderTable } from "../../report/table.ts";
import { loadAverage, now, runtime } from "../../runtime.ts";
import { fullKvBytes, kvBytes } from "../../schedule/kv.ts";
import { HeadSchedule } from "../../schedule/schedule.ts";
import { write } from "../io.ts";
import { Progress } from "../progress.ts";
import { measureCeilings } from "./ceilings.ts";
import { resolveCase, spreadLayers } from "./cases.ts";
import { FILL_CHUNK } from "./decode.ts";
import { MODEL_USAGE, type ModelBenchOptions, parseModelBenchArgs } from "./model-options.ts";
import { randomWeightBytes, type RandomShape, randomWeights } from "./model-random.ts";
import { DecodeStep } from "./model-step.ts";
import { gbps } from "./roofline.ts";

type Mode = "full" | "duo";
/** One context of one mode: measured, or past the budget. */
type Point = { ms: number; memory: number } | "does not fit";

export async function main(argv: string[]): Promise<number> {
  const o = parseModelBenchArgs(argv);
  if (o.help) {
    write(MODEL_USAGE);
    return 0;
  }
  const c = await resolveCase(o.shape, o.pattern, o.sparsity);
  const layers = spreadLayers(c.shape.numLayers, o.layers ?? c.shape.numLayers);
  const shape: RandomShape = {
    numLayers: layers.length, numHeads: c.shape.numHeads, numKvHeads: c.shape.numKvHeads, headDim: c.shape.headDim,
    hiddenSize: o.hidden ?? c.shape.hiddenSize, intermediateSize: o.intermediate ?? c.shape.intermediateSize, vocabSize: o.vocab ?? c.shape.vocabSize,
  };
  const schedules: Record<Mode, HeadSchedule> = {
    full: HeadSchedule.full(layers.length, shape.numKvHeads),
    duo: HeadSchedule.fromMask(layers.map((l) => c.schedule.mask[l]!)),
  };
  const avail = o.memory === undefined ? await availableMemory() : { bytes: o.memory, source: "--memory" };
  const budget = avail.bytes;
  const w = randomWeightBytes(shape, o.weightsDtype);
  if (w.held >= budget) {
    throw new DuoError("CAPACITY", `the ${o.weightsDtype} weights of this shape take ${formatBytes(w.held)}, more than the ${formatBytes(budget)} budget (${avail.source}); lower --layers or use --memory`);
  }
  const kv = (mode: Mode, context: number) => mode === "full"
    ? fullKvBytes(shape, { headDim: shape.headDim, context, dtype: o.kvDtype })
    : kvBytes(schedules.duo, { headDim: shape.headDim, context, sinkSize: c.sinkSize, recentSize: c.recentSize, dtype: o.kvDtype });
  const reach = { full: largestContext((t) => kv("full", t), budget - w.held), duo: largestContext((t) => kv("duo", t), budget - w.held) };
  const contexts = o.contexts ?? defaultContexts(reach.duo);

  const rt = runtime();
  const threads = o.threads ?? rt.cores;
  write([
    `duo bench model: runtime ${rt.name} ${rt.version}, native backend and kernels, ${threads} thread(s), ${rt.cores} core(s), 1-minute load average ${(await loadAverage())?.toFixed(2) ?? "unknown"}`,
    `model: ${o.shape}-shaped, RANDOM WEIGHTS (made in memory, no checkpoint): ${shape.numLayers}${shape.numLayers < c.shape.numLayers ? ` of ${c.shape.numLayers}` : ""} layers, hidden ${shape.hiddenSize}, intermediate ${shape.intermediateSize}, vocab ${shape.vocabSize}, ${shape.numHeads} query / ${shape.numKvHeads} KV heads, D = ${shape.headDim}; ${o.weightsDtype} weights ${formatBytes(w.held)} (${formatBytes(w.readPerToken)} read per token)`,
    `heads: ${c.source}; S = ${c.sinkSize}, R = ${c.recentSize}; ${schedules.duo.retrievalHeads}/${shape.numLayers * shape.numKvHeads} KV heads retrieval`,
    `memory budget ${formatBytes(budget)} (${avail.source}) for weights + ${o.kvDtype} KV; KV filled with random K/V, best of ${o.steps} timed decode steps per point`,
    "",
  ].join("\n") + "\n");

  const backend = await createBackend("native", { threads });
  const kernels = await createModelKernels("native", { threads, memoryBudget: budget });
  try {
    const { ceilings, why } = await measureCeilings(backend);
    write((ceilings ? `streaming read ${ceilings.readGBps.toFixed(1)} GB/s with ${ceilings.workers} thread(s) (the native ceiling kernels, this run)` : `read bandwidth not measured: ${why}`) + "\n");
    const bar = new Progress("random weights", w.held);
    let made = 0;
    const weights = randomWeights(kernels, shape, o.weightsDtype, (b) => bar.update((made += b), formatBytes(made)));
    bar.done(formatBytes(w.held));
    const step = new DecodeStep(shape, kernels, weights, c.shape.ropeTheta, c.shape.ropeScaling ?? { type: "none" });
    const points: Record<Mode, Point[]> = { full: [], duo: [] };
    for (const mode of ["full", "duo"] as const) {
      points[mode] = await series(mode, { backend, shape, schedule: schedules[mode], c, o, contexts, step, heldWeights: kernels.memory().weights, budget, kv });
    }
    write(report(contexts, points, w.readPerToken, kv, ceilings?.readGBps) + "\n");
    write([
      `context each reaches in ${formatBytes(budget)} beside ${formatBytes(w.held)} of weights (computed from KV bytes per token): full attention ${reach.full} tokens, DuoAttention ${reach.duo} tokens (${(reach.duo / Math.max(1, reach.full)).toFixed(2)}x)`,
      `largest context measured: full ${largestMeasured(contexts, points.full)}, Duo ${largestMeasured(contexts, points.duo)}`,
      `(the machine may be shared: compare the ratios within this run, not the absolute times)`,
    ].join("\n") + "\n");
    return 0;
  } finally {
    kernels.dispose();
    await backend.dispose();
  }
}

interface SeriesInput {
  backend: Backend;
  shape: RandomShape;
  schedule: HeadSchedule;
  c: Awaited<ReturnType<typeof resolveCase>>;
  o: ModelBenchOptions;
  contexts: number[];
  step: DecodeStep;
  heldWeights: number;
  budget: number;
  kv: (mode: Mode, context: number) => number;
}

/** One mode over the growing contexts: fill to each, time decode steps; "does not fit" from the first context whose
 *  KV (with the decode steps' tokens) would pass the budget beside the weights. */
async function series(mode: Mode, s: SeriesInput): Promise<Point[]> {
  const { shape, o } = s;
  const last = s.contexts.at(-1)!;
  const engine = await DuoAttention.create({
    shape: { numLayers: shape.numLayers, numHeads: shape.numHeads, numKvHeads: shape.numKvHeads, headDim: shape.headDim },
    heads: s.schedule.mask, sinkSize: s.c.sinkSize, recentSize: s.c.recentSize, kvDtype: o.kvDtype, backend: s.backend,
    maxContext: last + o.steps + 1,
  });
  const seq = engine.sequence();
  const inputs = new SyntheticInputs(engine.shape, FILL_CHUNK);
  const out: Point[] = [];
  try {
    for (const context of s.contexts) {
      if (s.heldWeights + s.kv(mode, context + o.steps + 1) > s.budget) {
        out.push("does not fit");
        continue;
      }
      const bar = new Progress(`${mode} @ ${context}: filling KV`, context);
      while (seq.length(0) < context) {
        const [, k, v] = inputs.chunkOf(Math.min(FILL_CHUNK, context - seq.length(0)));
        for (let l = 0; l < shape.numLayers; l++) await seq.fill(l, k, v);
        bar.update(seq.length(0));
      }
      bar.done();
      const times: number[] = [];
      for (let i = 0; i <= o.steps; i++) {
        const t0 = now();
        await s.step.run(seq, i % shape.vocabSize, seq.length(0));
        if (i > 0) times.push(now() - t0);
      }
      // The best step: on a shared machine the other processes only ever add time.
      out.push({ ms: Math.min(...times), memory: s.heldWeights + seq.bytes().allocated });
    }
    return out;
  } finally {
    seq.dispose();
    await engine.dispose();
  }
}

/** The largest T with kvAt(T) ≤ room (kvAt grows with T; binary search over tokens). */
function largestContext(kvAt: (t: number) => number, room: number): number {
  if (kvAt(1) > room) return 0;
  let lo = 1, hi = 2;
  while (kvAt(hi) <= room && hi < 2 ** 40) hi *= 2;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (kvAt(mid) <= room) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** 8K, 16K, ... up to the largest power of two Duo reaches (at least 8K). */
function defaultContexts(duoReach: number): number[] {
  const out = [8192];
  while (out.at(-1)! * 2 <= duoReach) out.push(out.at(-1)! * 2);
  return out;
}

function largestMeasured(contexts: number[], points: Point[]): string {
  const i = points.findLastIndex((p) => p !== "does not fit");
  return i < 0 ? "none" : `${contexts[i]} tokens`;
}

/** The table; "GB/s (of read)" is (weight bytes read + KV bytes) per step ÷ its time, and its fraction of `readGBps`. */
function report(contexts: number[], points: Record<Mode, Point[]>, weightRead: number, kv: (mode: Mode, context: number) => number, readGBps?: number): string {
  const ms = (p: Point) => (p === "does not fit" ? p : p.ms.toFixed(1));
  const mem = (p: Point) => (p === "does not fit" ? "-" : formatBytes(p.memory));
  const rate = (p: Point, bytes: number) => {
    if (p === "does not fit") return "-";
    const g = gbps(bytes, p.ms);
    return readGBps ? `${g.toFixed(1)} (${(g / readGBps).toFixed(2)})` : g.toFixed(1);
  };
  return renderTable(
    ["context", "full ms/token", "full memory", "full GB/s (of read)", "Duo ms/token", "Duo memory", "Duo GB/s (of read)", "Duo/full time", "(W + Duo KV)/(W + full KV)"],
    contexts.map((t, i) => {
      const f = points.full[i]!, d = points.duo[i]!;
      return [
        String(t), ms(f), mem(f), rate(f, weightRead + kv("full", t)), ms(d), mem(d), rate(d, weightRead + kv("duo", t)),
        f !== "does not fit" && d !== "does not fit" ? (d.ms / f.ms).toFixed(3) : "-",
        ((weightRead + kv("duo", t)) / (weightRead + kv("full", t))).toFixed(3),
      ];
    }),
  );
}
