/**
 * The packed package (`npm pack`, which builds dist/ in prepack) installed into an empty project and used as a user
 * would: ESM import and CommonJS require in Node, Bun, Deno with only --allow-read, and tsc with a Node-only config.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import test from "node:test";
import { bin, checkScenario, consumerProject, missing, mustHave, packedFiles, root } from "./helpers.ts";

const project = consumerProject();
const scenario = join(root, "test/e2e/scenario.js");

/** Run a consumer program; its last stdout line is the scenario's JSON result. */
function run(cmd: string, args: string[]): { json: unknown; stderr: string } {
  const r = spawnSync(cmd, args, { cwd: project, encoding: "utf8", maxBuffer: 64 << 20, env: { ...process.env, NO_COLOR: "1" } });
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")} exited ${r.status ?? r.signal}:\n${r.stderr}`);
  return { json: JSON.parse(r.stdout.trim().split("\n").pop()!), stderr: r.stderr };
}

// The consumer programs: the scenario through the package root (wasm backend, default threads: workers) and through
// the wasm entry (threads: 0); each prints one JSON line.
writeFileSync(join(project, "esm.mjs"), `
import * as root from "duo-attention";
import * as lean from "duo-attention/wasm";
import { runScenario } from ${JSON.stringify(scenario)};
const a = await runScenario(root, { backend: "wasm", threads: 2 });
const b = await runScenario(lean, { backend: "wasm", threads: 0 });
console.log(JSON.stringify({ a, b }));
`);
writeFileSync(join(project, "cjs.cjs"), `
const duo = require("duo-attention");
const model = require("duo-attention/model");
if (typeof duo.DuoAttention?.create !== "function" || typeof model.LlamaModel !== "function") throw new Error("exports missing");
import(${JSON.stringify(scenario)}).then(({ runScenario }) => runScenario(duo, { backend: "wasm", threads: 0 }))
  .then((r) => console.log(JSON.stringify(r)));
`);

test("npm pack ships the built entries, the .wasm files and the declarations, and no sources or tests", () => {
  const files = packedFiles(project);
  for (const f of ["package.json", "README.md", "dist", "bin", "cuda"]) assert.ok(files.includes(f), `package has ${f}: ${files.join(" ")}`);
  for (const f of ["src", "test", "bench", "wasm", "node_modules"]) assert.ok(!files.includes(f), `package does not ship ${f}`);
  const dist = packedFiles(project, "dist");
  for (const f of ["index.js", "wasm.js", "wasm-worker.js", "model-worker.js", "model.js", "cli.js", "duo.wasm", "duo-relaxed.wasm", "types"]) {
    assert.ok(dist.includes(f), `dist/ has ${f}`);
  }
  // every path that package.json exports is in the package
  const manifest = JSON.parse(readFileSync(join(project, "node_modules/duo-attention/package.json"), "utf8"));
  const targets = JSON.stringify(manifest.exports).match(/"\.\/[^"]+"/g)!.map((t: string) => JSON.parse(t) as string).filter((t) => !t.includes("*"));
  for (const t of new Set(targets)) if (t.startsWith("./dist") || t === "./package.json") assert.ok(existsSync(join(project, "node_modules/duo-attention", t)), `exported ${t} is packed`);
});

test("Node: the package root and duo-attention/wasm import as ESM and give the reference's results", async () => {
  const { json } = run(process.execPath, ["esm.mjs"]) as { json: { a: never; b: never } };
  await checkScenario(json.a, "node, duo-attention (2 workers)");
  await checkScenario(json.b, "node, duo-attention/wasm (threads: 0)");
});

test("Node: require(\"duo-attention\") from CommonJS works (no top-level await in the package)", async () => {
  const { json } = run(process.execPath, ["cjs.cjs"]);
  await checkScenario(json as never, "node, require()");
});

const bun = bin("bun");
test("Bun: the packed package imports and requires, and gives the reference's results", { skip: !existsSync(bun) && missing("bun", "npm ci installs it") }, async () => {
  mustHave(existsSync(bun), "bun", "npm ci installs it");
  const { json } = run(bun, ["esm.mjs"]) as { json: { a: never; b: never } };
  await checkScenario(json.a, "bun, duo-attention (2 workers)");
  await checkScenario(json.b, "bun, duo-attention/wasm (threads: 0)");
  await checkScenario(run(bun, ["cjs.cjs"]).json as never, "bun, require()");
});

const deno = bin("deno");
test("Deno with only --allow-read: the packed package imports and requires, and gives the reference's results", { skip: !existsSync(deno) && missing("deno", "npm ci installs it") }, async () => {
  mustHave(existsSync(deno), "deno", "npm ci installs it");
  const denoRun = ["run", "--allow-read", "--no-lock", "--no-prompt"];
  const { json } = run(deno, [...denoRun, "esm.mjs"]) as { json: { a: never; b: never } };
  await checkScenario(json.a, "deno, duo-attention (2 workers)");
  await checkScenario(json.b, "deno, duo-attention/wasm (threads: 0)");
  await checkScenario(run(deno, [...denoRun, "cjs.cjs"]).json as never, "deno, require()");
});

/** tsc in the consumer project over one file, `source`, with these compiler options (strict, no skipLibCheck). */
function typeCheck(name: string, compilerOptions: Record<string, unknown>, source: string): void {
  writeFileSync(join(project, `${name}.ts`), source);
  writeFileSync(join(project, `tsconfig.${name}.json`), JSON.stringify({
    compilerOptions: { target: "es2022", module: "nodenext", moduleResolution: "nodenext", strict: true, noEmit: true, skipLibCheck: false, ...compilerOptions },
    files: [`${name}.ts`],
  }));
  const r = spawnSync(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", `tsconfig.${name}.json`], { cwd: project, encoding: "utf8" });
  assert.equal(r.status, 0, `tsc (${name}) failed:\n${r.stdout}${r.stderr}`);
}

test("tsc: the declarations type-check in a browser consumer of duo-attention/wasm (lib es2022 + dom, no Node types)", () => {
  typeCheck("browser", { lib: ["es2022", "dom"], types: [] }, `
import { DuoAttention, HeadSchedule, type DuoAttentionOptions } from "duo-attention/wasm";
export async function use(wasmModule: WebAssembly.Module): Promise<number> {
  const options: DuoAttentionOptions = { shape: { numLayers: 1, numHeads: 2, numKvHeads: 1, headDim: 64 }, heads: HeadSchedule.full(1, 1), backend: "wasm", wasmModule, threads: 0 };
  const duo = await DuoAttention.create(options);
  const total = duo.sequence().bytes().total;
  await duo.dispose();
  return total;
}
`);
});

test("tsc: the declarations type-check in a Node-only consumer (lib es2022, types node, no skipLibCheck)", () => {
  typeCheck("node", { lib: ["es2022"], types: ["node"] }, `
import { DuoAttention, type DuoAttentionOptions, type KvBytes, syntheticSchedule, DuoError } from "duo-attention";
import * as lean from "duo-attention/wasm";
import { LlamaModel } from "duo-attention/model";
const shape = { numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 64 };
const options: DuoAttentionOptions = { shape, heads: syntheticSchedule(2, 2, 0.5), backend: "wasm", threads: 0 };
export async function use(): Promise<KvBytes> {
  const duo = await DuoAttention.create(options);
  const other: lean.DuoAttention = await lean.DuoAttention.create({ ...options, backend: "reference" });
  await other.dispose();
  const bytes = duo.sequence().bytes();
  await duo.dispose();
  return bytes;
}
export const kinds: [typeof DuoError, typeof LlamaModel] = [DuoError, LlamaModel];
`);
});

test("the packed bin runs: duo info", () => {
  const out = execFileSync(process.execPath, [join(project, "node_modules/duo-attention/bin/duo.mjs"), "info"], { cwd: project, encoding: "utf8" });
  assert.match(out, /wasm/);
});
