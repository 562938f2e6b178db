/**
 * Edge: `duo-attention` bundled from the packed package the way wrangler bundles a Worker (esbuild, ESM, platform
 * neutral, conditions workerd/worker/browser, each .wasm import left as a module of its own and uploaded compiled),
 * then run by workerd (npm `workerd`, Cloudflare's runtime) as a module worker: the scenario's results against the
 * reference, and what a missing `wasmModule` says.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { basename, join } from "node:path";
import test from "node:test";
import { build, type Plugin } from "esbuild";
import { bin, checkScenario, consumerProject, missing, mustHave, root } from "./helpers.ts";

const project = consumerProject();
const out = join(project, "worker");
mkdirSync(out);
writeFileSync(join(project, "worker.js"), `
import * as duo from "duo-attention";
import wasmModule from "duo-attention/duo-relaxed.wasm";
import { runScenario, SCENARIO } from ${JSON.stringify(join(root, "test/e2e/scenario.js"))};

export default {
  async fetch(request) {
    const { pathname } = new URL(request.url);
    try {
      if (pathname === "/scenario") return Response.json(await runScenario(duo, { backend: "wasm", wasmModule, threads: 0 }));
      if (pathname === "/runtime") return Response.json(duo.runtime());
      if (pathname === "/no-module") {
        await duo.DuoAttention.create({ shape: SCENARIO.shape, heads: SCENARIO.heads, backend: "wasm" });
        return new Response("created without wasmModule");
      }
      return new Response("not found", { status: 404 });
    } catch (e) {
      return Response.json({ error: e.message, code: e.code }, { status: 500 });
    }
  },
};
`);

/** wrangler's rule for .wasm imports: the file becomes a module of its own (CompiledWasm), imported by its name. */
const wasmModules: string[] = [];
const wasmAsModule: Plugin = {
  name: "wasm-module",
  setup(b) {
    b.onResolve({ filter: /\.wasm$/ }, async (args) => {
      if (args.pluginData === "wasm-module") return undefined;
      const r = await b.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, pluginData: "wasm-module" });
      if (r.errors.length) return { errors: r.errors };
      wasmModules.push(r.path);
      return { path: `./${basename(r.path)}`, external: true };
    });
  },
};

const bundle = build({
  entryPoints: [join(project, "worker.js")],
  outdir: out,
  bundle: true,
  format: "esm",
  platform: "neutral",
  target: "es2022",
  conditions: ["workerd", "worker", "browser"],
  mainFields: ["browser", "module", "main"],
  plugins: [wasmAsModule],
  metafile: true,
  logLevel: "silent",
  absWorkingDir: project,
});

test("a wrangler-style bundle of duo-attention resolves every import and holds no node:, bun: or FFI module", async () => {
  const result = await bundle; // esbuild rejects with the unresolved imports, if any
  assert.deepEqual(result.errors, []);
  const inputs = Object.keys(result.metafile.inputs);
  assert.ok(inputs.some((f) => f.endsWith("duo-attention/dist/wasm.js")), `the workerd condition picks dist/wasm.js: ${inputs.join(" ")}`);
  const external = Object.values(result.metafile.outputs).flatMap((o) => o.imports.filter((i) => i.external).map((i) => i.path));
  assert.deepEqual(external, ["./duo-relaxed.wasm"], "the bundle's only import is the compiled kernels");
  const code = readFileSync(join(out, "worker.js"), "utf8");
  const runtimeImport = code.match(/(\bfrom\s*|\bimport\s*\(?\s*|\brequire\s*\(\s*)["'](node:|bun:|koffi)[^"']*["']/);
  assert.equal(runtimeImport, null, `the bundle imports ${runtimeImport?.[0]}`);
  // the CUDA backend and its FFI bindings are not in it (their library name and loader are)
  for (const absent of ["libduo_cuda", "dlopen"]) assert.ok(!code.includes(absent), `the bundle mentions ${absent}`);
  assert.deepEqual(wasmModules.map((f) => basename(f)), ["duo-relaxed.wasm"]);
});

const workerd = bin("workerd");
test("workerd runs the bundle as a module worker: prefill + decode match the reference; no wasmModule says what to pass",
  { skip: !existsSync(workerd) && missing("workerd", "npm ci installs the workerd package") }, async () => {
    mustHave(existsSync(workerd), "workerd", "npm ci installs the workerd package");
    await bundle;
    copyFileSync(wasmModules[0]!, join(out, "duo-relaxed.wasm"));
    const port = await freePort();
    writeFileSync(join(out, "config.capnp"), `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [(name = "main", worker = .worker)],
  sockets = [(name = "http", address = "127.0.0.1:${port}", http = (), service = "main")],
);
const worker :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "duo-relaxed.wasm", wasm = embed "duo-relaxed.wasm"),
  ],
  compatibilityDate = "2026-01-01",
);
`);
    const server = spawn(workerd, ["serve", join(out, "config.capnp")], { cwd: out, stdio: ["ignore", "pipe", "pipe"] });
    let log = "";
    server.stdout!.on("data", (d) => (log += d));
    server.stderr!.on("data", (d) => (log += d));
    try {
      const base = `http://127.0.0.1:${port}`;
      await waitUntilUp(base, server, () => log);
      const rt = await (await fetch(`${base}/runtime`)).json();
      assert.equal(rt.workers, false, "no workers in workerd");
      assert.equal(rt.fs, false, "no file access in workerd");
      const res = await fetch(`${base}/scenario`);
      const body = await res.json();
      assert.equal(res.status, 200, `workerd: ${JSON.stringify(body)}\n${log}`);
      await checkScenario(body, "workerd, wasmModule imported compiled, threads: 0");

      const missingModule = await fetch(`${base}/no-module`);
      const err = await missingModule.json();
      assert.equal(missingModule.status, 500, `created a wasm backend with no kernels: ${JSON.stringify(err)}`);
      assert.equal(err.code, "BACKEND_UNAVAILABLE");
      assert.match(err.error, /pass the compiled kernels as wasmModule: `import wasmModule from "duo-attention\/duo(-relaxed)?\.wasm"`/);
    } finally {
      await stop(server);
    }
  });

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    }).on("error", reject);
  });
}

/** Poll the server (loopback, at most 20 s) until it answers. */
async function waitUntilUp(base: string, server: ChildProcess, log: () => string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (server.exitCode !== null) assert.fail(`workerd exited ${server.exitCode}:\n${log()}`);
    try {
      await fetch(`${base}/runtime`);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  assert.fail(`workerd did not answer on ${base} within 20 s:\n${log()}`);
}

function stop(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    p.once("exit", () => resolve());
    p.kill("SIGTERM");
  });
}
