// duo demo: a small real run end to end (wasm, in-thread), and bad arguments as one error line + non-zero exit.
import { test } from "node:test";
import assert from "node:assert/strict";
import { runCli } from "./helpers/cli.ts";

test("duo demo runs a small stack end to end: table, capacity and an OK correctness line", async () => {
  const r = await runCli(["demo", "--backend", "wasm", "--threads", "0", "--contexts", "600,900", "--prefill-tokens", "64", "--chunk", "32", "--steps", "1", "--memory", "200MiB"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /synthetic schedule \(no --pattern given\)/);
  assert.match(r.stdout, /128 of 256 KV heads are retrieval heads/);
  const rows = r.stdout.split("\n").filter((l) => /^\|\s+(600|900) \|/.test(l));
  assert.equal(rows.length, 2, r.stdout);
  for (const row of rows) {
    const ratio = Number(/\|\s+([\d.]+)x \|/.exec(row)?.[1]);
    assert.ok(ratio > 1.3 && ratio < 2, `KV memory ratio full/duo at 50% retrieval, S+R=320: ${row}`);
  }
  // 200 MiB: full attention holds 2·2·128·8·32 = 128 KiB per token → 1,600 tokens; DuoAttention holds 64 KiB per
  // token for its 128 retrieval heads once the 128 streaming rings (320 rows · 512 B each = 20 MiB) are paid for.
  const cap = 200 * 2 ** 20, ring = 128 * 320 * 512;
  const full = Math.floor(cap / (2 * 2 * 128 * 8 * 32)), duo = Math.floor((cap - ring) / (128 * 512));
  assert.equal(full, 1600);
  assert.match(r.stdout, new RegExp(`capacity: in 200 MiB \\(1 × 200 MiB\\), full attention fits ${full.toLocaleString("en-US")} tokens, DuoAttention ${duo.toLocaleString("en-US")} \\(${(duo / full).toFixed(2)}x\\)`));
  assert.match(r.stdout, /retrieval heads vs full attention: max \|err\| [\d.e+-]+ · streaming heads vs the masked reference: max \|err\| [\d.e+-]+ · OK/);
});

test("duo demo: bad arguments give one clear error line and a non-zero exit", async () => {
  const cases: [string[], RegExp][] = [
    [["--pattern", "/no/such/pattern-dir"], /pattern directory .*does not exist/],
    [["--contexts", "4096,-5"], /--contexts must be positive integers/],
    [["--backend", "tpu"], /--backend must be one of "auto", "cuda", "native", "wasm"/],
    [["--memory", "lots"], /--memory must be a size like 2.5GiB/],
    [["--frobnicate"], /unknown option --frobnicate; valid options:/],
  ];
  for (const [args, message] of cases) {
    const r = await runCli(["demo", ...args]);
    assert.notEqual(r.code, 0, `duo demo ${args.join(" ")} should fail`);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, `one error line for ${args.join(" ")}, got:\n${r.stderr}`);
    assert.match(lines[0]!, /^duo demo: /);
    assert.match(lines[0]!, message);
  }
});
