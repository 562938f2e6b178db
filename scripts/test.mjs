#!/usr/bin/env node
// Runs the one test suite (test/*.test.ts, node:test + node:assert/strict) under Node, Bun and Deno in turn,
// and ends with one line per runtime: "<runtime>: N passed, M failed[, K skipped]".
// Counts come from each runtime's JUnit report, so they mean the same thing everywhere.
// Types are checked once by `npm run check` (tsc + deno check); here Deno runs with --no-check like Node and Bun.
// Usage: node scripts/test.mjs [node|bun|deno ...] [--filter <substring of file name>]
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");
const bin = (name) => join(root, "node_modules", ".bin", name);
const args = process.argv.slice(2);
const fi = args.indexOf("--filter");
const filter = fi >= 0 ? args.splice(fi, 2)[1] : "";
const runtimes = args.length ? args : ["node", "bun", "deno"];
const files = readdirSync(join(root, "test"))
  .filter((f) => f.endsWith(".test.ts") && f.includes(filter))
  .sort()
  .map((f) => join("test", f));
if (files.length === 0) {
  console.error(`no test files match ${JSON.stringify(filter)} in test/`);
  process.exit(1);
}
const out = mkdtempSync(join(tmpdir(), "duo-test-"));

// Node 20 keeps relaxed SIMD behind a flag (Node >= 22 has it on): turn it on, so that the default wasm kernels are
// the fused-multiply-add build in every runtime (the baseline build is tested by name).
const nodeFlags = Number(process.versions.node.split(".")[0]) < 22 ? ["--experimental-wasm-relaxed-simd"] : [];

const commands = {
  node: (xml) => ["node", [...nodeFlags, "--import", "tsx", "--test", "--test-concurrency=2",
    "--test-reporter=spec", "--test-reporter-destination=stdout",
    "--test-reporter=junit", `--test-reporter-destination=${xml}`, ...files]],
  bun: (xml) => [bin("bun"), ["test", "--timeout=600000", "--reporter=junit", `--reporter-outfile=${xml}`, ...files.map((f) => "./" + f)]],
  deno: (xml) => [bin("deno"), ["test", "-A", "--no-check", `--junit-path=${xml}`, ...files]],
};

function count(xml) {
  if (!existsSync(xml)) return null;
  const text = readFileSync(xml, "utf8");
  // One <testcase ...> per test in all three reporters (the suite is flat: top-level test() only).
  const cases = text.split(/<testcase\b/).slice(1).map((c) => c.slice(0, c.search(/<\/testcase>|\/>\s*(<testcase|<\/testsuite)/) + 1 || undefined));
  let failed = 0, skipped = 0;
  for (const c of cases) {
    if (/<failure|<error|failure="/.test(c)) failed++;
    else if (/<skipped/.test(c)) skipped++;
  }
  return { total: cases.length, failed, skipped, passed: cases.length - failed - skipped };
}

const summary = [];
let ok = true;
for (const rt of runtimes) {
  if (!commands[rt]) { console.error(`unknown runtime ${rt}: use node, bun or deno`); process.exit(2); }
  const xml = join(out, `${rt}.xml`);
  const [cmd, argv] = commands[rt](xml);
  console.log(`\n=== ${rt}: ${files.length} test files ===`);
  const r = spawnSync(cmd, argv, { cwd: root, stdio: "inherit", env: { ...process.env, FORCE_COLOR: "0", NO_COLOR: "1" } });
  const c = count(xml);
  if (!c) { summary.push(`${rt}: 0 passed, 1 failed (no report; exit ${r.status ?? r.signal})`); ok = false; continue; }
  const line = `${rt}: ${c.passed} passed, ${c.failed} failed` + (c.skipped ? `, ${c.skipped} skipped` : "");
  if (c.failed > 0 || c.passed === 0 || r.status !== 0) ok = false;
  summary.push(line + (r.status !== 0 && c.failed === 0 ? ` (runner exit ${r.status ?? r.signal})` : ""));
}
const passes = new Set(summary.map((l) => l.match(/: (\d+) passed/)?.[1]));
if (passes.size > 1) { ok = false; console.log("\nthe runtimes ran different numbers of tests"); }
console.log("");
for (const l of summary) console.log(l);
process.exit(ok ? 0 : 1);
