import { test } from "node:test";
import assert from "node:assert/strict";
import { probeNative } from "../src/backend/native.ts";
import { randomWeightBytes } from "../src/cli/bench/model-random.ts";
import { runCli } from "./helpers/cli.ts";

// `duo bench model` on a tiny shape (2 layers of the Llama-3-8B heads, hidden 64): full attention's KV stops fitting
// in a 30 MiB budget before DuoAttention's, and the reach each computes is what the KV bytes per token give; each
// step's bytes per second are quoted against the read bandwidth measured in the same run.

const native = await probeNative({});
const skip = native.usable ? false : `skipped: native backend not usable here (${native.reason})`;
const TINY = ["--layers", "2", "--hidden", "64", "--intermediate", "128", "--vocab", "256", "--steps", "1", "--threads", "2"];
const BUDGET = 30 * 2 ** 20;

test("duo bench model: random weights said, full stops fitting before Duo, reach from KV bytes per token", { skip }, async () => {
  const r = await runCli(["bench", "model", ...TINY, "--contexts", "256,1024,4096", "--memory", String(BUDGET)]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /RANDOM WEIGHTS/);
  const row = (t: number) => r.stdout.split("\n").find((l) => l.trim().startsWith(`${t} `))?.trim().split(/\s{2,}/);
  const [, full1k, , fullRate, duo1k] = row(1024)!;
  assert.ok(Number(full1k) > 0 && Number(duo1k) > 0, r.stdout);
  const read = /streaming read ([\d.]+) GB\/s/.exec(r.stdout);
  assert.ok(read && Number(read[1]) > 0, r.stdout);
  const rate = /^([\d.]+) \(([\d.]+)\)$/.exec(fullRate!);
  assert.ok(rate && Number(rate[1]) > 0, `full GB/s column: ${fullRate}`);
  assert.ok(Math.abs(Number(rate[2]) - Number(rate[1]) / Number(read[1])) < 0.01, `the fraction is GB/s ÷ the read bandwidth: ${fullRate}`);
  const r4k = row(4096)!;
  assert.equal(r4k[1], "does not fit", r.stdout);
  assert.equal(r4k[3], "-", r.stdout);
  assert.ok(Number(r4k[4]) > 0, r.stdout); // Duo still decodes at 4096
  // full: 2 layers x 8 KV heads x D 128 x (K, V) x 2 bytes (bf16) = 8 KiB per token beside the weights
  const held = randomWeightBytes({ numLayers: 2, numHeads: 32, numKvHeads: 8, headDim: 128, hiddenSize: 64, intermediateSize: 128, vocabSize: 256 }, "bf16").held;
  const m = /full attention (\d+) tokens, DuoAttention (\d+) tokens/.exec(r.stdout);
  assert.ok(m, r.stdout);
  assert.equal(Number(m[1]), Math.floor((BUDGET - held) / 8192));
  assert.ok(Number(m[2]) > Number(m[1]) && Number(m[2]) >= 4096, r.stdout);
  assert.match(r.stdout, /largest context measured: full 1024 tokens, Duo 4096 tokens/);
});

test("duo bench model: bad options and a budget below the weights are refused", { skip }, async () => {
  const bad = await runCli(["bench", "model", ...TINY, "--weights-dtype", "q4"]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--weights-dtype must be one of "bf16", "f16", "f32", got "q4"/);
  const small = await runCli(["bench", "model", ...TINY, "--memory", "1MiB"]);
  assert.notEqual(small.code, 0);
  assert.match(small.stderr, /weights of this shape take 2\.\d+ MiB, more than the 1\.00 MiB budget \(--memory\)/);
});
