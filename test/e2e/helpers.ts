/**
 * What the real-runtime tests (test/e2e/, run once under Node by `node scripts/test.mjs`) share: the packed package
 * installed into an empty project, the reference result of the scenario, and how a missing runtime is reported.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as duo from "../../src/index.ts";
import { runScenario } from "./scenario.js";

export const root = fileURLToPath(new URL("../..", import.meta.url));
export const bin = (name: string) => join(root, "node_modules", ".bin", name);

/**
 * Skip where a runtime is missing on a developer's machine, but fail in CI (CI=true), whose .ci/run installs every
 * runtime these tests drive: a green CI must never hide a test that did not run.
 */
export function missing(what: string, hint: string): string | false {
  const message = `skipped: ${what} not found (${hint})`;
  if (process.env.CI === "true") return false;
  return message;
}
/** In CI, a missing runtime fails the test with the same message (see missing()). */
export function mustHave(found: boolean, what: string, hint: string): void {
  if (!found) assert.fail(`${what} not found (${hint}); .ci/run installs it`);
}

/** The package as npm packs it: the tarball of `npm pack` (which runs prepack, the build), made once per e2e run —
 *  scripts/test.mjs packs before the e2e files and passes it in DUO_E2E_TARBALL; a file run alone packs for itself. */
function tarball(): string {
  const given = process.env.DUO_E2E_TARBALL;
  if (given && existsSync(given)) return given;
  const dir = mkdtempSync(join(tmpdir(), "duo-pack-"));
  const out = execFileSync("npm", ["pack", "--silent", "--pack-destination", dir], { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  const file = out.trim().split("\n").pop()!;
  process.env.DUO_E2E_TARBALL = join(dir, file);
  return join(dir, file);
}

/**
 * An empty project with the packed package installed in node_modules/duo-attention, as `npm install <tarball>`
 * lays it out. Its dependencies are linked from this repo's node_modules (where `npm ci` put them) instead of
 * installed: npm ci caches tarballs but not the registry metadata an install would resolve versions with, so an
 * offline `npm install` could not run on a fresh CI machine. Returns the project's directory.
 */
export function consumerProject(): string {
  const dir = mkdtempSync(join(tmpdir(), "duo-consumer-"));
  process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }, null, 2));
  const pkg = join(dir, "node_modules", "duo-attention");
  mkdirSync(pkg, { recursive: true });
  execFileSync("tar", ["-xzf", tarball(), "-C", pkg, "--strip-components=1"]);
  const manifest = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8"));
  const deps = [...Object.keys(manifest.dependencies ?? {}), ...Object.keys(manifest.optionalDependencies ?? {}), "@types/node"];
  for (const name of deps) {
    const from = join(root, "node_modules", name);
    if (!existsSync(from)) continue; // an optional dependency npm did not install here
    mkdirSync(dirname(join(dir, "node_modules", name)), { recursive: true });
    symlinkSync(from, join(dir, "node_modules", name), "dir");
  }
  return dir;
}

/** Files in the packed package, relative to its root (to check `files` and the build). */
export function packedFiles(project: string, sub = ""): string[] {
  return readdirSync(join(project, "node_modules", "duo-attention", sub));
}

export type ScenarioResult = Awaited<ReturnType<typeof runScenario>>;
let reference: Promise<ScenarioResult> | undefined;
/** The scenario on the float64 reference backend, from the sources. */
export function referenceResult(): Promise<ScenarioResult> {
  return (reference ??= runScenario(duo, { backend: "reference" }));
}

/** Every output of `actual` within f32-vs-f64 tolerance of the reference (DESIGN §5: |a-b| <= 1e-5 + 1e-4|b|), the
 *  same KV bytes held, and the expected backend; `where` names the runtime in the message. */
export async function checkScenario(actual: ScenarioResult, where: string, backend = "wasm"): Promise<void> {
  const expected = await referenceResult();
  assert.equal(actual.backend, backend, `${where}: ran on ${actual.backend}`);
  assert.deepEqual(actual.bytes, expected.bytes, `${where}: KV bytes held`);
  assert.equal(actual.outputs.length, expected.outputs.length, `${where}: number of calls`);
  let maxAbs = 0, bad = 0, first = "";
  expected.outputs.forEach((call, c) => call.forEach((want, layer) => {
    const got = actual.outputs[c]![layer]!;
    assert.equal(got.length, want.length, `${where}: call ${c} layer ${layer} output length`);
    for (let i = 0; i < want.length; i++) {
      const d = Math.abs(got[i]! - want[i]!);
      maxAbs = Math.max(maxAbs, d);
      if (!(d <= 1e-5 + 1e-4 * Math.abs(want[i]!))) bad++, first ||= `call ${c} layer ${layer} [${i}]: ${got[i]} vs ${want[i]}`;
    }
  }));
  assert.equal(bad, 0, `${where}: ${bad} outputs off the reference (max |diff| ${maxAbs.toExponential(2)}; first ${first})`);
}
