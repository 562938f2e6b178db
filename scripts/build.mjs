#!/usr/bin/env node
// npm artifact (run by `npm run build` and by `prepack`, so `npm pack` / `npm publish` always ship a fresh dist/):
//   dist/index.js, cli.js, model.js  Node, Bun, Deno: ESM, split into shared chunks; the CUDA backend, its FFI and
//                                    node:* built-ins are reached only at run time (no top-level await anywhere, so
//                                    `require("duo-attention")` works too, through Node's require(esm))
//   dist/wasm.js                     browsers, edge runtimes, bundlers (`duo-attention/wasm`): one file, with
//                                    src/backend/cuda-absent.ts and native-absent.ts in place of the CUDA and native
//                                    backends (and the model worker without the native model kernels), so it
//                                    reaches no FFI module, and no node:, bun: or npm import at all
//   dist/wasm-worker.js              the wasm backend's worker (loaded by URL beside either entry): one file
//   dist/model-worker.js             the worker of model kernels "wasm-parallel" (likewise)
//   dist/*.wasm, dist/ffi/*.js, dist/types/ (tsc declarations)
// dnt is not used: it is published only on JSR, which these machines cannot reach (README "Building").
import { build } from "esbuild";
import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");
const dist = join(root, "dist");
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

const common = {
  bundle: true,
  format: "esm",
  platform: "neutral",
  target: "es2022",
  mainFields: ["module", "main"],
  logLevel: "warning",
  absWorkingDir: root,
};

// Node, Bun and Deno entries (package.json "exports" "." "./model" "./cli").
await build({
  ...common,
  entryPoints: { index: "src/index.ts", cli: "src/cli/main.ts", model: "src/model/index.ts" },
  outdir: dist,
  splitting: true,
  external: ["bun:ffi", "node:*", "koffi", "tsx", "tsx/*", "onnxruntime-node", "onnxruntime-web", "@huggingface/*"],
});

// The browser/edge entry and the worker: nothing external, so a bundle that cannot be resolved fails here, not in a
// user's wrangler or Vite build.
// The FFI modules (cuda.ts and native.ts from the registry, kernels-native.ts from the model kernels) become their
// *-absent.ts stand-ins here, which throw BACKEND_UNAVAILABLE saying why.
const ffiAbsent = {
  name: "ffi-absent",
  setup(b) {
    b.onResolve({ filter: /\/(cuda|native|kernels-native)\.ts$/ }, (args) =>
      /(backend[\\/]registry|model[\\/]kernels)\.ts$/.test(args.importer) ? { path: join(args.resolveDir, args.path.replace(/\.ts$/, "-absent.ts")) } : undefined);
  },
};
await build({ ...common, entryPoints: { wasm: "src/wasm-entry.ts" }, outdir: dist, plugins: [ffiAbsent] });
await build({ ...common, entryPoints: { "wasm-worker": "src/backend/wasm-worker.ts" }, outdir: dist });
await build({ ...common, entryPoints: { "model-worker": "src/model/kernels-parallel-worker.ts" }, outdir: dist, plugins: [ffiAbsent] });

for (const f of readdirSync(join(root, "wasm/dist"))) if (f.endsWith(".wasm")) cpSync(join(root, "wasm/dist", f), join(dist, f));

// The FFI bindings are loaded by path at run time (one per runtime); ship them bundled beside the entry points.
await build({
  ...common,
  entryPoints: ["bun", "deno", "node"].map((r) => `ffi/${r}.ts`),
  outdir: join(dist, "ffi"),
  external: ["bun:ffi", "node:*", "koffi"],
});

const tsc = spawnSync(join(root, "node_modules/.bin/tsc"), ["-p", "tsconfig.build.json"], { cwd: root, stdio: "inherit" });
if (tsc.status !== 0) process.exit(tsc.status ?? 1);
writeFileSync(join(dist, "BUILD"), `built ${new Date().toISOString()}\n`);
console.log(`dist/: ${readdirSync(dist).join(" ")}`);
