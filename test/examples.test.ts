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
