/**
 * Timing with tinybench. Every measurement first runs the task untimed a few times (V8 tiers wasm up only
 * between calls: a function stays in the baseline compiler for a whole long call, so the backend itself is warmed
 * with many short calls before any of this, see warmUp in engines.ts), then a fixed number of timed iterations
 * chosen from a probe so that each measurement takes about `budgetMs`.
 */
import { Bench } from "tinybench";
import { DuoError } from "../../errors.ts";

export interface Timing {
  /** median latency of one call, ms */
  ms: number;
  mean: number;
  min: number;
  /** relative margin of error of the mean, % */
  rme: number;
  samples: number;
}

export interface MeasureOptions {
  /** wall-time budget for the timed iterations (default 1500 ms) */
  budgetMs?: number;
  /** timed iterations at least / at most (default 3 / 200) */
  minIterations?: number;
  maxIterations?: number;
  /** untimed calls before timing (default 2) */
  warmup?: number;
  /** runs before each call, untimed (e.g. resetting a cache) */
  beforeEach?: () => void | Promise<void>;
}

/** How many timed iterations fit the budget, given one probe call's duration. */
export function iterationsFor(probeMs: number, o: MeasureOptions = {}): number {
  const min = o.minIterations ?? 3, max = o.maxIterations ?? 200;
  return Math.max(min, Math.min(max, Math.floor((o.budgetMs ?? 1500) / Math.max(probeMs, 1e-3))));
}

/** Time `fn` with tinybench; `probeMs` (one call's duration, if known) sets the iteration count. */
export async function measure(name: string, fn: () => unknown | Promise<unknown>, probeMs: number, o: MeasureOptions = {}): Promise<Timing> {
  const iterations = iterationsFor(probeMs, o);
  const bench = new Bench({
    name,
    time: 0,
    iterations,
    warmup: (o.warmup ?? 2) > 0,
    warmupTime: 0,
    warmupIterations: o.warmup ?? 2,
    throws: true,
  });
  bench.add(name, async () => {
    await fn();
  }, o.beforeEach ? { beforeEach: o.beforeEach } : {});
  await bench.run();
  const r = bench.tasks[0]!.result;
  if (r.state !== "completed") {
    const why = r.state === "errored" || r.state === "aborted-with-statistics" ? String((r as { error?: unknown }).error ?? r.state) : r.state;
    throw new DuoError("INVALID_ARGUMENT", `benchmark ${name} did not complete: ${why}`);
  }
  const l = r.latency;
  return { ms: l.p50, mean: l.mean, min: l.min, rme: l.rme, samples: l.samplesCount };
}

/** Milliseconds of one untimed call (the probe for `measure`). */
export async function probe(fn: () => unknown | Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

export interface InterleavedTask {
  name: string;
  fn: () => unknown | Promise<unknown>;
  /** untimed, before every timed call */
  beforeEach?: () => void | Promise<void>;
}

/**
 * Time several tasks in alternation: `rounds` rounds of one call per task, in task order, so that load from other
 * processes on a shared machine falls on every task alike and their ratios stay meaningful. Returns each task's
 * median over the rounds (`min`: its fastest round). Timed here call by call rather than by tinybench: a Bench
 * run again after it completed (tinybench 6, iterations 1) did not call its tasks again and returned the first
 * round's latency, so every "median" was one sample. `now` is the clock in ms (tests pass a scripted one).
 */
export async function measureInterleaved(tasks: readonly InterleavedTask[], rounds: number,
                                         now: () => number = () => performance.now()): Promise<Timing[]> {
  const samples: number[][] = tasks.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (const [i, t] of tasks.entries()) {
      await t.beforeEach?.();
      const t0 = now();
      await t.fn();
      samples[i]!.push(now() - t0);
    }
  }
  return samples.map((s) => {
    const sorted = [...s].sort((a, b) => a - b), mean = s.reduce((a, b) => a + b, 0) / s.length;
    return { ms: sorted[Math.floor((sorted.length - 1) / 2)]!, mean, min: sorted[0]!, rme: NaN, samples: s.length };
  });
}

export interface SteppedTask {
  name: string;
  /** calls in one run; call i may depend on calls 0..i-1 of the same run (a chunked prefill) */
  steps: number;
  step: (i: number) => unknown | Promise<unknown>;
  /** untimed, before every run */
  reset: () => void | Promise<void>;
}

/**
 * Time several multi-call tasks in lockstep: every round resets all tasks, then runs call i of every task (their
 * order rotated from call to call) before call i + 1 of any. A slow spell of a shared machine then falls on all
 * tasks within the same second instead of on whichever whole run it hit (on a 2-vCPU VM, an 8K-token prefill of one
 * layer timed as whole runs took 10.1 s in one run and 14.5 s in another). A task's `ms` is the sum over its calls of
 * each call's fastest time over the rounds; `mean` and `min` are over whole rounds. `now` is the clock in ms (tests
 * pass a scripted one, so that what they assert does not depend on how busy the machine is).
 */
export async function measureLockstep(tasks: readonly SteppedTask[], rounds: number,
                                      now: () => number = () => performance.now()): Promise<Timing[]> {
  const best = tasks.map((t) => new Float64Array(t.steps).fill(Infinity));
  const totals: number[][] = tasks.map(() => []);
  const steps = Math.max(...tasks.map((t) => t.steps));
  for (let r = 0; r < rounds; r++) {
    for (const t of tasks) await t.reset();
    const round = new Float64Array(tasks.length);
    for (let i = 0; i < steps; i++) {
      for (let k = 0; k < tasks.length; k++) {
        const j = (i + r + k) % tasks.length, t = tasks[j]!;
        if (i >= t.steps) continue;
        const t0 = now();
        await t.step(i);
        const ms = now() - t0;
        best[j]![i] = Math.min(best[j]![i]!, ms);
        round[j]! += ms;
      }
    }
    round.forEach((ms, j) => totals[j]!.push(ms));
  }
  return tasks.map((_, j) => ({
    ms: best[j]!.reduce((a, b) => a + b, 0),
    mean: totals[j]!.reduce((a, b) => a + b, 0) / rounds,
    min: Math.min(...totals[j]!),
    rme: NaN,
    samples: rounds,
  }));
}
