#!/usr/bin/env node
// npm artifact: ESM bundles (esbuild, es2022, bun:ffi and node:* left external) + .d.ts (tsc) + the .wasm files.
// dnt is not used: it is published only on JSR, which these machines cannot reach (README "Building").
import { build } from "esbuild";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");
const dist = join(root, "dist");
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

// Public entry points (package.json "exports") and internal ones that are loaded by URL at run time.
const entries = {
  index: "src/index.ts",
  cli: "src/cli/main.ts",
  wasm: "src/wasm-entry.ts",
  model: "src/model/index.ts",
  "wasm-worker": "src/backend/wasm-worker.ts",
};
const present = Object.fromEntries(Object.entries(entries).filter(([, f]) => existsSync(join(root, f))));
await build({
  entryPoints: present,
  outdir: dist,
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "neutral",
  target: "es2022",
  mainFields: ["module", "main"],
  external: ["bun:ffi", "node:*", "koffi", "tsx", "tsx/*", "onnxruntime-node", "onnxruntime-web", "@huggingface/*"],
  logLevel: "warning",
  absWorkingDir: root,
});
for (const dir of ["wasm/dist"]) {
  if (!existsSync(join(root, dir))) continue;
  for (const f of readdirSync(join(root, dir))) if (f.endsWith(".wasm")) cpSync(join(root, dir, f), join(dist, f));
}
// The FFI bindings are loaded by path at run time (one per runtime); ship them bundled beside the entry points.
const ffi = ["bun", "deno", "node"].map((r) => `ffi/${r}.ts`).filter((f) => existsSync(join(root, f)));
if (ffi.length) {
  await build({ entryPoints: ffi, outdir: join(dist, "ffi"), bundle: true, format: "esm", platform: "neutral", target: "es2022", external: ["bun:ffi", "node:*", "koffi"], logLevel: "warning", absWorkingDir: root });
}

const tsc = spawnSync(join(root, "node_modules/.bin/tsc"), ["-p", "tsconfig.build.json"], { cwd: root, stdio: "inherit" });
if (tsc.status !== 0) process.exit(tsc.status ?? 1);
writeFileSync(join(dist, "BUILD"), `built ${new Date().toISOString()} from ${Object.keys(present).join(", ")}\n`);
console.log(`dist/: ${readdirSync(dist).join(" ")}`);
