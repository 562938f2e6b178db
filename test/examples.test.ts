// The README's quick start runs as published, in every runtime.
import { test } from "node:test";
import assert from "node:assert/strict";
import { runScript } from "./helpers/cli.ts";

test("examples/quickstart.ts runs: retrieval heads equal full attention, DuoAttention holds less KV", async () => {
  const r = await runScript("examples/quickstart.ts");
  assert.equal(r.code, 0, r.stderr);
  const ratio = Number(/\(([\d.]+)x less\)/.exec(r.stdout)?.[1]);
  assert.ok(ratio > 1.5 && ratio < 2, `50% retrieval, S+R = 80 of 600 tokens: KV ratio ${ratio}`);
  assert.match(r.stdout, /retrieval heads vs full attention: max \|difference\| 0\.00e\+0/);
});

test("examples/model.ts runs a random model on backend auto: attention and model math on one backend, Duo holds less KV", async () => {
  const r = await runScript("examples/model.ts");
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines.length, 2, r.stdout);
  for (const line of lines) {
    const m = /attention on (\w+), model math on ([\w-]+)/.exec(line);
    assert.ok(m, line);
    // the backend's own kernel set: wasm's is "wasm" (a 7 MB model stays in this thread), reference's "reference"
    assert.equal(m[2], m[1], `one backend for attention and model math: ${line}`);
  }
  const kv = lines.map((l) => /KV (\d+) bytes \(full attention would hold (\d+)\)/.exec(l)!.slice(1).map(Number));
  assert.equal(kv[0]![0], kv[0]![1], "full attention holds the full cache");
  assert.ok(kv[1]![0]! < 0.6 * kv[1]![1]!, `DuoAttention at half the heads streaming holds less: ${kv[1]}`);
});
