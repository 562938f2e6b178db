import { test } from "node:test";
import assert from "node:assert/strict";
import { runtime } from "../src/runtime.ts";
import { probeAll } from "../src/backend/registry.ts";

test("runtime is detected with its capabilities", () => {
  const rt = runtime();
  assert.ok(["node", "bun", "deno"].includes(rt.name), `unexpected runtime ${rt.name}`);
  assert.ok(rt.cores >= 1);
  assert.equal(rt.wasm, true);
  assert.equal(typeof rt.wasmSimd, "boolean");
  assert.equal(rt.ffi, rt.name === "node" ? "koffi" : rt.name);
});

test("every backend probe answers usable or says why not", async () => {
  const probes = await probeAll();
  assert.deepEqual(probes.map((p) => p.name), ["cuda", "native", "wasm", "reference", "null"]);
  for (const p of probes) if (!p.usable) assert.ok(p.reason && p.reason.length > 5, `${p.name} gives no reason`);
  assert.equal(probes.find((p) => p.name === "reference")!.usable, true);
});
