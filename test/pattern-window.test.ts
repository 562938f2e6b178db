// Upstream's pattern layout (attn_patterns/<model>/<setting>/) and the window a pattern brings: its config.json's
// sink_size / recent_size are the defaults of S and R in the library and in every command, unless overridden.
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DuoAttention } from "../src/engine/duo.ts";
import { LlamaModel } from "../src/model/llama.ts";
import { loadPattern } from "../src/pattern/io.ts";
import { makePattern } from "../src/pattern/pattern.ts";
import { sparsify } from "../src/pattern/sparsify.ts";
import { getPreset } from "../src/schedule/presets.ts";
import { runCli } from "./helpers/cli.ts";
import { isDuo, rejectsDuo } from "./helpers/errors.ts";
import { patternPath, skipNoPatterns } from "./helpers/patterns.ts";
import { writeTinyModel } from "./helpers/tiny-model.ts";

const SETTING = "lr=0.02-reg=0.05-ctx=1000_32000-multi_passkey10";

/** Write a pattern in upstream's layout: <root>/<model>/<setting>/{full_attention_heads.tsv, config.json}. */
function writeUpstream(root: string, model: string, setting: string, tsv: string, sink: number, recent: number): string {
  const dir = join(root, model, setting);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "full_attention_heads.tsv"), tsv);
  // As upstream writes it: every training argument, of which only sink_size and recent_size are read back.
  writeFileSync(join(dir, "config.json"), JSON.stringify({ lr: 0.02, sink_size: sink, recent_size: recent, deploy_sink_size: null, output_dir: `attn_patterns/${model}/${setting}` }));
  return dir;
}

test("loadPattern takes a model folder with one setting folder, and lists them when there are several", async () => {
  const root = mkdtempSync(join(tmpdir(), "duo-attn-patterns-"));
  try {
    const one = writeUpstream(root, "Tiny-Model", SETTING, "9.0e-01\t1.0e-01\n2.0e-01\t8.0e-01\n", 16, 48);
    const p = await loadPattern(join(root, "Tiny-Model"));
    assert.deepEqual(Array.from(p.gates), [0.9, 0.1, 0.2, 0.8]);
    assert.equal(p.sinkSize, 16);
    assert.equal(p.recentSize, 48);
    assert.equal(p.source, one, "the source names the setting folder that was read");
    assert.equal((await loadPattern(one + "/")).sinkSize, 16, "the setting folder itself loads as before");

    writeUpstream(root, "Tiny-Model", "lr=0.02-reg=0.1-ctx=1000_32000-multi_passkey10", "1\t0\n0\t1\n", 8, 8);
    mkdirSync(join(root, "Tiny-Model", "not-a-setting"));
    await rejectsDuo(loadPattern(join(root, "Tiny-Model")), "INVALID_ARGUMENT",
      /Tiny-Model holds 2 pattern settings; pass one of them: .*Tiny-Model\/lr=0\.02-reg=0\.05-.*, .*Tiny-Model\/lr=0\.02-reg=0\.1-/);
    mkdirSync(join(root, "Empty"));
    await rejectsDuo(loadPattern(join(root, "Empty")), "IO",
      /Empty has no full_attention_heads\.tsv, nor a setting folder holding one; .*attn_patterns\/<model>\/<setting>/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("DuoAttention.create with a pattern: S and R from its config.json unless given, heads by its sparsity", async () => {
  const shape = { numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8 };
  const pattern = makePattern([[0.9, 0.1], [0.2, 0.8]], { sinkSize: 16, recentSize: 48 });
  const fromPattern = await DuoAttention.create({ shape, pattern, sparsity: 0.5, backend: "reference" });
  assert.equal(fromPattern.sinkSize, 16);
  assert.equal(fromPattern.recentSize, 48);
  assert.deepEqual(fromPattern.schedule.mask, sparsify(pattern, { sparsity: 0.5 }).mask);
  const overridden = await DuoAttention.create({ shape, pattern, heads: [[true, true], [false, true]], sinkSize: 4, backend: "reference" });
  assert.equal(overridden.sinkSize, 4, "an explicit sinkSize wins");
  assert.equal(overridden.recentSize, 48, "recentSize still comes from the pattern");
  assert.equal(overridden.schedule.retrievalHeads, 3, "explicit heads win over the pattern's selection");
  const plain = await DuoAttention.create({ shape, heads: [[true, false], [false, true]], backend: "reference" });
  assert.deepEqual([plain.sinkSize, plain.recentSize], [64, 256], "without a pattern: upstream's deployment window");
  await Promise.all([fromPattern.dispose(), overridden.dispose(), plain.dispose()]);

  await assert.rejects(DuoAttention.create({ shape: { ...shape, numLayers: 3 }, pattern, backend: "reference" }),
    isDuo("SHAPE_MISMATCH", /2 layers x 2 KV heads, but the model has 3 layers x 2 KV heads/));
  await assert.rejects(DuoAttention.create({ shape, pattern, heads: [[true, true], [true, true]], sparsity: 0.5, backend: "reference" }),
    isDuo("INVALID_ARGUMENT", /sparsity selects the heads of a pattern/));
  await assert.rejects(DuoAttention.create({ shape, backend: "reference" }), isDuo("INVALID_ARGUMENT", /heads is required.*or give a pattern/));
});

test("LlamaModel.load, duo generate, duo niah and duo pattern take S and R from the pattern's config.json", async () => {
  const m = writeTinyModel({ dtype: "f32", seed: 17 });
  try {
    const root = join(m.dir, "attn_patterns");
    writeUpstream(root, "Tiny-Model", SETTING, "9.0e-01\t1.0e-01\n2.0e-01\t8.0e-01\n", 16, 24);
    const modelFolder = join(root, "Tiny-Model");
    writeFileSync(join(m.dir, "hay.txt"), "The grass is green. The sky is blue. The sun is yellow. ");

    const model = await LlamaModel.load(m.dir, { pattern: modelFolder, backend: "reference" });
    assert.deepEqual([model.engine.sinkSize, model.engine.recentSize], [16, 24]);
    await model.dispose();
    const overridden = await LlamaModel.load(m.dir, { pattern: modelFolder, backend: "reference", recentSize: 8 });
    assert.deepEqual([overridden.engine.sinkSize, overridden.engine.recentSize], [16, 8]);
    await overridden.dispose();

    const gen = await runCli(["generate", "--model", m.dir, "--pattern", modelFolder, "--prompt-ids", "1,5,6", "--max-tokens", "2", "--print-ids", "--backend", "reference"]);
    assert.equal(gen.code, 0, gen.stderr);
    assert.match(gen.stderr, /S=16 R=24 \(the pattern's config\.json\)/);
    const genSink = await runCli(["generate", "--model", m.dir, "--pattern", modelFolder, "--sink", "3", "--prompt-ids", "1,5", "--max-tokens", "1", "--print-ids", "--backend", "reference"]);
    assert.equal(genSink.code, 0, genSink.stderr);
    assert.match(genSink.stderr, /S=3 R=24, kv/);

    const out = join(m.dir, "niah-out");
    const niah = await runCli(["niah", "--model", m.dir, "--haystack", join(m.dir, "hay.txt"), "--pattern", modelFolder, "--methods", "duo,full",
      "--lengths", "320", "--depths", "50", "--max-tokens", "1", "--out", out, "--backend", "reference"]);
    assert.equal(niah.code, 0, niah.stderr);
    const json = JSON.parse(readFileSync(join(out, "niah.json"), "utf8"));
    assert.deepEqual([json.sinkSize, json.recentSize], [16, 24], "the DuoAttention run's window, also when full attention ran last");

    const shown = await runCli(["pattern", modelFolder, "--head-dim", "8"]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /window +sink 16 \+ recent 24 tokens \(config\.json\)/);
  } finally {
    m.dispose();
  }
});

test("the README's example path: a clone's attn_patterns/<model> folder loads the published pattern and its window", { skip: skipNoPatterns }, async () => {
  const name = "Llama-3-8B-Instruct-Gradient-1048k";
  const root = mkdtempSync(join(tmpdir(), "duo-clone-"));
  try {
    // A clone of upstream holds attn_patterns/<model>/<setting>/; build that layout from the published files.
    const files = patternPath(name);
    writeUpstream(join(root, "duo-attention", "attn_patterns"), name, SETTING, readFileSync(join(files, "full_attention_heads.tsv"), "utf8"), 0, 0);
    copyFileSync(join(files, "config.json"), join(root, "duo-attention", "attn_patterns", name, SETTING, "config.json"));
    const cloned = await loadPattern(join(root, "duo-attention", "attn_patterns", name));
    const direct = await loadPattern(files);
    assert.deepEqual(Array.from(cloned.gates), Array.from(direct.gates));
    assert.deepEqual([cloned.sinkSize, cloned.recentSize], [128, 256], "the published config's training window");
    const duo = await DuoAttention.create({ shape: getPreset("llama-3-8b"), pattern: cloned, sparsity: 0.5, backend: "null" });
    assert.deepEqual([duo.sinkSize, duo.recentSize], [128, 256]);
    assert.equal(duo.schedule.retrievalHeads, 128, "sparsity 0.5 keeps half of the 256 KV heads");
    await duo.dispose();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
