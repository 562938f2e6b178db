import { test } from "node:test";
import assert from "node:assert/strict";
import { DuoError } from "../src/errors.ts";
import { LlamaModel } from "../src/model/llama.ts";
import type { Session } from "../src/model/session.ts";
import { writeTinyModel } from "./helpers/tiny-model.ts";

// Sessions: several sequences of one loaded model, each with its own split KV cache and history. Streaming heads
// with a small sink + recent window, so that each session's cache evicts on its own.

const HEADS = [[true, false], [false, true]];
const LOAD = { backend: "reference", heads: HEADS, sinkSize: 2, recentSize: 4 } as const;
const PROMPT_A = [1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49];
const PROMPT_B = [1, 100, 7, 200, 9, 33];
const GREEDY = { maxTokens: 10, greedy: true, ignoreEos: true } as const;

async function alone(model: LlamaModel, prompt: number[]): Promise<number[]> {
  const s = model.session();
  try {
    const ids: number[] = [];
    for await (const t of s.generate(prompt, GREEDY)) ids.push(t.id);
    return ids;
  } finally {
    s.dispose();
  }
}

test("two sessions interleaved token by token give the same tokens as each alone", async () => {
  const m = writeTinyModel({ seed: 5 });
  const model = await LlamaModel.load(m.dir, LOAD);
  try {
    const wantA = await alone(model, PROMPT_A), wantB = await alone(model, PROMPT_B);
    assert.notDeepEqual(wantA, wantB);
    const a = model.session(), b = model.session();
    const ia = a.generate(PROMPT_A, GREEDY)[Symbol.asyncIterator](), ib = b.generate(PROMPT_B, GREEDY)[Symbol.asyncIterator]();
    const got: [number[], number[]] = [[], []];
    for (let step = 0; step < 10; step++) {
      for (const [j, it] of [[0, ia], [1, ib]] as const) {
        const r = await it.next();
        assert.ok(!r.done, `session ${j} ended early at step ${step}`);
        got[j].push(r.value.id);
      }
    }
    assert.deepEqual(got, [wantA, wantB]);
    assert.deepEqual(a.tokens, [...PROMPT_A, ...wantA]);
    assert.deepEqual(b.tokens, [...PROMPT_B, ...wantB]);
    // Both continue from their own state, also when their forwards run at the same time.
    const [la, lb] = await Promise.all([a.forward([5]), b.forward([6])]);
    // The same calls, one session at a time: bit-equal logits.
    for (const [prompt, id, want] of [[PROMPT_A, 5, la], [PROMPT_B, 6, lb]] as const) {
      const r = model.session();
      for await (const _ of r.generate(prompt, GREEDY));
      assert.deepEqual(await r.forward([id]), want);
      r.dispose();
    }
  } finally {
    await model.dispose();
    m.dispose();
  }
});

test("the default session (model.forward / generate / tokens / reset) is independent of model.session()s", async () => {
  const m = writeTinyModel({ seed: 6 });
  const model = await LlamaModel.load(m.dir, LOAD);
  try {
    const before = await model.forward(PROMPT_A);
    const s = model.session();
    await s.forward(PROMPT_B);
    assert.deepEqual(model.tokens, PROMPT_A);
    assert.deepEqual(s.tokens, PROMPT_B);
    assert.equal(s.kvBytes().total > 0 && model.kvBytes().total > s.kvBytes().total, true, "each session has its own cache (A is longer than B)");
    model.reset();
    assert.deepEqual(model.tokens, []);
    assert.deepEqual(s.tokens, PROMPT_B);
    assert.deepEqual(await model.forward(PROMPT_A), before);
  } finally {
    await model.dispose();
    m.dispose();
  }
});

test("a disposed session, and every session of a disposed model, refuse work with DISPOSED", async () => {
  const m = writeTinyModel({ seed: 7 });
  const model = await LlamaModel.load(m.dir, LOAD);
  const disposed = (e: unknown) => e instanceof DuoError && e.code === "DISPOSED";
  let s: Session | undefined;
  try {
    s = model.session();
    await s.forward([1, 2]);
    s.dispose();
    s.dispose(); // twice is fine
    await assert.rejects(s.forward([3]), (e) => disposed(e) && /this session has been disposed/.test((e as Error).message));
    s = model.session();
    await s.forward([1, 2]);
  } finally {
    await model.dispose();
    m.dispose();
  }
  await assert.rejects(s.forward([3]), (e) => disposed(e) && /model has been disposed/.test((e as Error).message));
  assert.throws(() => model.session(), disposed);
});
