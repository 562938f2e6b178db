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

test("sharding: retrieval pages are striped over every shard; streaming heads are dealt out evenly", () => {
  const s = HeadSchedule.fromMask([[true, true, false, false, false, false], [true, false, false, false, false, false], [false, false, false, false, false, false]]);
  const plan = shardHeads(s, 2);
  plan.forEach((shards, l) => {
    shards.forEach((x, i) => {
      assert.deepEqual([...x.retrieval], [...s.retrieval[l]!], `layer ${l}: every shard holds a share of every retrieval head`);
      assert.equal(x.pageStride, 2);
      assert.equal(x.pageOffset, i);
      for (const h of x.streaming) assert.equal(s.mask[l]![h], false);
    });
    const str = shards.flatMap((x) => [...x.streaming]).sort((a, b) => a - b);
    assert.deepEqual(str, [...s.streaming[l]!], `layer ${l}: each streaming head on exactly one shard`);
  });
  assert.deepEqual(plan.map((shards) => shards.map((x) => x.streaming.length)), [[2, 2], [3, 2], [3, 3]]);
  // Over the whole model an odd head goes to the shard with fewer so far: 15 streaming heads split 8/7, not 9/6.
  const perShard = [0, 1].map((i) => plan.reduce((a, shards) => a + shards[i]!.streaming.length, 0));
  assert.deepEqual(perShard, [8, 7]);
  const one = shardHeads(s, 1);
  assert.ok(one.every((shards) => shards.length === 1 && shards[0]!.pageStride === 1 && shards[0]!.pageOffset === 0));
  assert.deepEqual(one.map((sh) => sh[0]!.streaming.length), [4, 5, 6]);
});
