import { test } from "node:test";
import assert from "node:assert/strict";
import { heatmapSvg } from "../src/cli/heatmap.ts";
import { LlamaModel } from "../src/model/llama.ts";
import { haystackIds, linspaceInts, MAX_SCORE, NEEDLE, niahPrompt, PROMPT_PREFIX, PROMPT_SUFFIX, rouge1, runNiah, wordSetScore } from "../src/model/niah.ts";
import { argmax, Prng, Sampler } from "../src/model/sampler.ts";
import { TextStream, TextTokenizer } from "../src/model/tokenizer.ts";
import { writeTinyModel } from "./helpers/tiny-model.ts";

/** A fresh tiny model directory per test (removed afterwards) and a loader for it. */
async function withTiny(fn: (load: () => Promise<LlamaModel>, dir: string) => Promise<void>): Promise<void> {
  const m = writeTinyModel({ dtype: "bf16", seed: 41 });
  try {
    await fn(() => LlamaModel.load(m.dir, { backend: "reference", kvDtype: "f32", prefillChunk: 4 }), m.dir);
  } finally {
    m.dispose();
  }
}

test("greedy generate is the argmax chain of forward, stops at maxTokens, and streams text", () => withTiny(async (load) => {
  const model = await load();
  try {
    const prompt = "the cat sat on the mat";
    const gen = model.generate(prompt, { maxTokens: 6, ignoreEos: true });
    const got = [];
    for await (const t of gen) got.push(t);
    assert.equal(got.length, 6);
    assert.equal(gen.stats.stopReason, "length");
    assert.equal(gen.stats.decodeSteps, 5);
    const ids = model.tokenizer.encode(prompt);
    assert.equal(ids[0], 1, "BOS first");
    assert.equal(gen.stats.promptTokens, ids.length);
    // The same chain by hand.
    const ref = await load();
    let logits = await ref.forward(ids);
    const want: number[] = [];
    for (let i = 0; i < 6; i++) {
      want.push(argmax(logits));
      if (i < 5) logits = await ref.forward([want[i]!]);
    }
    assert.deepEqual(got.map((t) => t.id), want);
    assert.equal(got.map((t) => t.text).join(""), model.tokenizer.decode(want));
    // The last token is part of the sequence and is fed by the next call.
    assert.deepEqual(model.tokens, [...ids, ...want]);
    const next = await model.forward([5]);
    assert.deepEqual(next, await ref.forward([want[5]!, 5]));
    await ref.dispose();
  } finally {
    await model.dispose();
  }
}));

test("generation stops at a stop id (not emitted) and eos ids come from config + generation_config", () => withTiny(async (load) => {
  const model = await load();
  try {
    assert.deepEqual(model.config.eosTokenIds, [2]);
    const all = [];
    for await (const t of model.generate([1, 50, 60], { maxTokens: 5, ignoreEos: true })) all.push(t.id);
    model.reset();
    const gen = model.generate([1, 50, 60], { maxTokens: 5, stop: [all[2]!] });
    const cut = [];
    for await (const t of gen) cut.push(t.id);
    assert.deepEqual(cut, all.slice(0, all.indexOf(all[2]!)));
    assert.equal(gen.stats.stopReason, "stop");
  } finally {
    await model.dispose();
  }
}));

test("seeded sampling is reproducible; top-k 1 is greedy; options are validated", () => withTiny(async (load) => {
  const model = await load();
  try {
    const run = async (o: Record<string, number>) => {
      model.reset();
      const out = [];
      for await (const t of model.generate([1, 70, 80], { maxTokens: 8, ignoreEos: true, ...o })) out.push(t.id);
      return out;
    };
    const a = await run({ temperature: 1.5, topP: 0.9, seed: 7 }), b = await run({ temperature: 1.5, topP: 0.9, seed: 7 });
    assert.deepEqual(a, b);
    assert.notDeepEqual(await run({ temperature: 5, seed: 8 }), await run({ temperature: 5, seed: 9 }));
    model.reset();
    const greedy = [];
    for await (const t of model.generate([1, 70, 80], { maxTokens: 8, ignoreEos: true })) greedy.push(t.id);
    assert.deepEqual(await run({ temperature: 0.7, topK: 1, seed: 3 }), greedy);
    assert.throws(() => model.generate([1], { temperature: -1 }), /temperature must be a finite number >= 0/);
    assert.throws(() => model.generate([1], { topP: 0 }), /topP must be in \(0, 1\]/);
    assert.throws(() => model.generate([1], { maxTokens: 0 }), /maxTokens must be an integer >= 1/);
    assert.throws(() => model.generate([1], { temprature: 1 } as never), /unknown generate option "temprature"/);
  } finally {
    await model.dispose();
  }
}));

test("sampler: top-p keeps the nucleus, the PRNG is uniform and seeded", () => {
  const logits = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
  const s = new Sampler({ temperature: 1, topP: 0.75, seed: 1 });
  const counts = [0, 0, 0, 0];
  for (let i = 0; i < 4000; i++) counts[s.sample(logits)]!++;
  assert.equal(counts[2], 0, "token 2 is outside the 0.75 nucleus {0, 1}");
  assert.equal(counts[3], 0);
  // Within the nucleus the odds stay 0.5 : 0.3 (binomial sd of the share ≈ 0.008 over 4000 draws).
  assert.ok(Math.abs(counts[0]! / 4000 - 0.625) < 0.04, `share of token 0: ${counts[0]! / 4000}`);
  const r = new Prng(42), r2 = new Prng(42);
  let sum = 0;
  for (let i = 0; i < 10000; i++) {
    const u = r.next();
    assert.equal(u, r2.next());
    assert.ok(u >= 0 && u < 1);
    sum += u;
  }
  assert.ok(Math.abs(sum / 10000 - 0.5) < 0.01, `mean ${sum / 10000}`);
});

test("tokenizer: BOS, round trip, chat template, streaming text through multi-byte characters", () => withTiny(async (_load, dir) => {
  const tok = await TextTokenizer.load(dir);
  const ids = tok.encode("the café");
  assert.equal(ids[0], 1);
  assert.equal(tok.decode(ids), "the café");
  assert.deepEqual(tok.encode("the", { addSpecialTokens: false }), ids.slice(1, 1 + tok.encode("the", { addSpecialTokens: false }).length));
  assert.equal(await tok.applyChatTemplate([{ role: "user", content: "hi" }]), "<s><|user|>hi<|assistant|>");
  const stream = new TextStream(tok);
  const pieces = ids.slice(1).map((id) => stream.push(id));
  assert.equal(pieces.join("") + stream.flush(), "the café");
  assert.equal(pieces.at(-2), "", "the first byte of é waits for the second");
  assert.equal(pieces.at(-1), "é");
}));

test("NIAH scoring: the plotted score caps at 11/12, rouge-1 F, upstream's depth grid", () => {
  assert.equal(wordSetScore("eat a sandwich and sit in Dolores Park on a sunny day."), MAX_SCORE);
  assert.equal(wordSetScore("Eat a sandwich"), 3 / 12);
  assert.equal(wordSetScore("nothing here"), 0);
  assert.equal(rouge1(NEEDLE, NEEDLE), 1);
  assert.equal(rouge1(NEEDLE, "pizza"), 0);
  // All 6 response tokens are among the needle's 22: P = 1, R = 6/22.
  const f = rouge1(NEEDLE, "eat a sandwich in dolores park");
  assert.ok(Math.abs(f - (2 * (6 / 22)) / (1 + 6 / 22)) < 1e-12, `rouge1 ${f}`);
  assert.deepEqual(linspaceInts(0, 100, 10), [0, 11, 22, 33, 44, 56, 67, 78, 89, 100]);
  assert.deepEqual(linspaceInts(2000, 32000, 13), [2000, 4500, 7000, 9500, 12000, 14500, 17000, 19500, 22000, 24500, 27000, 29500, 32000]);
  assert.deepEqual(linspaceInts(80000, 1048000, 13).slice(0, 3), [80000, 160667, 241333]);
});

test("NIAH prompt: the needle sits at the token depth, the prompt stays under the length, runNiah fills the grid", () => withTiny(async (load) => {
  const model = await load();
  try {
    const tok = model.tokenizer;
    const hay = haystackIds(tok, "Grass is green. Skies are blue. ", 600);
    const needle = tok.encode(NEEDLE, { addSpecialTokens: false });
    for (const depth of [0, 50, 100]) {
      const { ids, needleAt } = niahPrompt(tok, hay, 500, depth);
      assert.deepEqual(ids.slice(needleAt, needleAt + needle.length), needle, `depth ${depth}`);
      // BOS + prefix, 500 − 200 (buffer) tokens of context with the needle, suffix
      assert.equal(ids.length, tok.encode(PROMPT_PREFIX).length + 300 + tok.encode(PROMPT_SUFFIX, { addSpecialTokens: false }).length);
      assert.equal(ids[0], 1);
    }
    const context = 500 - 200 - needle.length;
    assert.equal(niahPrompt(tok, hay, 500, 50).needleAt - niahPrompt(tok, hay, 500, 0).needleAt, Math.floor(context / 2));
    assert.throws(() => niahPrompt(tok, hay, 250, 0), /too short/);
    const cells = await runNiah(model, hay, { lengths: [400, 450], depths: [0, 100], maxTokens: 3 });
    assert.deepEqual(cells.map((c) => [c.length, c.depth]), [[400, 0], [400, 100], [450, 0], [450, 100]]);
    for (const c of cells) assert.ok(c.score >= 0 && c.score <= MAX_SCORE && c.rouge1 >= 0 && c.rouge1 <= 10 && c.prefillMs > 0);
  } finally {
    await model.dispose();
  }
}));

test("heatmap SVG: one panel per method, every cell, axes, labels and legend", () => {
  const svg = heatmapSvg(
    [{ title: "Full <attention>", values: [[1, 0.5], [0, null]] }, { title: "Duo", values: [[0.9, 0.1], [0.2, 0.3]] }],
    { title: "NIAH", rowLabels: ["0", "100"], columnLabels: ["1000", "2000"], rowTitle: "depth (%)", columnTitle: "context length (tokens)", legend: "score" },
  );
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.match(svg, /Full &lt;attention&gt;/);
  assert.equal((svg.match(/<rect [^>]*stroke="white"/g) ?? []).length, 8, "2 panels x 4 cells");
  assert.match(svg, /fill="#0cd79f"/, "score 1 is green");
  assert.match(svg, /fill="#f0496e"/, "score 0 is red");
  assert.match(svg, /fill="#d0d0d0"/, "a missing cell is grey");
  for (const s of ["depth (%)", "context length (tokens)", "score", "1000", "2000", "not run", "1.00", "0.00"]) assert.ok(svg.includes(s), `missing ${s}`);
  assert.ok(svg.trimEnd().endsWith("</svg>"));
});
