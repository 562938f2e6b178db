import { test } from "node:test";
import assert from "node:assert/strict";
import { DuoError } from "../src/errors.ts";
import { numberArg, parseArgs } from "../src/cli/args.ts";
import { patternCommand } from "../src/cli/pattern.ts";
import { runCli } from "./helpers/cli.ts";
import { patternPath, skipNoPatterns } from "./helpers/patterns.ts";
import { rejectsDuo } from "./helpers/errors.ts";

test("duo pattern --format hex prints SPEC §1.6's golden masks as exactly one line", { skip: skipNoPatterns }, async () => {
  const golden: [string, string, string][] = [
    ["Llama-3-8B-Instruct-Gradient-1048k", "0.5", "20.10.06.06.0c.69.06.96.eb.17.9b.c1.84.eb.4f.ab.e6.d7.54.b5.be.b0.19.d7.8e.dc.91.47.de.2f.ff.84"],
    ["Mistral-7B-Instruct-v0.2", "0.75", "00.88.68.88.13.10.94.00.50.20.80.54.45.00.0a.07.02.02.32.6d.64.08.02.51.40.08.18.20.0a.90.e3.49"],
  ];
  const runs = await Promise.all(golden.map(([name, s]) => runCli(["pattern", patternPath(name as "Mistral-7B-Instruct-v0.2"), "--sparsity", s, "--format", "hex"])));
  runs.forEach((r, i) => {
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, golden[i]![2] + "\n");
    assert.equal(r.stderr, "");
  });
});

test("duo pattern exits non-zero with one error line on bad input", { skip: skipNoPatterns }, async () => {
  const dir = patternPath("Mistral-7B-Instruct-v0.2");
  const [badValue, unknown, missing] = await Promise.all([
    runCli(["pattern", dir, "--sparsity", "2"]),
    runCli(["pattern", dir, "--colour"]),
    runCli(["pattern", `${dir}-nope`]),
  ]);
  assert.equal(badValue.code, 2);
  assert.equal(badValue.stderr, 'duo pattern: --sparsity must be a number in [0, 1], got "2"\n');
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^duo pattern: unknown option --colour; valid options: --sparsity <value>, .*--format <value>, --help\n$/);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^duo pattern: pattern directory .*-nope does not exist; a pattern directory holds full_attention_heads.tsv and config.json \(upstream: attn_patterns\/<model>\/<setting>\/\)\n$/);
  for (const r of [badValue, unknown, missing]) assert.equal(r.stdout, "");
});

test("table: per-layer counts, achieved sparsity and KV memory of full vs Duo", { skip: skipNoPatterns }, async () => {
  const out = await patternCommand([patternPath("Llama-3-8B-Instruct-Gradient-1048k"), "--sparsity", "0.5", "--format", "table"]);
  const lines = out.split("\n");
  assert.match(out, /model +llama-3-8b \(from the directory name\): 32 query heads, G = 4, head dim 128/);
  assert.match(out, /window +sink 128 \+ recent 256 tokens \(config.json\)/);
  assert.match(out, /selection +sparsity 0.5, tie-break numpy-seed42/);
  assert.match(out, /result +128 of 256 KV heads are retrieval heads; achieved sparsity 0.5000/);
  assert.match(out, /18 of 256 gates clipped/);
  // SPEC §1.6 per-layer counts of this pattern at s = 0.5, read back from the table rows.
  const counts = lines.map((l) => l.match(/^ +(\d+) +(\d+)\/8 +([R.]{8})$/)).filter((m) => m !== null).map((m) => {
    assert.equal(m[3]!.split("").filter((c) => c === "R").length, Number(m[2]), `row ${m[1]}`);
    return Number(m[2]);
  });
  assert.equal(counts.join(","), "1,1,2,2,2,4,2,4,6,4,5,3,2,6,5,5,5,6,3,5,6,3,3,6,4,5,3,4,6,5,8,2");
  // SPEC §4.4: 128 KiB/token full, 64 KiB at r = 0.5; at 131072 tokens 16 GiB vs 8 GiB + 128 heads·384·2·2·128 B.
  assert.match(out, /per token, once S \+ R = 384 tokens are held +128\.0 KiB +64\.0 KiB +0\.500/);
  assert.match(out, /at 131072 tokens +16\.0 GiB +8\.0 GiB +0\.501/);
});

test("table without --sparsity or --threshold uses the natural threshold 0.5 and says so", { skip: skipNoPatterns }, async () => {
  const out = await patternCommand([patternPath("Mistral-7B-Instruct-v0.3"), "--sink", "64", "--recent", "256", "--context", "1000000"]);
  assert.match(out, /selection +threshold 0.5, the natural one \(gates >= 0.5\); no --sparsity or --threshold given/);
  assert.match(out, /result +240 of 256 KV heads are retrieval heads/);
  assert.match(out, /window +sink 64 \+ recent 256 tokens \(options\)/);
  assert.match(out, /model +mistral-7b-v0.3/);
  assert.match(out, /at 1000000 tokens/);
});

test("json: layers, kvHeads, retrieval lists, sparsity and window", { skip: skipNoPatterns }, async () => {
  const out = await patternCommand([patternPath("Llama-2-7B-32K-Instruct"), "--sparsity", "0.75", "--tie-break", "stable", "--format", "json"]);
  assert.equal(out.split("\n").length, 2);
  const j = JSON.parse(out);
  assert.deepEqual(Object.keys(j), ["layers", "kvHeads", "retrieval", "sparsity", "sinkSize", "recentSize"]);
  assert.equal(j.layers, 32);
  assert.equal(j.kvHeads, 32);
  assert.equal(j.retrieval.flat().length, 256);
  assert.ok(j.retrieval.every((r: number[]) => r.every((h, i) => h >= 0 && h < 32 && (i === 0 || h > r[i - 1]!))));
  assert.equal(j.sparsity, 0.75);
  assert.deepEqual([j.sinkSize, j.recentSize], [128, 256]);
  const threshold = JSON.parse(await patternCommand([patternPath("Llama-2-7B-32K-Instruct"), "--threshold", "0.9", "--format", "json"]));
  assert.ok(threshold.retrieval.flat().length > 145, "gates >= 0.9 include the 145 ones");
});

test("bad options are DuoErrors naming the valid forms", { skip: skipNoPatterns }, async () => {
  const dir = patternPath("Llama-2-7B-32K-Instruct");
  await rejectsDuo(patternCommand([]), "INVALID_ARGUMENT", /missing the pattern directory or URL; usage: duo pattern <dir\|url>/);
  await rejectsDuo(patternCommand([dir, dir]), "INVALID_ARGUMENT", /give one pattern directory or URL/);
  await rejectsDuo(patternCommand([dir, "--sparsity", "0.5", "--threshold", "0.5"]), "INVALID_ARGUMENT", /--sparsity or --threshold, not both/);
  await rejectsDuo(patternCommand([dir, "--threshold", "x"]), "INVALID_ARGUMENT", /--threshold must be a number, got "x"/);
  await rejectsDuo(patternCommand([dir, "--tie-break", "stable"]), "INVALID_ARGUMENT", /--tie-break applies only with --sparsity/);
  await rejectsDuo(patternCommand([dir, "--sparsity", "0.5", "--tie-break", "coin"]), "INVALID_ARGUMENT", /--tie-break must be one of "numpy-seed42", "stable"/);
  await rejectsDuo(patternCommand([dir, "--format", "csv"]), "INVALID_ARGUMENT", /--format must be one of "table", "hex", "json"/);
  await rejectsDuo(patternCommand([dir, "--sink", "-1"]), "INVALID_ARGUMENT", /--sink must be an integer >= 0/);
  await rejectsDuo(patternCommand([dir, "--context", "1.5"]), "INVALID_ARGUMENT", /--context must be an integer >= 0/);
  await rejectsDuo(patternCommand([dir, "--model", "gpt"]), "INVALID_ARGUMENT", /unknown model preset "gpt"; valid presets: llama-2-7b, llama-3-8b/);
  await rejectsDuo(patternCommand([dir, "--model", "llama-3-8b"]), "SHAPE_MISMATCH", /32 layers x 32 KV heads, but the model has 32 layers x 8 KV heads/);
  assert.match(await patternCommand(["--help"]), /^usage: duo pattern <dir\|url> \[options\]/);
});

test("parseArgs: values, switches, positionals, --, and errors listing valid options", () => {
  const spec = { values: ["n", "name"], flags: ["v"] };
  const a = parseArgs(["pos", "--n", "-3", "--name=x=y", "--v", "--", "--n"], spec);
  assert.deepEqual(a.positional, ["pos", "--n"]);
  assert.deepEqual([...a.values], [["n", "-3"], ["name", "x=y"]]);
  assert.deepEqual([...a.flags], ["v"]);
  assert.equal(numberArg(a, "n", { integer: true, max: 0 }), -3);
  assert.equal(numberArg(a, "missing"), undefined);
  const bad: [string[], RegExp][] = [
    [["--x"], /unknown option --x; valid options: --n <value>, --name <value>, --v/],
    [["--x=1"], /unknown option --x;/],
    [["--n"], /--n needs a value/],
    [["--n", "1", "--n=2"], /--n given twice/],
    [["--v=1"], /--v takes no value/],
  ];
  for (const [argv, message] of bad) {
    assert.throws(() => parseArgs(argv, spec), (e: unknown) => e instanceof DuoError && e.code === "INVALID_ARGUMENT" && message.test(e.message), argv.join(" "));
  }
  assert.throws(() => numberArg(parseArgs(["--n", ""], spec), "n"), /--n must be a number, got ""/);
  assert.throws(() => numberArg(parseArgs(["--n", "5"], spec), "n", { min: 0, max: 1 }), /--n must be a number in \[0, 1\], got "5"/);
});
