/**
 * identifyHeads: find a model's retrieval heads, by upstream's gate optimisation or by the forward-only score.
 *
 *   const { model, tokenizer } = await loadGateModel(dir);
 *   const data = passkeySource(new PasskeyDataset(tokenizer, text, { ctxMin: 1000, ctxMax: 4000 }, new Random(42)), 42);
 *   const run = await identifyHeads(model, { method: "optimize", data, steps: 200, onStep: (s) => log(s.loss) });
 *   run.gates;          // [layers·Hkv] raw post-step gates (upstream saves these), or rank-mapped scores
 *
 * optimize: per step, clamp the gates, draw a fresh sample, teacher forward, cone student forward and backward,
 * AdamW (optimizer.ts). score: the value-aware deviation averaged over `samples` samples (score.ts).
 * identifyHeads computes in float64 TypeScript: the reference, slow on real models (IDENTIFICATION.md §1.5);
 * identifyHeadsFast runs both methods on a ModelKernels set and an attention backend (fast-score.ts,
 * fast-optimize.ts with the backward kernels), its twin.
 */
import { checkInt, checkOneOf, DuoError } from "../errors.ts";
import type { Backend } from "../backend/types.ts";
import type { ModelConfig } from "../model/config.ts";
import type { FastModel } from "./fast-model.ts";
import { FastDeviationScore } from "./fast-score.ts";
import { FastObjective, type OptimizeModel } from "./fast-optimize.ts";
import { createBackwardKernels } from "./backward-kernels.ts";
import { type Sample, sampleRows, teacherForward } from "./forward.ts";
import type { GateModel } from "./model.ts";
import { objective, UPSTREAM_REG } from "./objective.ts";
import { type AdamState, type GateDtype, GateOptimizer, lrFactor, UPSTREAM_LR } from "./optimizer.ts";
import type { PasskeyDataset } from "./dataset.ts";
import { Random } from "./random.ts";
import { DeviationScore, rankGates } from "./score.ts";
import { checkWindow, type StreamingWindow, UPSTREAM_WINDOW } from "./window.ts";

export const METHODS = ["optimize", "score"] as const;
export type Method = (typeof METHODS)[number];

/** Where training samples come from: `sample(step)` must be a pure function of the step (for --resume). */
export interface SampleSource {
  sample(step: number): Sample;
}

/** Upstream's order over a PasskeyDataset: a fresh shuffle of its items every epoch, fresh depths and passkeys per
 *  draw; seeded per epoch and per step, so step s draws the same sample after a resume. */
export function passkeySource(ds: PasskeyDataset, seed: number): SampleSource {
  return {
    sample(step: number): Sample {
      const n = ds.length, epoch = Math.floor(step / n);
      const order = new Random((seed ^ 0x5eed0000) + epoch).permutation(n);
      return ds.sample(order[step % n]!, new Random(seed + 7919 * (step + 1)));
    },
  };
}

export interface StepInfo {
  step: number;
  steps: number;
  loss: number;
  distill: number;
  reg: number;
  lr: number;
  gateMin: number;
  gateMax: number;
  tokens: number;
  /** seconds of this step, and of its teacher (plain forward) part */
  seconds: number;
  teacherSeconds: number;
  tokensPerSecond: number;
  etaSeconds: number;
}

export interface LossPoint {
  step: number;
  loss: number;
  distill: number;
  reg: number;
  lr: number;
  tokens: number;
}

/** What --resume needs: the step reached, the raw gates and the AdamW moments. */
export interface IdentifyState {
  step: number;
  gates: number[];
  adam: AdamState;
  losses: LossPoint[];
}

export interface IdentifyOptions {
  method?: Method;
  data: SampleSource;
  /** optimize: steps (default 200; upstream 2000) */
  steps?: number;
  /** score: samples (default 16) */
  samples?: number;
  /** streaming window while identifying (default upstream's S 128, R 256, 128-token blocks) */
  window?: StreamingWindow;
  lr?: number;
  reg?: number;
  gateDtype?: GateDtype;
  /** student on the cone only (default true) */
  cone?: boolean;
  /** continue from a saved state */
  resume?: IdentifyState;
  onStep?: (s: StepInfo) => void;
  /** called every `checkpointEvery` steps (default 10) and after the last: save it to resume */
  onCheckpoint?: (s: IdentifyState) => void | Promise<void>;
  checkpointEvery?: number;
  /** checked between steps: stop early, keeping the gates of the last finished step */
  shouldStop?: () => boolean;
}

export interface IdentifyResult {
  method: Method;
  numLayers: number;
  numKvHeads: number;
  /** [layers·Hkv]: optimize → the raw gates after the last step; score → rank / (N − 1) */
  gates: Float64Array;
  /** score: the raw deviations */
  scores?: Float64Array;
  window: StreamingWindow;
  steps: number;
  stopped: boolean;
  losses: LossPoint[];
  state?: IdentifyState;
  timings: { seconds: number; teacherSeconds: number; tokens: number };
}

const yieldToEvents = () => new Promise<void>((r) => setTimeout(r, 0)); // lets a Ctrl-C handler run

export async function identifyHeads(m: GateModel, o: IdentifyOptions): Promise<IdentifyResult> {
  const method = checkOneOf("method", o.method ?? "optimize", METHODS);
  const window = checkWindow(o.window ?? UPSTREAM_WINDOW);
  if (!o.data || typeof o.data.sample !== "function") throw new DuoError("INVALID_ARGUMENT", "identifyHeads needs data: a SampleSource ({ sample(step) }), e.g. passkeySource(dataset, seed)");
  return method === "score" ? await scoreRun(m.config, new DeviationScore(m, window), o, window) : await optimizeRun(m.config, o, float64Step(m, window));
}

/**
 * The fast kernels: the model's weights in a ModelKernels set (fast-model.ts), attention on `backend`. `score` runs
 * fast-score.ts; `optimize` runs fast-optimize.ts and needs an OptimizeModel (optimizeModelFromGate /
 * loadOptimizeModel: the FastModel plus its norms) and a "wasm" or "native" kernel set, whose backward kernels it
 * binds. Same result shape as identifyHeads.
 */
export async function identifyHeadsFast(m: FastModel | OptimizeModel, backend: Backend, o: IdentifyOptions): Promise<IdentifyResult> {
  const method = checkOneOf("method", o.method ?? "score", METHODS);
  if (!o.data || typeof o.data.sample !== "function") throw new DuoError("INVALID_ARGUMENT", "identifyHeadsFast needs data: a SampleSource ({ sample(step) }), e.g. passkeySource(dataset, seed)");
  const window = checkWindow(o.window ?? UPSTREAM_WINDOW);
  const fast = "fast" in m ? m.fast : m;
  if (method === "score") return await scoreRun(fast.config, new FastDeviationScore(fast, backend, window), o, window);
  if (!("fast" in m)) throw new DuoError("INVALID_ARGUMENT", `method "optimize" on the fast kernels needs an OptimizeModel (optimizeModelFromGate or loadOptimizeModel: the model plus its norm weights), got a FastModel`);
  if (fast.kernels.name !== "wasm" && fast.kernels.name !== "native") {
    throw new DuoError("UNSUPPORTED", `method "optimize" runs on model kernels "wasm" or "native" (the backward kernels), or on the float64 reference (identifyHeads; --kernels reference); got "${fast.kernels.name}"`);
  }
  const f = new FastObjective(m, await createBackwardKernels(fast.kernels), backend, window);
  return await optimizeRun(fast.config, o, (s, gates, reg, cone) => f.evaluate(s, gates, { reg, cone }));
}

/** What scoreRun accumulates samples into: score.ts (float64) or fast-score.ts. */
interface Scorer {
  add(s: Sample): void | Promise<void>;
  scores(): Float64Array;
}

async function scoreRun(c: ModelConfig, score: Scorer, o: IdentifyOptions, window: StreamingWindow): Promise<IdentifyResult> {
  const samples = checkInt("samples", o.samples ?? 16, 1);
  const t0 = performance.now();
  let tokens = 0, done = 0;
  for (; done < samples && !o.shouldStop?.(); done++) {
    const s0 = performance.now(), s = o.data.sample(done);
    await score.add(s);
    tokens += s.ids.length;
    const now = performance.now(), secs = (now - t0) / 1000;
    o.onStep?.({ step: done + 1, steps: samples, loss: NaN, distill: NaN, reg: NaN, lr: 0, gateMin: NaN, gateMax: NaN, tokens: s.ids.length, seconds: (now - s0) / 1000, teacherSeconds: (now - s0) / 1000, tokensPerSecond: tokens / secs, etaSeconds: (secs / (done + 1)) * (samples - done - 1) });
    await yieldToEvents();
  }
  const scores = score.scores(), seconds = (performance.now() - t0) / 1000;
  return {
    method: "score", numLayers: c.numLayers, numKvHeads: c.numKvHeads, gates: rankGates(scores), scores, window,
    steps: done, stopped: done < samples, losses: [], timings: { seconds, teacherSeconds: seconds, tokens },
  };
}

/** One objective evaluation for optimizeRun: loss, dL/dgate, and the seconds of its teacher (plain forward). */
type StepFn = (s: Sample, gates: Float64Array, reg: number, cone: boolean) => Promise<{ loss: number; distill: number; reg: number; grad: Float64Array; teacherSeconds: number }>;

/** The float64 step (objective.ts), its teacher timed apart. */
function float64Step(m: GateModel, window: StreamingWindow): StepFn {
  return async (s, gates, reg, cone) => {
    const t0 = performance.now(), rows = sampleRows(m, s, window, cone);
    const teacher = teacherForward(m, s, rows);
    const teacherSeconds = (performance.now() - t0) / 1000;
    return { ...objective(m, s, gates, { window, reg, cone, teacher }), teacherSeconds };
  };
}

async function optimizeRun(c: ModelConfig, o: IdentifyOptions, evaluate: StepFn): Promise<IdentifyResult> {
  const window = checkWindow(o.window ?? UPSTREAM_WINDOW);
  const steps = checkInt("steps", o.steps ?? 200, 1), N = c.numLayers * c.numKvHeads;
  const every = checkInt("checkpointEvery", o.checkpointEvery ?? 10, 1);
  const lr = o.lr ?? UPSTREAM_LR, reg = o.reg ?? UPSTREAM_REG;
  if (o.resume && (o.resume.gates.length !== N || o.resume.step > steps)) {
    throw new DuoError("INVALID_ARGUMENT", `the saved state has ${o.resume.gates.length} gates at step ${o.resume.step}; this run needs ${N} gates and at most ${steps} steps (same model, --steps >= the saved step)`);
  }
  const opt = new GateOptimizer(N, o.gateDtype ?? "bf16", o.resume?.adam);
  const gates = o.resume ? Float64Array.from(o.resume.gates) : new Float64Array(N).fill(opt.store(1)); // upstream's initial_value 1.0
  const losses: LossPoint[] = o.resume ? [...o.resume.losses] : [];
  const state = (step: number): IdentifyState => ({ step, gates: Array.from(gates), adam: { step: opt.state.step, m: [...opt.state.m], v: [...opt.state.v] }, losses: [...losses] });
  const t0 = performance.now();
  const first = o.resume?.step ?? 0;
  let step = first, tokens = 0, teacherSeconds = 0;
  for (; step < steps; step++) {
    if (o.shouldStop?.()) break;
    const s0 = performance.now();
    opt.clamp(gates);
    const s = o.data.sample(step);
    const r = await evaluate(s, gates, reg, o.cone ?? true), tTeacher = r.teacherSeconds;
    const stepLr = lr * lrFactor(step, steps);
    opt.update(gates, r.grad, stepLr);
    losses.push({ step, loss: r.loss, distill: r.distill, reg: r.reg, lr: stepLr, tokens: s.ids.length });
    tokens += s.ids.length;
    teacherSeconds += tTeacher;
    const now = performance.now(), secs = (now - t0) / 1000, did = step + 1 - first;
    let lo = Infinity, hi = -Infinity;
    for (const g of gates) (lo = Math.min(lo, g)), (hi = Math.max(hi, g));
    o.onStep?.({ step: step + 1, steps, loss: r.loss, distill: r.distill, reg: r.reg, lr: stepLr, gateMin: lo, gateMax: hi, tokens: s.ids.length, seconds: (now - s0) / 1000, teacherSeconds: tTeacher, tokensPerSecond: tokens / secs, etaSeconds: (secs / did) * (steps - step - 1) });
    if ((step + 1) % every === 0 && step + 1 < steps) await o.onCheckpoint?.(state(step + 1));
    await yieldToEvents();
  }
  const final = state(step);
  await o.onCheckpoint?.(final);
  return {
    method: "optimize", numLayers: c.numLayers, numKvHeads: c.numKvHeads, gates: Float64Array.from(gates), window,
    steps: step, stopped: step < steps, losses, state: final,
    timings: { seconds: (performance.now() - t0) / 1000, teacherSeconds, tokens },
  };
}
