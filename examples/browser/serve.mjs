#!/usr/bin/env node
// Serves the browser demo on http://127.0.0.1:8080/ (loopback only): this folder at /, the package's dist/ at /dist/,
// with the COOP/COEP headers that give the page cross-origin isolation (so the wasm backend can use workers with
// shared memory). Run `npm run build` first, then: node examples/browser/serve.mjs [port]
// The browser e2e test (test/e2e/browser.test.ts) serves the packed package's dist/ with the same function.
import { createReadStream, existsSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { extname, join, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8", ".wasm": "application/wasm", ".json": "application/json", ".png": "image/png" };

/**
 * An http server for the demo: `/dist/...` from `dist`, `extra` paths (URL path -> file) as given, anything else
 * from this folder. `isolated` (default true) sends Cross-Origin-Opener-Policy: same-origin and
 * Cross-Origin-Embedder-Policy: require-corp on every response.
 */
export function demoServer({ dist = resolve(here, "../../dist"), isolated = true, extra = {} } = {}) {
  return createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://localhost").pathname);
    const file = extra[path] ?? (path.startsWith("/dist/") ? inside(dist, path.slice(6)) : inside(here, path === "/" ? "index.html" : path.slice(1)));
    if (!file || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, { "content-type": "text/plain" }).end(`not found: ${path}${path.startsWith("/dist/") ? " (run npm run build)" : ""}`);
      return;
    }
    const headers = { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" };
    if (isolated) Object.assign(headers, { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" });
    res.writeHead(200, headers);
    createReadStream(file).pipe(res);
  });
}

/** `rel` under `dir`, or null if it would leave it. */
function inside(dir, rel) {
  const p = normalize(join(dir, rel));
  return p.startsWith(normalize(dir + "/")) ? p : null;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const port = Number(process.argv[2] ?? 8080);
  demoServer().listen(port, "127.0.0.1", () => console.log(`DuoAttention browser demo: http://127.0.0.1:${port}/`));
}
