import { test } from "node:test";
import assert from "node:assert/strict";
import { DuoError } from "../src/errors.ts";
import { checkShape } from "../src/shape.ts";
import { loadPattern } from "../src/pattern/io.ts";
import { checkPatternShape } from "../src/pattern/pattern.ts";
import { HeadSchedule } from "../src/schedule/schedule.ts";
import { scheduleToHex } from "../src/schedule/hex.ts";
import { fullKvBytes, kvBytes } from "../src/schedule/kv.ts";
import { getPreset, PATTERN_PRESETS, PRESETS, presetForPattern } from "../src/schedule/presets.ts";
import { PATTERN_NAMES, patternPath, skipNoPatterns } from "./helpers/patterns.ts";

const KiB = 1024, MiB = 1024 ** 2, GiB = 1024 ** 3;

/** A schedule with `ret` retrieval heads spread over the first layers (only the total matters for KV bytes). */
function scheduleWith(layers: number, heads: number, ret: number): HeadSchedule {
  return HeadSchedule.fromMask(Array.from({ length: layers }, (_, l) => Array.from({ length: heads }, (_, h) => l * heads + h < ret)));
}

test("presets carry each model's shape and RoPE settings", () => {
  for (const p of Object.values(PRESETS)) {
    assert.equal(checkShape(p), p.numHeads / p.numKvHeads, p.name);
    assert.deepEqual([p.numLayers, p.numHeads, p.headDim, p.hiddenSize], [32, 32, 128, 4096], p.name);
  }
  const l2 = getPreset("llama-2-7b");
  assert.deepEqual([l2.numKvHeads, l2.intermediateSize, l2.vocabSize, l2.ropeTheta], [32, 11008, 32000, 10000]);
  assert.deepEqual(l2.ropeScaling, { type: "linear", factor: 8 });
  const l3 = getPreset("llama-3-8b");
  assert.deepEqual([l3.numKvHeads, l3.intermediateSize, l3.vocabSize, l3.ropeTheta, l3.ropeScaling], [8, 14336, 128256, 3580165449, undefined]);
  assert.equal(getPreset("llama-3-8b-4194k").ropeTheta, 45218125210);
  assert.deepEqual(getPreset("llama-3.1-8b").ropeScaling, { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
  assert.equal(getPreset("llama-3.1-8b").ropeTheta, 500000);
  const m = getPreset("mistral-7b");
  assert.deepEqual([m.numKvHeads, m.vocabSize, m.ropeTheta], [8, 32000, 1e6]);
  assert.equal(getPreset("mistral-7b-v0.3").vocabSize, 32768);
  assert.ok(Object.isFrozen(l3), "presets are frozen");
});

test("getPreset names the valid presets for an unknown name", () => {
  assert.throws(() => getPreset("llama-4"), (e) => e instanceof DuoError && e.code === "INVALID_ARGUMENT" &&
    e.message === 'unknown model preset "llama-4"; valid presets: llama-2-7b, llama-3-8b, llama-3-8b-4194k, llama-3.1-8b, mistral-7b, mistral-7b-v0.3');
  assert.throws(() => getPreset("toString"), /unknown model preset "toString"/);
});

test("every published pattern directory maps to a preset whose shape matches it", { skip: skipNoPatterns }, async () => {
  assert.deepEqual(Object.keys(PATTERN_PRESETS), [...PATTERN_NAMES]);
  for (const name of PATTERN_NAMES) {
    const preset = presetForPattern(patternPath(name));
    assert.ok(preset, name);
    assert.equal(preset.name, PATTERN_PRESETS[name]);
    checkPatternShape(await loadPattern(patternPath(name)), preset);
  }
});

test("presetForPattern finds the model in upstream's nested layout and URLs, else undefined", () => {
  assert.equal(presetForPattern("attn_patterns/Meta-Llama-3.1-8B-Instruct/lr=0.02-reg=0.05-ctx=1000_128000-multi_passkey10")?.name, "llama-3.1-8b");
  assert.equal(presetForPattern("https://example.org/p/Mistral-7B-Instruct-v0.2/")?.name, "mistral-7b");
  assert.equal(presetForPattern("C:\\patterns\\Llama-2-7B-32K-Instruct")?.name, "llama-2-7b");
  assert.equal(presetForPattern("/tmp/my-pattern"), undefined);
  assert.equal(presetForPattern("/tmp/constructor"), undefined);
});

test("KV bytes follow SPEC §4.4 and its per-token and repo-figure cross-checks", () => {
  const f16 = { headDim: 128, bytesPerElem: 2 };
  // Per token: Llama-2-7B 512 KiB full, Llama-3-8B / Mistral-7B 128 KiB full.
  assert.equal(fullKvBytes(getPreset("llama-2-7b"), { ...f16, context: 1 }), 512 * KiB);
  assert.equal(fullKvBytes(getPreset("llama-3-8b"), { ...f16, context: 1 }), 128 * KiB);
  // Constant streaming part: Llama-2 r = 0.25 → 120 MiB at S+R = 320, 144 MiB at 384; Llama-3 r = 0.5 → 20 / 24 MiB.
  const l2 = scheduleWith(32, 32, 256), l3 = scheduleWith(32, 8, 128);
  const constant = (s: HeadSchedule, S: number, R: number) => kvBytes(s, { ...f16, context: 10 ** 6, sinkSize: S, recentSize: R }) - 10 ** 6 * 2 * 2 * 128 * s.retrievalHeads;
  assert.equal(constant(l2, 64, 256), 120 * MiB);
  assert.equal(constant(l2, 128, 256), 144 * MiB);
  assert.equal(constant(l3, 64, 256), 20 * MiB);
  assert.equal(constant(l3, 128, 256), 24 * MiB);
  // Repo figure (GiB of KV, 2 decimals): Llama-3-8B at 1M tokens 122.07 full, 61.06 Duo (s = 0.5, S = 128, R = 256);
  // Llama-2-7B at 200K: 97.66 full, 24.55 Duo (s = 0.75).
  const gib = (n: number) => (n / GiB).toFixed(2);
  assert.equal(gib(fullKvBytes(l3, { ...f16, context: 1e6 })), "122.07");
  assert.equal(gib(kvBytes(l3, { ...f16, context: 1e6, sinkSize: 128, recentSize: 256 })), "61.06");
  assert.equal(gib(fullKvBytes(l2, { ...f16, context: 2e5 })), "97.66");
  assert.equal(gib(kvBytes(l2, { ...f16, context: 2e5, sinkSize: 128, recentSize: 256 })), "24.55");
});

test("KV bytes below S + R equal full attention; 0 and all retrieval heads; f32 doubles", () => {
  const s = scheduleWith(2, 4, 3), o = { headDim: 64, sinkSize: 4, recentSize: 8 };
  for (const T of [0, 1, 11, 12]) assert.equal(kvBytes(s, { ...o, context: T }), fullKvBytes(s, { headDim: 64, context: T }), `T = ${T}`);
  assert.equal(kvBytes(s, { ...o, context: 13 }), 2 * 2 * 64 * (3 * 13 + 5 * 12));
  assert.equal(kvBytes(scheduleWith(2, 4, 0), { ...o, context: 1000 }), 2 * 2 * 64 * 8 * 12);
  assert.equal(kvBytes(HeadSchedule.full(2, 4), { ...o, context: 1000 }), fullKvBytes(s, { headDim: 64, context: 1000 }));
  assert.equal(kvBytes(s, { ...o, context: 100, bytesPerElem: 4 }), 2 * kvBytes(s, { ...o, context: 100 }));
  const bad: [() => unknown, RegExp][] = [
    [() => kvBytes(s, { ...o, headDim: 0, context: 1 }), /headDim must be an integer >= 1/],
    [() => kvBytes(s, { ...o, context: -1 }), /context must be an integer >= 0/],
    [() => kvBytes(s, { ...o, context: 1, recentSize: 1.5 }), /recentSize must be an integer >= 0/],
    [() => kvBytes(s, { ...o, context: 1, bytesPerElem: 0 }), /bytesPerElem must be a positive number/],
    [() => fullKvBytes({ numLayers: 0, numKvHeads: 8 }, { headDim: 128, context: 1 }), /numLayers must be an integer >= 1/],
  ];
  for (const [fn, message] of bad) assert.throws(fn, (e) => e instanceof DuoError && e.code === "INVALID_ARGUMENT" && message.test(e.message), String(message));
});

test("scheduleToHex packs each layer MSB-first into ceil(Hkv/4) digits", () => {
  assert.equal(scheduleToHex(HeadSchedule.fromMask([[false, false, true, false, false, false, false, false]])), "20");
  assert.equal(scheduleToHex(HeadSchedule.fromMask([[true, false, false, false, true], [false, false, false, false, false]])), "88.00");
  assert.equal(scheduleToHex(HeadSchedule.fromMask([[true], [false], [true]])), "8.0.8");
  assert.equal(scheduleToHex(HeadSchedule.full(2, 32)), "ffffffff.ffffffff");
});
