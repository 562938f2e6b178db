import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { parseBenchArgs, parseTokenList } from "../src/cli/bench/options.ts";
import { DuoError } from "../src/errors.ts";
import { runCli } from "./helpers/cli.ts";

const invalid = (argv: string[], pattern: RegExp) =>
  assert.throws(() => parseBenchArgs(argv), (e: unknown) => e instanceof DuoError && e.code === "INVALID_ARGUMENT" && pattern.test(e.message), argv.join(" "));

test("bench cli: options parse with defaults; bad input is INVALID_ARGUMENT naming what is valid", () => {
  const o = parseBenchArgs(["decode"]);
  assert.equal(o.what, "decode");
  assert.equal(o.backend, "auto");
  assert.deepEqual(o.dtypes, ["bf16"]);
  assert.equal(o.json, false);
  assert.equal(o.peers, true);
  const p = parseBenchArgs(["--suite", "paper", "--out", "x", "--kv-dtype", "f16,f32,f16", "--contexts", "32K,8192", "--no-peers"]);
  assert.equal(p.suite, "paper");
  assert.equal(p.what, null);
  assert.deepEqual(p.dtypes, ["f16", "f32"]);
  assert.deepEqual(p.contexts, [8192, 32768]);
  assert.equal(p.peers, false);
  assert.deepEqual(parseTokenList("contexts", "1M, 4k,4096"), [4096, 1 << 20]);

  invalid([], /missing what to measure: decode \| prefill \| all/);
  invalid(["decode", "prefill"], /give one of decode \| prefill \| all/);
  invalid(["train"], /must be one of "decode", "prefill", "all"/);
  invalid(["decode", "--contexts", "8192,abc"], /--contexts takes positive token counts/);
  invalid(["decode", "--contexts", "0"], /--contexts takes positive token counts/);
  invalid(["decode", "--kv-dtype", "int2"], /--kv-dtype must be one of "f32", "f16", "bf16", "int8", "int4"/);
  assert.deepEqual(parseBenchArgs(["decode", "--kv-dtype", "bf16,int4"]).dtypes, ["bf16", "int4"]);
  const cap = parseBenchArgs(["capacity", "--memory", "512M"]);
  assert.equal(cap.what, "capacity");
  assert.equal(cap.memory, 512 * 2 ** 20);
  invalid(["capacity", "--memory", "lots"], /--memory takes a byte count of at least 1 MiB/);
  invalid(["decode", "--backend", "tpu"], /--backend must be one of/);
  invalid(["decode", "--sparsity", "1.5"], /--sparsity must be a number in \[0, 1\]/);
  invalid(["decode", "--layers", "0"], /--layers must be an integer >= 1/);
  invalid(["decode", "--out", "dir"], /--out applies to --suite paper only/);
  invalid(["decode", "--suite", "paper"], /--suite paper runs its own set/);
  invalid(["--suite", "mlperf"], /--suite must be one of "paper"/);
  invalid(["decode", "--warp"], /unknown option --warp; valid options:/);
});

test("bench cli: a usage error prints one line and exits 2", async () => {
  const r = await runCli(["bench", "decode", "--contexts", "12,x"]);
  assert.equal(r.code, 2);
  assert.equal(r.stdout, "");
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  assert.match(r.stderr, /^duo bench: --contexts takes positive token counts/);
});

test("bench cli: --json prints one JSON line per measurement with the common fields (null backend, tiny sizes)", async () => {
  const r = await runCli(["bench", "all", "--backend", "null", "--shape", "llama-3-8b", "--contexts", "512", "--prefill-contexts", "512",
    "--chunk", "256", "--layers", "1", "--budget", "2", "--no-peers", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
  const kinds = lines.map((l) => `${l.kind}:${l.mode}:${l.prefill ?? ""}`);
  for (const k of ["capacity:full:", "capacity:duo:", "decode:full:", "decode:duo:", "prefill:full:upstream", "prefill:duo:upstream", "prefill:duo:window"]) {
    assert.ok(kinds.includes(k), `a ${k} record in ${kinds.join(", ")}`);
  }
  for (const l of lines) {
    for (const f of ["kind", "backend", "runtime", "threads", "mode", "context", "chunk", "ms", "kvBytes", "gbps", "limitGbps"]) assert.ok(f in l, `${l.kind} has ${f}`);
    assert.equal(l.backend, "null");
  }
  const dec = lines.find((l) => l.kind === "decode" && l.mode === "duo");
  assert.ok(dec.ms > 0 && dec.kvBytes > 0 && dec.gbps > 0);
  assert.equal(lines.find((l) => l.kind === "prefill" && l.mode === "full").chunk, 256);
});

test("bench cli: --suite paper writes results.jsonl, results.md and three well-formed SVG plots", async () => {
  const out = mkdtempSync(join(tmpdir(), "duo-bench-"));
  try {
    const r = await runCli(["bench", "--suite", "paper", "--backend", "null", "--shape", "llama-3-8b", "--contexts", "256,512",
      "--prefill-contexts", "256", "--chunk", "128", "--layers", "1", "--budget", "2", "--out", out]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /## 1\. Decode latency and KV memory vs context/);
    assert.match(r.stdout, /\| shape +\| context \| full ms\/token/);
    for (const f of ["results.jsonl", "results.md", "decode-vs-context.svg", "prefill-vs-chunk.svg", "decode-vs-ratio.svg"]) assert.ok(existsSync(join(out, f)), f);
    const records = readFileSync(join(out, "results.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    const studies = new Set(records.filter((r) => r.kind !== "ceiling").map((r) => r.study));
    assert.deepEqual([...studies].sort(), ["context", "prefill", "ratio"]);
    for (const f of ["decode-vs-context.svg", "prefill-vs-chunk.svg", "decode-vs-ratio.svg"]) {
      const svg = readFileSync(join(out, f), "utf8");
      assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
      assert.equal((svg.match(/<g /g) ?? []).length, (svg.match(/<\/g>/g) ?? []).length, `${f}: balanced groups`);
      assert.ok((svg.match(/class="axis x-axis"/g) ?? []).length >= 1, `${f}: axes`);
      assert.ok((svg.match(/class="legend-label"/g) ?? []).length >= 2, `${f}: legend`);
      assert.ok(!/NaN|Infinity/.test(svg), `${f}: finite coordinates`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
