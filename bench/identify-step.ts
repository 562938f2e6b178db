// One `duo identify --method optimize` step against a plain forward of the same tokens (issue 19's target:
// ≤ 1.5×), on the reference (float64 TypeScript) path: teacher forward + cone student forward + activation-only
// backward, vs the teacher forward alone. Also the full-sequence student (cone off) for comparison.
// Then one `--method score` sample on the float64 path against the fast path (wasm model kernels + wasm attention
// backend, both in this thread: fast-score.ts), the speed-up the fast path buys at this shape.
// Then the optimize step on the fast kernels (fast-optimize.ts: teacher on the model kernels + attention backend,
// cone student forward and backward on the backward kernels) against the plain forward on the same kernels and
// backend (its teacher alone), on native (2 threads) and wasm (one thread): issue 19's target is <= 1.5x.
// Run: node --import tsx bench/identify-step.ts [T] [hidden] (or bun / deno run -A). Shape: 4 layers, hidden 128,
// 4 query / 2 KV heads of 32, MLP 344; the upstream window scaled by ¼ (S 32, R 64, blocks of 32), 64 labelled rows.
// A hidden size other than 128 (a multiple of 32: hidden/32 query heads, MLP 2.6875·hidden as 128 → 344) runs only
// the fast optimize part: the float64 path is too slow there.
import { randomGateModel } from "./random-gate-model.ts";
import { objective } from "../src/identify/objective.ts";
import { sampleRows, teacherForward } from "../src/identify/forward.ts";
import { runtime } from "../src/runtime.ts";
import { createBackend } from "../src/backend/registry.ts";
import { createModelKernels } from "../src/model/kernels.ts";
import { fastModelFromGate } from "../src/identify/fast-model.ts";
import { FastDeviationScore } from "../src/identify/fast-score.ts";
import { DeviationScore } from "../src/identify/score.ts";
import { createBackwardKernels } from "../src/identify/backward-kernels.ts";
import { FastObjective, optimizeModelFromGate } from "../src/identify/fast-optimize.ts";
import { probeBackend } from "../src/backend/registry.ts";

const argv = (globalThis as { Deno?: { args: string[] } }).Deno?.args ?? process.argv.slice(2);
const T = Number(argv[0] ?? 2048), hidden = Number(argv[1] ?? 128), fastOnly = hidden !== 128;
const { config, model, r } = randomGateModel(hidden, 4, 65536);
const window = { sink: 32, recent: 64, blockSize: 32 }, nLab = 64;
const sample = { ids: Int32Array.from({ length: T }, () => r.int(512)), labelStart: T - nLab };
const gates = Float64Array.from({ length: 8 }, () => 0.3 + 0.6 * r.next());

if (fastOnly) console.log(`${runtime().name} ${runtime().version}, T = ${T}, hidden ${hidden}, MLP ${config.intermediateSize}; cone rows per layer ${sampleRows(model, sample, window, true).keys.map((k) => k.length).join("/")} of ${T}`);
else await float64Parts();

// optimize on the fast kernels: step vs plain forward, alternating, best of 4
for (const name of ["native", "wasm"] as const) {
  if (name === "native" && !(await probeBackend("native")).usable) {
    console.log("fast optimize, native: skipped (native backend not usable here)");
    continue;
  }
  const kn = await createModelKernels(name, { threads: 2 }), b = await createBackend(name, { threads: name === "native" ? 2 : 0 });
  const f = new FastObjective(optimizeModelFromGate(model, fastModelFromGate(model, kn)), await createBackwardKernels(kn, { threads: 2 }), b, window);
  const t: Record<string, number> = {};
  await f.evaluate(sample, gates); // warm-up
  for (let round = 0; round < 4; round++) {
    for (const [what, fn] of Object.entries({ forward: () => f.teacher(sample, null), step: () => f.evaluate(sample, gates) })) {
      const t0 = performance.now();
      await fn();
      t[what] = Math.min(t[what] ?? Infinity, performance.now() - t0);
    }
  }
  const threads = name === "native" ? "2 threads" : "one thread";
  console.log(`fast optimize, ${name} kernels + ${name} backend (${threads}): plain forward ${t.forward!.toFixed(0)} ms; optimize step (cone) ${t.step!.toFixed(0)} ms = ${(t.step! / t.forward!).toFixed(2)}x`);
  kn.dispose();
  await b.dispose();
}

/** The float64 optimize step and the score comparison (hidden 128 only). */
async function float64Parts(): Promise<void> {
  // On a shared machine a slow spell can land on one variant only: the three run in alternation, round by round,
  // and each keeps its best round, by wall clock and by this process's CPU time (where the runtime reports it).
  const cpu = () => (globalThis as { process?: { cpuUsage?: () => { user: number; system: number } } }).process?.cpuUsage?.();
  const variants = { forward: () => teacherForward(model, sample, null), step: () => objective(model, sample, gates, { window }), full: () => objective(model, sample, gates, { window, cone: false }) };
  const wall: Record<string, number> = {}, cpuMs: Record<string, number> = {};
  const rows = sampleRows(model, sample, window, true);
  variants.step(); // warm-up
  for (let round = 0; round < 4; round++) {
    for (const [name, fn] of Object.entries(variants)) {
      const c0 = cpu(), t0 = performance.now();
      fn();
      const ms = performance.now() - t0, c1 = cpu();
      wall[name] = Math.min(wall[name] ?? Infinity, ms);
      if (c0 && c1) cpuMs[name] = Math.min(cpuMs[name] ?? Infinity, (c1.user + c1.system - c0.user - c0.system) / 1000);
    }
  }
  const ratios = (t: Record<string, number>) => `plain forward ${t.forward!.toFixed(0)} ms; optimize step (cone) ${t.step!.toFixed(0)} ms = ${(t.step! / t.forward!).toFixed(2)}x; full-sequence student ${t.full!.toFixed(0)} ms = ${(t.full! / t.forward!).toFixed(2)}x`;
  const cone = rows.keys.map((k) => k.length);
  console.log(`${runtime().name} ${runtime().version}, T = ${T}, cone rows per layer ${cone.join("/")} of ${T}; best of 4 alternating rounds`);
  console.log(`wall: ${ratios(wall)}`);
  if (cpuMs.forward !== undefined) console.log(`cpu:  ${ratios(cpuMs)}`);

  // score: one sample each, alternating, best of 3
  const kernels = await createModelKernels("wasm"), backend = await createBackend("wasm", { threads: 0 });
  const fast = new FastDeviationScore(fastModelFromGate(model, kernels), backend, window), ref = new DeviationScore(model, window);
  const score: Record<string, number> = {};
  await fast.add(sample); // warm-up
  for (let round = 0; round < 3; round++) {
    for (const [name, fn] of Object.entries({ float64: async () => ref.add(sample), fast: async () => await fast.add(sample) })) {
      const t0 = performance.now();
      await fn();
      score[name] = Math.min(score[name] ?? Infinity, performance.now() - t0);
    }
  }
  console.log(`score, one sample: float64 ${score.float64!.toFixed(0)} ms; fast (wasm kernels + wasm backend, one thread) ${score.fast!.toFixed(0)} ms = ${(score.float64! / score.fast!).toFixed(1)}x faster`);
  kernels.dispose();
  await backend.dispose();
}
