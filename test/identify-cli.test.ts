import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadPattern, savePattern } from "../src/pattern/io.ts";
import { makePattern } from "../src/pattern/pattern.ts";
import { parseConfig } from "../src/model/config.ts";
import { gateModelFromTensors } from "../src/identify/model.ts";
import { identifyHeads } from "../src/identify/identify.ts";
import { compareGates } from "../src/identify/compare.ts";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { LlamaModel } from "../src/model/llama.ts";
import { runCli, runScript } from "./helpers/cli.ts";
import { patternPath, skipNoPatterns } from "./helpers/patterns.ts";
import { writeTinyModel } from "./helpers/tiny-model.ts";
import { rng } from "./helpers/random.ts";
import { runtime } from "../src/runtime.ts";

// Small enough for the byte-level test tokenizer: 2 needles of 4 words, haystack 700–900 tokens.
const DATA = ["--ctx-min", "700", "--ctx-max", "900", "--lengths", "3", "--passkeys", "2", "--passkey-words", "4", "--sink", "16", "--recent", "32", "--block", "16"];

test("duo identify writes an upstream-format pattern loadPattern reads, identify.json, progress on stderr; --resume continues", async () => {
  const m = writeTinyModel({ layers: 2, heads: 4, kvHeads: 2, seed: 3 });
  const out = mkdtempSync(join(tmpdir(), "duo-identify-"));
  try {
    const r = await runCli(["identify", "--model", m.dir, "--out", out, "--steps", "3", ...DATA]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /step 1\/3 {2}loss \d\.\d+e[-+]\d+ {2}gates \[0\.\d+, [01]\.\d+\] {2}\d+ tokens {2}\d+ tok\/s {2}step\/forward \d+\.\d+ {2}ETA /);
    assert.match(r.stdout, /^done: 3 steps in .*\nhaystack: built-in generated haystack/);
    const p = await loadPattern(out);
    assert.deepEqual([p.numLayers, p.numKvHeads, p.sinkSize, p.recentSize], [2, 2, 16, 32]);
    const tsv = readFileSync(join(out, "full_attention_heads.tsv"), "utf8");
    assert.match(tsv, /^(\d\.\d{18}e[-+]\d\d\t\d\.\d{18}e[-+]\d\d\n){2}$/);
    const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
    assert.equal(config.context_length_max, 900);
    assert.equal(config.lr, 0.02);
    const report = JSON.parse(readFileSync(join(out, "identify.json"), "utf8"));
    assert.equal(report.method, "optimize");
    assert.equal(report.lossCurve.length, 3);
    assert.match(report.data.haystackSha256, /^[0-9a-f]{64}$/);
    assert.deepEqual(report.gates.flat().map((g: number) => Math.min(1, Math.max(0, g))), Array.from(p.gates));
    const llm = await LlamaModel.load(m.dir, { pattern: out, sparsity: 0.5, backend: "reference" }); // the pattern deploys
    assert.equal(llm.schedule.retrievalHeads, 2);
    await llm.dispose();
    const again = await runCli(["identify", "--model", m.dir, "--out", out, "--steps", "3", ...DATA, "--resume"]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /resuming at step 3/);
    assert.equal(readFileSync(join(out, "full_attention_heads.tsv"), "utf8"), tsv);
    const other = await runCli(["identify", "--model", m.dir, "--out", out, "--steps", "5", ...DATA, "--resume"]);
    assert.equal(other.code, 2);
    assert.match(other.stderr, /^duo identify: --resume: .*identify-state.json was written by a run with other arguments/);
  } finally {
    m.dispose();
    rmSync(out, { recursive: true, force: true });
  }
});

test("duo identify: Ctrl-C stops after the current step, saves its gates and exits 130", async () => {
  const m = writeTinyModel({ layers: 2, heads: 4, kvHeads: 2, seed: 4 });
  const out = mkdtempSync(join(tmpdir(), "duo-identify-"));
  try {
    // deno-lint-ignore no-explicit-any
    const g = globalThis as any;
    const args = ["identify", "--model", m.dir, "--out", out, "--steps", "1000", ...DATA];
    const [cmd, pre] = g.Deno ? [g.Deno.execPath(), ["run", "-A", "src/cli/main.ts"]] : g.Bun ? [process.execPath, ["src/cli/main.ts"]] : [process.execPath, ["--import", "tsx", "src/cli/main.ts"]];
    const child = spawn(cmd, [...pre, ...args], { cwd: fileURLToPath(new URL("..", import.meta.url)) });
    let stderr = "", stdout = "", sent = false;
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => {
      stderr += d;
      if (!sent && /step 2\/1000/.test(stderr)) {
        sent = true;
        process.kill(child.pid!, "SIGINT"); // (not child.kill: Deno then reports the exit code as null)
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    assert.equal(code, 130, stderr);
    assert.match(stderr, /stopping after this step/);
    const steps = Number(/^stopped: (\d+) steps/.exec(stdout)?.[1]);
    assert.ok(steps >= 2 && steps < 1000, stdout);
    const state = JSON.parse(readFileSync(join(out, "identify-state.json"), "utf8"));
    assert.equal(state.step, steps);
    const p = await loadPattern(out);
    assert.deepEqual(Array.from(p.gates), state.gates.map((x: number) => Math.min(1, Math.max(0, x))));
  } finally {
    m.dispose();
    rmSync(out, { recursive: true, force: true });
  }
});

test("duo identify: bad model dir, non-Llama architecture, short haystack, context over what fits → one error line naming the fix", async () => {
  const gpt = writeTinyModel({ config: { architectures: ["GPT2LMHeadModel"] } }), ok = writeTinyModel({});
  const out = mkdtempSync(join(tmpdir(), "duo-identify-"));
  const hay = join(out, "hay.txt");
  writeFileSync(hay, "too short a story");
  try {
    const runs = await Promise.all([
      runCli(["identify", "--model", join(out, "nope"), "--out", out]),
      runCli(["identify", "--model", out, "--out", out]),
      runCli(["identify", "--model", gpt.dir, "--out", out]),
      runCli(["identify", "--model", ok.dir, "--out", out, ...DATA, "--haystack", hay]),
      runCli(["identify", "--model", ok.dir, "--out", out, "--ctx-max", "5000"]),
      runCli(["identify", "--model", ok.dir, "--out", out, ...DATA, "--kernels", "reference", "--max-memory", "0.001"]),
      runCli(["identify", "--model", ok.dir, "--out", out, ...DATA, "--kernels", "reference", "--max-memory", "0.00001"]),
      runCli(["identify", "--model", ok.dir, "--out", out, ...DATA, "--max-memory", "0.001"]),
      runCli(["identify", "--model", ok.dir, "--out", out, ...DATA, "--max-memory", "0.00001"]),
    ]);
    const want = [
      /--model .*nope does not exist; give a Hugging Face model directory/,
      /no config.json \(a Hugging Face model directory needs config.json, model.safetensors and tokenizer.json; or pass a .gguf file\)/,
      /architectures \["GPT2LMHeadModel"\] is not supported; supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM/,
      /the haystack text is \d+ tokens, shorter than the requested context of 900 tokens; give a longer --haystack file or lower --ctx-max/,
      /--ctx-max 5000 is over the model's max_position_embeddings \(4096\); lower --ctx-max/,
      /a 900-token context needs about .* GiB \(float64 weights and activations\), over --max-memory .*; lower --ctx-max/,
      /the model's weights alone take .* GiB in float64, over --max-memory .*; raise --max-memory if this machine has the memory/,
      /a 900-token context needs about .* GiB \(f32 activations, weights in the file's dtype\), over --max-memory .*; lower --ctx-max/,
      /the model's weights alone take .* GiB in the fast kernels, over --max-memory .*; raise --max-memory if this machine has the memory/,
    ];
    runs.forEach((r, i) => {
      assert.equal(r.code, i === 3 ? 2 : 1, `${i}: ${r.stderr}`); // a bad argument exits 2, the rest 1
      assert.match(r.stderr, new RegExp(`^duo identify: [^\n]*${want[i]!.source}[^\n]*\n$`));
      assert.equal(r.stdout, "");
    });
  } finally {
    gpt.dispose();
    ok.dispose();
    rmSync(out, { recursive: true, force: true });
  }
});

test("identifyHeads: a run stopped after 2 steps and resumed from its state ends with the same gates as one that ran through", async () => {
  const tm = writeTinyModel({ layers: 2, heads: 4, kvHeads: 2, seed: 9 });
  const m = gateModelFromTensors(parseConfig(tm.config), (n) => tm.weights.get(n)?.data);
  tm.dispose();
  const r = rng(1), ids = Array.from({ length: 8 }, () => Int32Array.from({ length: 48 }, () => 3 + Math.floor(r() * 250)));
  const data = { sample: (s: number) => ({ ids: ids[s]!, labelStart: 40 }) };
  const window = { sink: 2, recent: 8, blockSize: 4 };
  const through = await identifyHeads(m, { data, steps: 6, window });
  let n = 0;
  const first = await identifyHeads(m, { data, steps: 6, window, shouldStop: () => n++ >= 2 });
  assert.equal(first.stopped, true);
  assert.equal(first.steps, 2);
  const rest = await identifyHeads(m, { data, steps: 6, window, resume: JSON.parse(JSON.stringify(first.state)) });
  assert.equal(rest.steps, 6);
  assert.deepEqual(Array.from(rest.gates), Array.from(through.gates));
  assert.deepEqual(rest.losses, through.losses);
});

test("compareGates: Spearman, AUC and top-k overlap on hand-checked tables", () => {
  const b = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2];
  const same = compareGates(b, b, 2, [0.5]);
  assert.deepEqual([same.spearman, same.sparsities[0]!.auc, same.sparsities[0]!.overlap, same.sparsities[0]!.kept], [1, 1, 1, 4]);
  const reversed = compareGates([...b].reverse(), b, 2, [0.5]);
  assert.deepEqual([reversed.spearman, reversed.sparsities[0]!.auc, reversed.sparsities[0]!.overlap], [-1, 0, 0]);
  // A swaps B's 4th and 5th heads: one of 16 (retrieval, streaming) pairs flips, one of 4 kept heads differs
  const swapped = compareGates([0.9, 0.8, 0.7, 0.5, 0.6, 0.4, 0.3, 0.2], b, 2, [0.5]);
  assert.deepEqual([swapped.sparsities[0]!.auc, swapped.sparsities[0]!.overlap], [15 / 16, 3 / 4]);
  assert.ok(Math.abs(swapped.spearman - (1 - (6 * 2) / (8 * 63))) < 1e-12);
});

test("duo pattern --compare prints Spearman, AUC and top-k overlap (published Llama-3-8B-1048k vs Llama-3.1-8B: 0.67)", { skip: skipNoPatterns }, async () => {
  const r = await runCli(["pattern", "--compare", patternPath("Llama-3-8B-Instruct-Gradient-1048k"), patternPath("Meta-Llama-3.1-8B-Instruct"), "--sparsity", "0.5,0.75"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /256 KV heads; Spearman 0\.671\n {2}sparsity {2}kept {2}AUC {4}top-k overlap\n {2}0\.50 +128 +0\.8\d\d +0\.\d{3}\n {2}0\.75 +64 /);
});

test("duo pattern --compare: patterns of different shapes are an error naming both", async () => {
  const dir = mkdtempSync(join(tmpdir(), "duo-compare-"));
  try {
    await savePattern(makePattern([[0.1, 0.2], [0.3, 0.4]], { sinkSize: 4, recentSize: 8 }), join(dir, "a"));
    await savePattern(makePattern([[0.1, 0.2, 0.3]], { sinkSize: 4, recentSize: 8 }), join(dir, "b"));
    const r = await runCli(["pattern", "--compare", join(dir, "a"), join(dir, "b")]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^duo pattern: .*a is 2 x 2 but .*b is 1 x 3 \(layers x KV heads\); compare patterns of the same model\n$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("identifyHeads: bad options are DuoErrors naming what is valid", async () => {
  const tm = writeTinyModel({ layers: 1, heads: 2, kvHeads: 1, hidden: 16 });
  const m = gateModelFromTensors(parseConfig(tm.config), (n) => tm.weights.get(n)?.data);
  tm.dispose();
  const data = { sample: () => ({ ids: Int32Array.from([1, 5, 6, 7]), labelStart: 2 }) };
  const bad = (o: object, re: RegExp) => assert.rejects(identifyHeads(m, { data, ...o }), (e: unknown) => e instanceof Error && e.name === "DuoError" && re.test(e.message));
  await bad({ method: "ablate" }, /method must be one of "optimize", "score", got "ablate"/);
  await bad({ steps: 0 }, /steps must be an integer >= 1, got 0/);
  await bad({ window: { sink: 4, recent: 0, blockSize: 0 } }, /recent must be an integer >= 1, got 0/);
  await bad({ data: undefined }, /identifyHeads needs data: a SampleSource/);
  await bad({ resume: { step: 1, gates: [1, 1, 1], adam: { step: 1, m: [0], v: [0] }, losses: [] } }, /the saved state has 3 gates at step 1; this run needs 1 gates/);
  const cfg = parseConfig({ architectures: ["LlamaForCausalLM"], hidden_size: 16, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 10 });
  assert.throws(() => gateModelFromTensors(cfg, () => undefined), /the model has no tensor "model\.layers\.0\.input_layernorm\.weight" \(shape \[16\]\)/);
  assert.throws(() => gateModelFromTensors(cfg, () => new Float64Array(3)), /tensor "model\.layers\.0\.input_layernorm\.weight" has 3 elements; config\.json implies \[16\]/);
});

test("examples/identify.ts runs: passkey data, 8 optimize steps, a pattern directory loadPattern reads", async () => {
  const r = await runScript("examples/identify.ts");
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.match(/^step \d\/8: \d+ tokens, loss \d\.\d{3}e-\d, gates /gm)?.length, 8);
  assert.match(r.stdout, /\nwrote .*: 2 layers x 2 KV heads, gates( [01]\.\d{4}){4}\n$/);
});

test("duo identify --method optimize --kernels wasm: the fast path's gates follow the float64 run's; wasm-parallel is refused", { skip: runtime().wasmSimd ? false : "skipped: no WebAssembly SIMD" }, async () => {
  const m = writeTinyModel({ layers: 2, heads: 4, kvHeads: 2, seed: 6 });
  const out = mkdtempSync(join(tmpdir(), "duo-identify-"));
  try {
    const args = ["identify", "--model", m.dir, "--steps", "2", "--gate-dtype", "f32", ...DATA];
    const ref = await runCli([...args, "--out", join(out, "ref")]);
    assert.equal(ref.code, 0, ref.stderr);
    const fast = await runCli([...args, "--out", join(out, "fast"), "--kernels", "wasm"]);
    assert.equal(fast.code, 0, fast.stderr);
    assert.match(fast.stderr, /optimize on .* on model kernels wasm, attention backend wasm/);
    const gates = (dir: string) => JSON.parse(readFileSync(join(out, dir, "identify.json"), "utf8")).gates.flat() as number[];
    const [g0, g1] = [gates("ref"), gates("fast")];
    assert.ok(g0.some((g) => g < 1), "the gates moved");
    g0.forEach((g, i) => assert.ok(Math.abs(g - g1[i]!) <= 1e-3, `gate ${i}: float64 ${g}, wasm ${g1[i]}`));
    const par = await runCli([...args, "--out", join(out, "par"), "--kernels", "wasm-parallel"]);
    assert.equal(par.code, 2);
    assert.match(par.stderr, /--method optimize runs on --kernels native, wasm or reference .*got --kernels wasm-parallel/);
  } finally {
    m.dispose();
    rmSync(out, { recursive: true, force: true });
  }
});
