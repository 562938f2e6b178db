import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkPattern, checkPatternShape, makePattern, parsePattern, parsePatternConfig } from "../src/pattern/pattern.ts";
import { formatPattern, loadPattern, patternUrls, savePattern } from "../src/pattern/io.ts";
import { formatE18 } from "../src/pattern/format.ts";
import { getPreset } from "../src/schedule/presets.ts";
import { PATTERN_NAMES, patternPath, patternsDir, skipNoPatterns } from "./helpers/patterns.ts";
import { throwsDuo, rejectsDuo } from "./helpers/errors.ts";

const CONFIG = '{"sink_size": 128, "recent_size": 256, "lr": 0.02}';

// Per pattern (SPEC.md §1.6): file shape, negative gates (all clipping is of negatives), gates equal to 1.0 and >= 0.5.
const TABLE: Record<string, [number, number, number, number, number]> = {
  "Llama-2-7B-32K-Instruct": [32, 32, 274, 145, 446],
  "Llama-3-8B-Instruct-Gradient-1048k": [32, 8, 18, 82, 208],
  "Llama-3-8B-Instruct-Gradient-4194k": [32, 8, 15, 80, 208],
  "Meta-Llama-3.1-8B-Instruct": [32, 8, 0, 57, 234],
  "Mistral-7B-Instruct-v0.2": [32, 8, 5, 110, 244],
  "Mistral-7B-Instruct-v0.3": [32, 8, 8, 107, 240],
};

test("all six published patterns load with their shapes, clip counts and config", { skip: skipNoPatterns }, async () => {
  for (const name of PATTERN_NAMES) {
    const p = await loadPattern(patternPath(name));
    const [layers, heads, negatives, ones, natural] = TABLE[name]!;
    assert.equal(p.numLayers, layers, name);
    assert.equal(p.numKvHeads, heads, name);
    assert.equal(p.gates.length, layers * heads, name);
    assert.equal(p.clipped, negatives, `${name} clipped`);
    assert.equal(p.gates.filter((g) => g === 1).length, ones, `${name} gates == 1`);
    assert.equal(p.gates.filter((g) => g >= 0.5).length, natural, `${name} gates >= 0.5`);
    assert.ok(p.gates.every((g) => g >= 0 && g <= 1), `${name} not clipped to [0, 1]`);
    assert.equal(p.sinkSize, 128);
    assert.equal(p.recentSize, 256);
    assert.equal(p.source, patternPath(name));
  }
});

test("formatPattern writes the published files back byte for byte, except clipped gates", { skip: skipNoPatterns }, async () => {
  for (const name of PATTERN_NAMES) {
    const original = readFileSync(`${patternPath(name)}/full_attention_heads.tsv`, "utf8");
    const written = formatPattern(await loadPattern(patternPath(name)));
    const a = original.split(/[\t\n]/), b = written.split(/[\t\n]/);
    assert.equal(b.length, a.length, name);
    let differing = 0;
    a.forEach((field, i) => {
      if (field === b[i]) return;
      differing++;
      assert.ok(Number(field) < 0 && b[i] === "0.000000000000000000e+00", `${name} field ${i}: ${field} written as ${b[i]}`);
    });
    assert.equal(differing, TABLE[name]![2], name);
    assert.ok(written.endsWith("\n") && !written.includes("\t\n"));
  }
});

test("formatE18 is numpy's %.18e: correctly rounded, ties to even, two-digit exponent", () => {
  // Expected strings from Python's '%.18e' % x.
  const cases: [number, string][] = [
    [0, "0.000000000000000000e+00"],
    [-0, "-0.000000000000000000e+00"],
    [1, "1.000000000000000000e+00"],
    [0.859375, "8.593750000000000000e-01"],
    [-9.250640869140625e-05, "-9.250640869140625000e-05"],
    [0.1, "1.000000000000000056e-01"],
    [1000001 * 2 ** -20, "9.536752700805664062e-01"], // exact tie at the 20th digit: even (JS toExponential says ...063)
    [1000003 * 2 ** -20, "9.536771774291992188e-01"],
    [5e-324, "4.940656458412465442e-324"],
    [1.7976931348623157e308, "1.797693134862315708e+308"],
  ];
  for (const [x, s] of cases) assert.equal(formatE18(x), s, String(x));
  throwsDuo(() => formatE18(NaN), "INVALID_ARGUMENT", /finite/);
});

test("parsePattern reads np.loadtxt's format: CRLF, blank lines, # comments, trailing newline", () => {
  const tsv = "# gates\r\n1.0\t-2.5e-01\t0.5\r\n\r\n  \n8.906250000000000000e-01\t1.5\t0\n";
  const p = parsePattern(tsv, CONFIG, "inline");
  assert.equal(p.numLayers, 2);
  assert.equal(p.numKvHeads, 3);
  assert.deepEqual(Array.from(p.gates), [1, 0, 0.5, 0.890625, 1, 0]);
  assert.equal(p.clipped, 2);
  assert.equal(p.sinkSize, 128);
  assert.equal(p.recentSize, 256);
  assert.equal(p.source, "inline");
  // The config may be given already parsed.
  assert.equal(parsePattern("0.5\n", { sink_size: 4, recent_size: 0 }).sinkSize, 4);
});

test("parsePattern rejects empty, ragged and non-numeric tables, naming line and column", () => {
  throwsDuo(() => parsePattern("", CONFIG), "PATTERN_FORMAT", /empty; expected one row per layer/);
  throwsDuo(() => parsePattern("\n \n# only a comment\n", CONFIG), "PATTERN_FORMAT", /empty/);
  throwsDuo(() => parsePattern("1\t1\n1\t1\t1\n", CONFIG), "PATTERN_FORMAT", /line 2 \(layer 1\) has 3 columns but the first row has 2/);
  throwsDuo(() => parsePattern("1\t0.5\n1\tabc\n", CONFIG), "PATTERN_FORMAT", /line 2 column 2 is "abc"/);
  throwsDuo(() => parsePattern("1\t0.5\t\n", CONFIG), "PATTERN_FORMAT", /line 1 column 3 is ""/);
  throwsDuo(() => parsePattern("1,0.5\n", CONFIG), "PATTERN_FORMAT", /column 1 is "1,0.5"/);
  throwsDuo(() => parsePattern("0x10\n", CONFIG), "PATTERN_FORMAT", /"0x10"/);
  throwsDuo(() => parsePattern("1\tnan\n", CONFIG), "PATTERN_FORMAT", /"nan" \(NaN and infinities are not gates\)/);
  throwsDuo(() => parsePattern("-inf\t1\n", CONFIG), "PATTERN_FORMAT", /"-inf" \(NaN and infinities/);
  throwsDuo(() => parsePattern("1\t1e999\n", CONFIG), "PATTERN_FORMAT", /line 1 column 2.* is Infinity; gates must be finite/);
});

test("config.json must be a JSON object with integer sink_size and recent_size >= 0", () => {
  throwsDuo(() => parsePattern("1\n", "{"), "PATTERN_FORMAT", /config.json.* is not valid JSON/);
  throwsDuo(() => parsePattern("1\n", "[128, 256]"), "PATTERN_FORMAT", /must be a JSON object/);
  throwsDuo(() => parsePattern("1\n", '{"recent_size": 256}'), "PATTERN_FORMAT", /"sink_size" must be an integer >= 0 \(tokens\); it is missing/);
  throwsDuo(() => parsePattern("1\n", '{"sink_size": 128}'), "PATTERN_FORMAT", /"recent_size" .* it is missing/);
  throwsDuo(() => parsePattern("1\n", '{"sink_size": 12.5, "recent_size": 256}'), "PATTERN_FORMAT", /"sink_size" .* got 12.5/);
  throwsDuo(() => parsePattern("1\n", '{"sink_size": 1, "recent_size": -1}'), "PATTERN_FORMAT", /"recent_size" .* got -1/);
  throwsDuo(() => parsePattern("1\n", '{"sink_size": "64", "recent_size": 1}'), "PATTERN_FORMAT", /got "64"/);
  assert.deepEqual(parsePatternConfig('{"sink_size": 0, "recent_size": 0, "threshold": 0.5}'), { sinkSize: 0, recentSize: 0 });
});

test("makePattern clips without touching its input and validates rows", () => {
  const rows = [[1.25, -0.5], [0.5, 0.25]];
  const p = makePattern(rows, { sinkSize: 4, recentSize: 8 });
  assert.deepEqual(rows, [[1.25, -0.5], [0.5, 0.25]]);
  assert.deepEqual(Array.from(p.gates), [1, 0, 0.5, 0.25]);
  assert.equal(p.clipped, 2);
  throwsDuo(() => makePattern([], { sinkSize: 4, recentSize: 8 }), "PATTERN_FORMAT", /empty/);
  throwsDuo(() => makePattern([[1], [1, 1]], { sinkSize: 4, recentSize: 8 }), "PATTERN_FORMAT", /layer 1 .* has 2 gates but layer 0 has 1/);
  throwsDuo(() => makePattern([[1, NaN]], { sinkSize: 4, recentSize: 8 }), "PATTERN_FORMAT", /gate \[0\]\[1\] is NaN/);
  throwsDuo(() => makePattern([[1]], { sinkSize: -4, recentSize: 8 }), "PATTERN_FORMAT", /sinkSize .* integer >= 0/);
});

test("checkPattern rejects hand-built patterns with wrong sizes or unclipped gates", () => {
  const good = makePattern([[0.5, 1]], { sinkSize: 1, recentSize: 2 });
  checkPattern(good);
  throwsDuo(() => checkPattern({ ...good, numKvHeads: 3 }), "PATTERN_FORMAT", /numLayers \* numKvHeads/);
  throwsDuo(() => checkPattern({ ...good, gates: new Float64Array([0.5, 1.5]) }), "PATTERN_FORMAT", /gate \[0\]\[1\] is 1.5; gates must be clipped/);
  throwsDuo(() => checkPattern({ ...good, gates: new Float64Array([0.5, NaN]) }), "PATTERN_FORMAT", /is NaN/);
});

test("checkPatternShape rejects a pattern whose layers x KV heads differ from the model", () => {
  const p = makePattern(Array.from({ length: 32 }, () => new Array(32).fill(1)), { sinkSize: 64, recentSize: 256 }, "mha-pattern");
  checkPatternShape(p, getPreset("llama-2-7b"));
  throwsDuo(() => checkPatternShape(p, getPreset("llama-3-8b")), "SHAPE_MISMATCH",
    /mha-pattern is 32 layers x 32 KV heads, but the model has 32 layers x 8 KV heads \(pattern columns are KV heads, not query heads\)/);
  const short = makePattern([[1, 1, 1, 1, 1, 1, 1, 1]], { sinkSize: 64, recentSize: 256 });
  throwsDuo(() => checkPatternShape(short, getPreset("mistral-7b")), "SHAPE_MISMATCH", /1 layers x 8 KV heads, but the model has 32 layers/);
});

test("savePattern then loadPattern round-trips gates and sizes exactly", async () => {
  const dir = mkdtempSync(join(tmpdir(), "duo-pattern-"));
  try {
    const rows = [[0.1, 1 / 3, 1000001 * 2 ** -20], [5e-324, 0.999999999999, 0]];
    const p = makePattern(rows, { sinkSize: 64, recentSize: 192 });
    await savePattern(p, `${dir}/nested/out`);
    const q = await loadPattern(`${dir}/nested/out/`);
    assert.deepEqual(Array.from(q.gates), Array.from(p.gates));
    assert.equal(q.sinkSize, 64);
    assert.equal(q.recentSize, 192);
    assert.deepEqual(JSON.parse(readFileSync(`${dir}/nested/out/config.json`, "utf8")), { sink_size: 64, recent_size: 192 });
    assert.equal(readFileSync(`${dir}/nested/out/full_attention_heads.tsv`, "utf8").split("\n")[0],
      "1.000000000000000056e-01\t3.333333333333333148e-01\t9.536752700805664062e-01");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("loadPattern names a missing directory, a missing file and an unsupported URL scheme", async () => {
  const dir = mkdtempSync(join(tmpdir(), "duo-pattern-"));
  try {
    await rejectsDuo(loadPattern(`${dir}/nope`), "IO", /pattern directory .*nope does not exist; a pattern directory holds full_attention_heads.tsv and config.json/);
    mkdirSync(`${dir}/half`);
    writeFileSync(`${dir}/half/full_attention_heads.tsv`, "1\t0\n");
    await rejectsDuo(loadPattern(`${dir}/half`), "IO", /cannot read .*half\/config.json/);
    await rejectsDuo(loadPattern("ftp://example.com/p"), "INVALID_ARGUMENT", /use a directory path or an http\(s\) URL/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("patternUrls maps a GitHub tree URL to raw files", () => {
  assert.deepEqual(patternUrls("https://github.com/mit-han-lab/duo-attention/tree/main/attn_patterns/X/s/"), {
    gates: "https://raw.githubusercontent.com/mit-han-lab/duo-attention/main/attn_patterns/X/s/full_attention_heads.tsv",
    config: "https://raw.githubusercontent.com/mit-han-lab/duo-attention/main/attn_patterns/X/s/config.json",
  });
  assert.equal(patternUrls("http://127.0.0.1:8000/p").gates, "http://127.0.0.1:8000/p/full_attention_heads.tsv");
});

test("loadPattern reads a pattern over http from a local server", { skip: skipNoPatterns }, async () => {
  const root = patternsDir!;
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    try {
      if (path.includes("..")) throw new Error("no");
      const body = readFileSync(join(root, path));
      res.writeHead(200, { "content-type": "text/plain" }).end(body);
    } catch {
      res.writeHead(404).end("not found");
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const port = (server.address() as { port: number }).port;
    const name = "Llama-3-8B-Instruct-Gradient-1048k";
    const url = `http://127.0.0.1:${port}/${patternPath(name).slice(root.length + 1)}`; // the setting folder
    const remote = await loadPattern(url);
    const local = await loadPattern(patternPath(name));
    assert.deepEqual(Array.from(remote.gates), Array.from(local.gates));
    assert.equal(remote.clipped, local.clipped);
    assert.equal(remote.sinkSize, 128);
    assert.equal(remote.source, url);
    await rejectsDuo(loadPattern(`http://127.0.0.1:${port}/missing`), "IO", /GET .*missing\/full_attention_heads.tsv answered 404/);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});
