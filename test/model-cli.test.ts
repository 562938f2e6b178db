import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { argmax } from "../src/model/sampler.ts";
import { probeBackend } from "../src/backend/registry.ts";
import { LlamaModel } from "../src/model/llama.ts";
import { runtime } from "../src/runtime.ts";
import { writeTinyModel } from "./helpers/tiny-model.ts";

// `duo generate` and `duo niah` on a tiny model, spawned in the runtime running this test.
const root = resolve(import.meta.dirname ?? ".", "..");

function duo(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const rt = runtime().name;
  const argv = rt === "node" ? ["bin/duo.mjs", ...args] : rt === "bun" ? ["src/cli/main.ts", ...args] : ["run", "-A", "src/cli/main.ts", ...args];
  const r = spawnSync(process.execPath, argv, { cwd: root, encoding: "utf8", env: { ...process.env, NO_COLOR: "1" } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function tinyWithPattern() {
  const m = writeTinyModel({ dtype: "bf16", seed: 51 });
  const pat = join(m.dir, "pattern");
  mkdirSync(pat);
  writeFileSync(join(pat, "full_attention_heads.tsv"), "9.0e-01\t1.0e-01\n2.0e-01\t8.0e-01\n");
  writeFileSync(join(pat, "config.json"), JSON.stringify({ sink_size: 128, recent_size: 256 }));
  writeFileSync(join(m.dir, "hay.txt"), "The grass is green. The sky is blue. The sun is yellow. There and back again. ");
  return { m, pat };
}

test("duo generate: greedy ids as the library computes them, timings and KV memory on stderr", async () => {
  const { m } = tinyWithPattern();
  try {
    const r = duo(["generate", "--model", m.dir, "--prompt", "the cat", "--max-tokens", "5", "--print-ids", "--backend", "reference", "--kv-dtype", "f32"]);
    assert.equal(r.status, 0, r.stderr);
    const ids = r.stdout.trim().split(" ").map(Number);
    const model = await LlamaModel.load(m.dir, { backend: "reference", kvDtype: "f32" });
    const prompt = model.tokenizer.encode("the cat");
    let logits = await model.forward(prompt);
    const want: number[] = [];
    for (let i = 0; i < 5; i++) {
      want.push(argmax(logits));
      if (i < 4) logits = await model.forward([want[i]!]);
    }
    await model.dispose();
    assert.deepEqual(ids, want);
    assert.match(r.stderr, new RegExp(`prefill: ${prompt.length} tokens in [\\d.]+ ms \\([\\d.]+ tokens/s\\)`));
    assert.match(r.stderr, /decode: 4 tokens in [\d.]+ ms \([\d.]+ tokens\/s\); 5 generated, stopped by length/);
    assert.match(r.stderr, /KV cache: [\d.]+ (B|KiB) \(retrieval .* streaming .*full attention/);
  } finally {
    m.dispose();
  }
});

test("duo generate with a pattern, sampling and the chat template; usage errors exit 2", () => {
  const { m, pat } = tinyWithPattern();
  try {
    const r = duo(["generate", "--model", m.dir, "--pattern", pat, "--sparsity", "0.5", "--sink", "2", "--recent", "4", "--chat", "--prompt", "hello there", "--max-tokens", "4", "--temperature", "0.9", "--top-p", "0.95", "--top-k", "50", "--seed", "5"]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /heads: 2\/4 KV heads retrieval, S=2 R=4/);
    assert.match(r.stderr, /seed 5/);
    const bad = duo(["generate", "--prompt", "x"]);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--model DIR is required/);
    const both = duo(["generate", "--model", m.dir, "--prompt", "x", "--prompt-ids", "1"]);
    assert.equal(both.status, 2);
    assert.match(both.stderr, /exactly one of --prompt, --prompt-file, --prompt-ids/);
  } finally {
    m.dispose();
  }
});

test("duo niah: full attention and DuoAttention over the grid, niah.json and niah.svg", () => {
  const { m, pat } = tinyWithPattern();
  try {
    const out = join(m.dir, "out");
    const r = duo(["niah", "--model", m.dir, "--haystack", join(m.dir, "hay.txt"), "--lengths", "400,450", "--depths", "0:100:3", "--pattern", pat,
      "--sink", "2", "--recent", "4", "--max-tokens", "3", "--out", out, "--backend", "reference", "--prefill-chunk", "64"]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /\| full +\| 4\/4 +\| +6 \|/);
    assert.match(r.stdout, /\| duo +\| 2\/4 +\| +6 \|/);
    const json = JSON.parse(readFileSync(join(out, "niah.json"), "utf8"));
    assert.deepEqual(json.depths, [0, 50, 100]);
    assert.deepEqual(json.lengths, [400, 450]);
    assert.equal(json.sinkSize, 2);
    for (const method of ["full", "duo"]) {
      const cells = json.methods[method].cells;
      assert.equal(cells.length, 6);
      for (const c of cells) assert.ok(typeof c.response === "string" && c.score >= 0 && c.score <= 11 / 12 && c.rouge1 >= 0);
    }
    const svg = readFileSync(join(out, "niah.svg"), "utf8");
    assert.match(svg, /^<svg /);
    assert.match(svg, /Full attention: mean/);
    assert.match(svg, /DuoAttention \(2\/4 retrieval heads\): mean/);
    const noPattern = duo(["niah", "--model", m.dir, "--haystack", join(m.dir, "hay.txt")]);
    assert.equal(noPattern.status, 2);
    assert.match(noPattern.stderr, /the duo method needs --pattern/);
  } finally {
    m.dispose();
  }
});

test("duo make-model writes a random model that duo generate runs, from the directory and from the GGUF file", async () => {
  const out = join(mkdtempSync(join(tmpdir(), "duo-make-")), "m");
  try {
    const r = duo(["make-model", "--out", out, "--dtype", "q8_0", "--seed", "4"]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /RANDOM weights/);
    assert.match(r.stdout, /tiny: 2 layers, hidden 64, 4 heads \/ 2 KV heads x 16, vocab 512; q8_0 weights/);
    assert.match(r.stdout, /model-q8_0\.gguf/);
    const runs = [out, join(out, "model-q8_0.gguf")].map((model) => duo(["generate", "--model", model, "--prompt-ids", "1,40,50", "--max-tokens", "6", "--print-ids", "--backend", "reference", "--kv-dtype", "f32"]));
    for (const g of runs) assert.equal(g.status, 0, g.stderr);
    const model = await LlamaModel.load(join(out, "model-q8_0.gguf"), { backend: "reference", kvDtype: "f32" });
    const want: number[] = [];
    for await (const t of model.generate([1, 40, 50], { maxTokens: 6, greedy: true })) want.push(t.id);
    await model.dispose();
    assert.deepEqual(runs.map((g) => g.stdout.trim().split(" ").map(Number)), [want, want], "the safetensors twin and the GGUF file generate the same ids");
    if ((await probeBackend("native")).usable) { // Q8_0 weights mapped from the file, or copied with --no-mmap: the same bytes, the same ids
      const native = ["", "--no-mmap"].map((flag) => duo(["generate", "--model", join(out, "model-q8_0.gguf"), "--prompt-ids", "1,40,50", "--max-tokens", "6", "--print-ids", "--backend", "native", "--kv-dtype", "f32", ...(flag ? [flag] : [])]));
      for (const g of native) assert.equal(g.status, 0, g.stderr);
      assert.equal(native[0]!.stdout, native[1]!.stdout);
    }
    const bad = duo(["make-model", "--out", out, "--dtype", "q5_k"]);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--dtype must be one of "f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", got "q5_k"/);
  } finally {
    rmSync(dirname(out), { recursive: true, force: true });
  }
});
