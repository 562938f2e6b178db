/**
 * Browsers: headless Chromium (Debian's `chromium`, driven by puppeteer-core) loads pages served on loopback from the
 * packed package's dist/ and runs the scenario through `duo-attention/wasm` — with workers under cross-origin
 * isolation (COOP/COEP, shared-memory lane), with workers but no isolation (messages only), and with `threads: 0` and
 * a `wasmModule` compiled by the page — each checked against the reference computed here in Node. Then the demo page
 * (examples/browser/) runs to the end; its screenshot is saved and its charts are read back.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import type { AddressInfo, Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test, { after, before } from "node:test";
import type { Browser, Page } from "puppeteer-core";
import { checkScenario, consumerProject, missing, mustHave, root } from "./helpers.ts";
// @ts-expect-error: plain JavaScript (it is also what users run), no declarations
import { demoServer } from "../../examples/browser/serve.mjs";

const chromium = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const found = existsSync(chromium);
const skip = !found && missing("chromium", "apt-get install chromium; or set CHROMIUM_PATH");
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"];

let browser: Browser | undefined;
const servers: { isolated?: string; plain?: string } = {};
const open: Server[] = [];

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  open.push(server);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

before(async () => {
  if (!found) return;
  const dist = join(consumerProject(), "node_modules/duo-attention/dist");
  const extra = { "/scenario.js": join(root, "test/e2e/scenario.js"), "/scenario.html": join(root, "test/e2e/scenario.html") };
  servers.isolated = await listen(demoServer({ dist, isolated: true, extra }));
  servers.plain = await listen(demoServer({ dist, isolated: false, extra }));
  const { launch } = await import("puppeteer-core");
  browser = await launch({ executablePath: chromium, headless: true, args: FLAGS, defaultViewport: { width: 1120, height: 560 } });
});

after(async () => {
  await browser?.close();
  for (const s of open) s.close();
});

/** A page at `base`, its console errors collected. */
async function page(base: string, path = "/scenario.html"): Promise<{ page: Page; errors: string[] }> {
  const p = await browser!.newPage();
  const errors: string[] = [];
  p.on("pageerror", (e) => void errors.push((e as Error).message));
  p.on("console", (m) => void (m.type() === "error" && errors.push(m.text())));
  await p.goto(base + path, { waitUntil: "load" });
  return { page: p, errors };
}

/** Run the scenario in the page through the package's browser entry; `how` is evaluated in the page into options. */
function runInPage(p: Page, how: "workers" | "compiled"): Promise<unknown> {
  return p.evaluate(async (how: string, entry: string, scenario: string) => {
    const api = await import(entry);
    const { runScenario } = await import(scenario);
    const options = how === "workers"
      ? { backend: "wasm", threads: 2 }
      : { backend: "wasm", threads: 0, wasmModule: await WebAssembly.compileStreaming(fetch("/dist/duo.wasm")) };
    return { isolated: globalThis.crossOriginIsolated, result: await runScenario(api, options) };
  }, how, "/dist/wasm.js", "/scenario.js");
}

test("Chromium, cross-origin isolated: 2 workers with the shared-memory lane match the reference", { skip }, async () => {
  mustHave(found, "chromium", "apt-get install chromium");
  const { page: p, errors } = await page(servers.isolated!);
  const r = (await runInPage(p, "workers")) as { isolated: boolean; result: never };
  assert.equal(r.isolated, true, "COOP/COEP give cross-origin isolation");
  await checkScenario(r.result, "chromium, isolated, threads: 2");
  assert.deepEqual(errors, []);
  await p.close();
});

test("Chromium, not isolated: workers exchange messages only, and match the reference", { skip }, async () => {
  mustHave(found, "chromium", "apt-get install chromium");
  const { page: p, errors } = await page(servers.plain!);
  const r = (await runInPage(p, "workers")) as { isolated: boolean; result: never };
  assert.equal(r.isolated, false);
  await checkScenario(r.result, "chromium, not isolated, threads: 2");
  assert.deepEqual(errors, []);
  await p.close();
});

test("Chromium: threads: 0 with a wasmModule the page compiled (duo.wasm) matches the reference", { skip }, async () => {
  mustHave(found, "chromium", "apt-get install chromium");
  const { page: p, errors } = await page(servers.isolated!);
  const r = (await runInPage(p, "compiled")) as { isolated: boolean; result: never };
  await checkScenario(r.result, "chromium, threads: 0, wasmModule");
  assert.deepEqual(errors, []);
  await p.close();
});

test("the browser demo page draws decode time and KV memory, full vs DuoAttention, as the context grows", { skip }, async () => {
  mustHave(found, "chromium", "apt-get install chromium");
  const { page: p, errors } = await page(servers.isolated!, "/?max=8192&step=1024&layers=2");
  await p.waitForFunction(() => document.body.dataset.state, { timeout: 120_000 });
  const state = await p.evaluate(() => ({ state: document.body.dataset.state, error: document.body.dataset.error }));
  assert.equal(state.state, "done", `demo failed: ${state.error}`);
  const shots = process.env.DUO_E2E_SCREENSHOTS ?? join(tmpdir(), "duo-e2e");
  mkdirSync(shots, { recursive: true });
  const shot = join(shots, "browser-demo.png");
  await p.screenshot({ path: shot, fullPage: true });
  console.log(`demo screenshot: ${shot}`);

  // What was drawn: in each chart one line per engine through 8 points (1K..8K), and the numbers behind them.
  const drawn = await p.evaluate(() => [...document.querySelectorAll("svg polyline")].map((l) => ({
    chart: l.closest("svg")!.id, series: l.getAttribute("data-series"), points: Number(l.getAttribute("data-points")),
    width: (l as SVGGraphicsElement).getBBox().width,
  })));
  assert.deepEqual(drawn.map((d) => `${d.chart}:${d.series}:${d.points}`).sort(),
    ["chart-memory:duo:8", "chart-memory:full:8", "chart-time:duo:8", "chart-time:full:8"]);
  for (const d of drawn) assert.ok(d.width > 300, `${d.chart} ${d.series} line spans the chart (${d.width}px)`);
  const points = await p.evaluate(() => (globalThis as unknown as { demoResult: Record<"memory" | "time", Record<"full" | "duo", number[][]>> }).demoResult);
  const last = (xs: number[][]) => xs[xs.length - 1]!;
  assert.ok(last(points.memory.duo)[1]! < 0.6 * last(points.memory.full)[1]!, "DuoAttention holds well under full attention's KV at 8K");
  assert.ok(points.time.duo.every(([, t]) => t! > 0) && points.time.full.every(([, t]) => t! > 0), "decode times measured");
  assert.match(await p.$eval("#memory", (e: Element) => e.textContent), /× less/);
  assert.deepEqual(errors, []);
  await p.close();
});
