import assert from "node:assert/strict";
import { test } from "node:test";
import { measureInterleaved, measureLockstep, type SteppedTask } from "../src/cli/bench/measure.ts";

/** A scripted clock: calls advance it by the time they say they take, so no assertion depends on machine load. */
const clock = { ms: 0, now: () => clock.ms };

/** A task whose calls log "name:call" in `log` and take `ms(round, call)` on the scripted clock. */
function task(name: string, steps: number, log: string[], ms: (round: number, call: number) => number): SteppedTask & { resets: number } {
  let round = -1;
  const t = {
    name, steps, resets: 0,
    reset: () => { t.resets++; round++; },
    step: (i: number) => {
      log.push(`${name}:${i}`);
      clock.ms += ms(round, i);
    },
  };
  return t;
}

test("measureLockstep: call i of every task runs before call i + 1 of any, in rotated order, after a reset per round", async () => {
  const log: string[] = [];
  const a = task("a", 3, log, () => 0), b = task("b", 3, log, () => 0), c = task("c", 2, log, () => 0);
  const timings = await measureLockstep([a, b, c], 2, clock.now);
  assert.deepEqual([a.resets, b.resets, c.resets], [2, 2, 2]);
  assert.equal(timings.length, 3);
  for (const t of timings) assert.equal(t.samples, 2);
  // round 0: call 0 starts at task 0, call 1 at task 1, ...; round 1 starts one further on; c has no call 2
  assert.deepEqual(log, [
    "a:0", "b:0", "c:0", "b:1", "c:1", "a:1", "a:2", "b:2",
    "b:0", "c:0", "a:0", "c:1", "a:1", "b:1", "a:2", "b:2",
  ]);
});

test("measureLockstep: a task's time is the sum of each call's fastest round, so a slow spell in one round is left out", async () => {
  const log: string[] = [];
  // call 1 is slow in round 0 only, call 0 in round 1 only: the per-call minima add to 2 × 2 ms
  const slow = (round: number, call: number) => (round === call ? 30 : 2);
  const [t] = await measureLockstep([task("x", 2, log, slow)], 2, clock.now);
  assert.equal(t!.ms, 4, "sum of per-call minima");
  assert.equal(t!.min, 32, "every whole round held one slow call");
  assert.equal(t!.mean, 32);
});

test("measureInterleaved: every task runs once per round, in task order, after its beforeEach; median and min over the rounds", async () => {
  const log: string[] = [];
  // a takes 5, 1, 3 ms in rounds 0–2 (median 3, min 1); b always 2.
  const aMs = [5, 1, 3];
  let ra = 0;
  const timings = await measureInterleaved([
    { name: "a", beforeEach: () => void log.push("a:before"), fn: () => { log.push("a"); clock.ms += aMs[ra++]!; } },
    { name: "b", fn: () => { log.push("b"); clock.ms += 2; } },
  ], 3, clock.now);
  assert.deepEqual(log, ["a:before", "a", "b", "a:before", "a", "b", "a:before", "a", "b"]);
  assert.deepEqual(timings.map((t) => [t.ms, t.min, t.mean, t.samples]), [[3, 1, 3, 3], [2, 2, 2, 3]]);
});
