import { test } from "node:test";
import assert from "node:assert/strict";
import { NATO, ORDINALS, PasskeyDataset, PROMPT1, PROMPT2, SEPARATOR, needleText, questionText, type DataTokenizer } from "../src/identify/dataset.ts";
import { generatedHaystack } from "../src/identify/haystack.ts";
import { GateOptimizer, lrFactor } from "../src/identify/optimizer.ts";
import { Random } from "../src/identify/random.ts";
import { bf16BitsToF32, f32ToBf16Bits } from "../src/dtype.ts";
import { DuoError } from "../src/errors.ts";

/** Word-level stub: "\n" runs and space-free words are tokens (ids by first appearance); BOS = 1. */
class StubTokenizer implements DataTokenizer {
  readonly ids = new Map<string, number>();
  readonly words: string[] = ["<unk>", "<s>"];
  pieces(text: string): string[] {
    return text.match(/\n+|[^ \n]+/g) ?? [];
  }
  encode(text: string, o: { addSpecialTokens?: boolean } = {}): number[] {
    const out = this.pieces(text).map((w) => {
      if (!this.ids.has(w)) this.ids.set(w, this.words.push(w) - 1);
      return this.ids.get(w)!;
    });
    return o.addSpecialTokens ?? true ? [1, ...out] : out;
  }
  text(ids: ArrayLike<number>): string[] {
    return Array.from(ids, (i) => this.words[i]!);
  }
}

const hayText = (n: number) => Array.from({ length: n }, (_, i) => `w${i}`).join(" ");

test("identify data: context lengths are ⌊linspace(ctxMin, ctxMax, lengths)⌋ (upstream: 1000, 1632, 2265, 2897, …, 32000)", () => {
  const ds = new PasskeyDataset(new StubTokenizer(), hayText(32000), { ctxMin: 1000, ctxMax: 32000, lengths: 50 }, new Random(1));
  assert.deepEqual([0, 1, 2, 3, 48, 49].map((i) => ds.contextLength(i)), [1000, 1632, 2265, 2897, 31367, 32000]);
  assert.equal(ds.length, 50);
});

test("identify data: a sample is prompt1 (with BOS) + haystack with sorted needles + prompt2 + the labelled questions (SPEC §5.4)", () => {
  const tok = new StubTokenizer();
  const opts = { ctxMin: 600, ctxMax: 1200, lengths: 3, passkeys: 3, passkeyWords: 4 };
  const ds = new PasskeyDataset(tok, hayText(2000), opts, new Random(7));
  const enc = (s: string) => tok.encode(s, { addSpecialTokens: false });
  // the haystack is cut so that haystack + prompts + needles + questions fit in ctxMax − 300
  const key = 4; // every passkey is 4 single-token words
  const other = enc(PROMPT1).length + 1 + enc(PROMPT2).length + 3 * (2 * enc(SEPARATOR).length + enc(needleText(0)).length + key + enc(questionText(0)).length + key);
  assert.equal(ds.haystack.length, 1200 - 300 - other);
  const s = ds.sample(1, new Random(9));
  assert.equal(s.contextLength, 900);
  const hay = ds.haystack.slice(0, 900);
  // depths: 3 distinct points of the float32 grid linspace(0.05, 0.95, 1000), ascending
  assert.equal(s.depths.length, 3);
  s.depths.forEach((d, k) => {
    const j = Math.round(((d - 0.05) / 0.9) * 999);
    assert.equal(d, Math.fround(0.05 + (j * 0.9) / 999));
    if (k) assert.ok(d > s.depths[k - 1]!);
  });
  assert.deepEqual(s.insertAt, s.depths.map((d) => Math.trunc(Math.fround(hay.length * d))));
  // the exact token layout
  const want: number[] = [1, ...enc(PROMPT1)];
  let last = 0;
  s.passkeys.forEach((p, k) => {
    const words = p.split(" ");
    assert.equal(words.length, 4);
    for (const w of words) assert.ok(NATO.includes(w), w);
    want.push(...hay.slice(last, s.insertAt[k]), ...enc(SEPARATOR), ...enc(needleText(k)), ...enc(p), ...enc(SEPARATOR));
    last = s.insertAt[k]!;
  });
  want.push(...hay.slice(last), ...enc(PROMPT2));
  assert.equal(s.labelStart, want.length);
  s.passkeys.forEach((p, k) => want.push(...enc(questionText(k)), ...enc(p), ...enc(SEPARATOR)));
  assert.deepEqual(Array.from(s.ids), want);
  // the k-th shallowest needle carries ordinal k, and the questions ask first .. last in order
  const text = tok.text(s.ids).join(" ");
  assert.ok(text.indexOf(`the ${ORDINALS[0]} passkey to the vault: ${s.passkeys[0]}`) < text.indexOf(`the ${ORDINALS[1]} passkey to the vault: ${s.passkeys[1]}`));
  assert.match(tok.text(s.ids.subarray(s.labelStart)).join(" "), new RegExp(`^Based on the content of the book, what is the first passkey to the vault\\? \n Passkey: ${s.passkeys[0]} \n\n Based`));
  assert.equal(needleText(0), "Remeber this sequence of words, it's the first passkey to the vault: "); // upstream's typo
});

test("identify data: upstream's padding quirk (always 1–16 haystack-end tokens before prompt2) only when asked", () => {
  const tok = new StubTokenizer();
  const base = { ctxMin: 500, ctxMax: 900, lengths: 4, passkeys: 2, passkeyWords: 3 };
  const plain = new PasskeyDataset(tok, hayText(1500), base, new Random(3));
  const padded = new PasskeyDataset(tok, hayText(1500), { ...base, pad: true }, new Random(3));
  const p2 = tok.encode(PROMPT2, { addSpecialTokens: false }).length;
  for (let i = 0; i < 4; i++) {
    for (let seed = 0; seed < 8; seed++) {
      const a = plain.sample(i, new Random(seed)), b = padded.sample(i, new Random(seed));
      const pad = b.ids.length - a.ids.length;
      assert.equal(b.ids.length % 16, 0);
      assert.ok(pad >= 1 && pad <= 16, `pad ${pad}`);
      assert.equal(pad, 16 - (a.ids.length % 16)); // 16, not 0, when the length is already a multiple of 16
      const at = a.labelStart - p2; // padding goes right before prompt2, copied from the haystack's end
      assert.deepEqual(Array.from(b.ids.subarray(at, at + pad)), padded.haystack.slice(-pad));
      assert.deepEqual(Array.from(b.ids.subarray(0, at)), Array.from(a.ids.subarray(0, at)));
    }
  }
});

test("identify data: a haystack shorter than the requested context is a DuoError naming both fixes", () => {
  assert.throws(() => new PasskeyDataset(new StubTokenizer(), hayText(700), { ctxMin: 500, ctxMax: 800 }, new Random(1)), (e: unknown) =>
    e instanceof DuoError && e.code === "INVALID_ARGUMENT" && /700 tokens, shorter than the requested context of 800 tokens.*--haystack.*--ctx-max/.test(e.message));
});

test("identify data: the generated haystack is seeded prose at least as long as asked", () => {
  const tok = new StubTokenizer();
  const a = generatedHaystack(tok, 3000, 5), b = generatedHaystack(tok, 3000, 5);
  assert.equal(a, b);
  assert.ok(tok.encode(a, { addSpecialTokens: false }).length >= 3000);
  assert.notEqual(generatedHaystack(tok, 3000, 6), a);
  assert.match(a, /^[A-Z][a-z]+( [a-z]+)+\./);
});

test("identify optimiser: LambdaLR factors of upstream's 2000-step schedule", () => {
  const f = (s: number) => lrFactor(s, 2000);
  assert.deepEqual([0, 39, 40, 199, 399, 1000, 1600, 1601, 1959, 1960, 1999].map(f), [0.1, 0.1, 41 / 400, 0.5, 1, 1, 1, 399 / 400, 41 / 400, 0.1, 0.1]);
});

test("identify optimiser: bf16 AdamW — first step moves a gate by lr, onto the bf16 grid; clamp is separate", () => {
  const bf16 = (x: number) => bf16BitsToF32(f32ToBf16Bits(x));
  const o = new GateOptimizer(3, "bf16");
  const gates = Float64Array.from([1, 0.5, 0.25]);
  o.update(gates, Float64Array.from([0.003, -0.01, 0]), 0.002);
  // Adam's first step is lr·sign(g): 1 − 0.002 = 0.998 → bf16 0.99609375; 0.5 + 0.002 → 0.50390625 (grid 2⁻⁸); g = 0 stays
  assert.deepEqual(Array.from(gates), [0.99609375, 0.50390625, 0.25]);
  for (let i = 0; i < 30; i++) o.update(gates, Float64Array.from([0.5, 0.5, 0.5]), 0.02);
  for (const g of gates) assert.equal(g, bf16(g));
  assert.ok(gates[2]! < 0, "post-step gates may leave [0, 1] (upstream saves them unclamped)");
  o.clamp(gates);
  assert.deepEqual(Array.from(gates).map((g) => g >= 0 && g <= 1), [true, true, true]);
  const f = new GateOptimizer(1, "f32");
  const g1 = Float64Array.from([1]);
  f.update(g1, Float64Array.from([0.003]), 0.002);
  assert.equal(g1[0], Math.fround(0.998));
});
