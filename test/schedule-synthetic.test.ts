import { test } from "node:test";
import assert from "node:assert/strict";
import { syntheticSchedule } from "../src/schedule/synthetic.ts";
import { shardHeads } from "../src/schedule/shard.ts";
import { HeadSchedule } from "../src/schedule/schedule.ts";

test("synthetic schedules hit the fraction exactly, are uneven, and fewer early layers are retrieval", () => {
  for (const [L, H, f] of [[32, 8, 0.5], [32, 32, 0.25], [4, 2, 1], [3, 5, 0]] as const) {
    const s = syntheticSchedule(L, H, f, 7);
    assert.equal(s.retrievalHeads, Math.round(f * L * H), `${L}x${H} at ${f}`);
    assert.ok(s.counts().every((c) => c >= 0 && c <= H));
  }
  const s = syntheticSchedule(32, 8, 0.5, 7);
  const c = s.counts();
  assert.ok(new Set(c).size >= 3, `per-layer counts should vary: ${c}`);
  const early = c.slice(0, 4).reduce((a, b) => a + b, 0) / 4, late = c.slice(16).reduce((a, b) => a + b, 0) / 16;
  assert.ok(early < late, `early layers (${early}) should hold fewer retrieval heads than late ones (${late})`);
  assert.deepEqual(syntheticSchedule(32, 8, 0.5, 7).mask, s.mask, "deterministic for a seed");
  assert.notDeepEqual(syntheticSchedule(32, 8, 0.5, 8).mask, s.mask);
});

test("head sharding covers every head once and balances each layer's work", () => {
  const s = HeadSchedule.fromMask([[true, true, false, false, false, false], [true, false, false, false, false, false], [false, false, false, false, false, false]]);
  const plan = shardHeads(s, 2, 1000, 10);
  plan.forEach((shards, l) => {
    const all = shards.flatMap((x) => [...x.retrieval, ...x.streaming]).sort((a, b) => a - b);
    assert.deepEqual(all, [0, 1, 2, 3, 4, 5], `layer ${l}: each head on exactly one shard`);
    shards.forEach((x) => {
      for (const h of x.retrieval) assert.equal(s.mask[l]![h], true);
      for (const h of x.streaming) assert.equal(s.mask[l]![h], false);
    });
  });
  // layer 0: the two retrieval heads go to different shards
  assert.deepEqual(plan[0]!.map((x) => x.retrieval.length), [1, 1]);
  // layer 1: the single retrieval head's shard gets no streaming heads while the other shard can take them all
  assert.deepEqual(plan[1]!.map((x) => [x.retrieval.length, x.streaming.length]), [[1, 0], [0, 5]]);
  // layer 2: 6 equal streaming heads split 3/3
  assert.deepEqual(plan[2]!.map((x) => x.streaming.length), [3, 3]);
});
