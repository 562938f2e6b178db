#!/usr/bin/env node
// Runs the one test suite (test/*.test.ts, node:test + node:assert/strict) under Node, Bun and Deno in turn,
// and ends with one line per runtime: "<runtime>: N passed, M failed[, K skipped]".
// Counts come from each runtime's JUnit report, so they mean the same thing everywhere.
// Types are checked once by `npm run check` (tsc + deno check); here Deno runs with --no-check like Node and Bun.
// Then, once and under Node only, the real-runtime tests of test/e2e/ (the packed tarball in Node, Bun and Deno,
// a wrangler-style bundle in workerd, headless Chromium): they drive other runtimes themselves, so running them under
// each runtime would only repeat them. Their line is "e2e: ..." and is not part of the equal-counts check.
// Usage: node scripts/test.mjs [node|bun|deno|e2e ...] [--filter <substring of file name>]
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");
const bin = (name) => join(root, "node_modules", ".bin", name);
const args = process.argv.slice(2);
const fi = args.indexOf("--filter");
const filter = fi >= 0 ? args.splice(fi, 2)[1] : "";
const testFiles = (dir) => readdirSync(join(root, dir)).filter((f) => f.endsWith(".test.ts") && f.includes(filter)).sort().map((f) => join(dir, f));
const files = testFiles("test");
const e2eFiles = testFiles("test/e2e");
const runtimes = args.length ? args : [...(files.length ? ["node", "bun", "deno"] : []), ...(e2eFiles.length ? ["e2e"] : [])];
if (runtimes.length === 0 || runtimes.some((rt) => (rt === "e2e" ? e2eFiles : files).length === 0)) {
  console.error(`no test files match ${JSON.stringify(filter)} in test/ (or test/e2e/ for e2e)`);
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
  e2e: (xml) => ["node", [...nodeFlags, "--import", "tsx", "--test", "--test-concurrency=1",
    "--test-reporter=spec", "--test-reporter-destination=stdout",
    "--test-reporter=junit", `--test-reporter-destination=${xml}`, ...e2eFiles]],
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
  if (!commands[rt]) { console.error(`unknown runtime ${rt}: use node, bun, deno or e2e`); process.exit(2); }
  const xml = join(out, `${rt}.xml`);
  const [cmd, argv] = commands[rt](xml);
  const env = { ...process.env, FORCE_COLOR: "0", NO_COLOR: "1" };
  if (rt === "e2e") {
    // one `npm pack` (its prepack builds dist/) for all the e2e files
    const packed = execFileSync("npm", ["pack", "--silent", "--pack-destination", out], { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
    env.DUO_E2E_TARBALL = join(out, packed.trim().split("\n").pop());
  }
  console.log(`\n=== ${rt}: ${(rt === "e2e" ? e2eFiles : files).length} test files ===`);
  const r = spawnSync(cmd, argv, { cwd: root, stdio: "inherit", env });
  const c = count(xml);
  if (!c) { summary.push(`${rt}: 0 passed, 1 failed (no report; exit ${r.status ?? r.signal})`); ok = false; continue; }
  const line = `${rt}: ${c.passed} passed, ${c.failed} failed` + (c.skipped ? `, ${c.skipped} skipped` : "");
  if (c.failed > 0 || c.passed === 0 || r.status !== 0) ok = false;
  summary.push(line + (r.status !== 0 && c.failed === 0 ? ` (runner exit ${r.status ?? r.signal})` : ""));
}
const passes = new Set(summary.filter((l) => !l.startsWith("e2e:")).map((l) => l.match(/: (\d+) passed/)?.[1]));
if (passes.size > 1) { ok = false; console.log("\nthe runtimes ran different numbers of tests"); }
console.log("");
for (const l of summary) console.log(l);
process.exit(ok ? 0 : 1);
