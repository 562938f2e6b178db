import assert from "node:assert/strict";
import { test } from "node:test";
import { escapeXml, figure, formatNumber, formatTokens, lineChart, type Panel } from "../src/report/svg.ts";

interface El {
  name: string;
  attrs: Record<string, string>;
  children: El[];
  text: string;
}

/** A strict little XML parser: balanced tags, quoted attributes, known entities only. Throws on anything else. */
function parseXml(src: string): El {
  const root: El = { name: "#root", attrs: {}, children: [], text: "" };
  const stack: El[] = [root];
  const re = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|([^<]+)|(<)/g;
  let m: RegExpExecArray | null;
  let pos = 0;
  while ((m = re.exec(src))) {
    assert.equal(m.index, pos, `unparsed text at ${pos}: ${JSON.stringify(src.slice(pos, pos + 40))}`);
    pos = re.lastIndex;
    if (m[6]) throw new Error(`stray "<" at ${m.index}: ${JSON.stringify(src.slice(m.index, m.index + 40))}`);
    if (m[5] !== undefined) {
      if (/&(?!(amp|lt|gt|quot|apos);)/.test(m[5])) throw new Error(`bad entity in ${JSON.stringify(m[5])}`);
      stack[stack.length - 1]!.text += m[5];
      continue;
    }
    const [, close, name, attrText, selfClose] = m;
    if (close) {
      const top = stack.pop()!;
      assert.equal(top.name, name, `</${name}> closes <${top.name}>`);
      continue;
    }
    const attrs: Record<string, string> = {};
    for (const a of attrText!.matchAll(/([\w:-]+)="([^"]*)"/g)) {
      assert.ok(!(a[1]! in attrs), `attribute ${a[1]} repeated on <${name}>`);
      attrs[a[1]!] = a[2]!;
    }
    const el: El = { name: name!, attrs, children: [], text: "" };
    stack[stack.length - 1]!.children.push(el);
    if (!selfClose) stack.push(el);
  }
  assert.equal(pos, src.length, "trailing garbage");
  assert.equal(stack.length, 1, `unclosed <${stack[stack.length - 1]!.name}>`);
  assert.equal(root.children.length, 1, "one root element");
  return root.children[0]!;
}

function all(el: El, pred: (e: El) => boolean, out: El[] = []): El[] {
  if (pred(el)) out.push(el);
  for (const c of el.children) all(c, pred, out);
  return out;
}
const byClass = (root: El, cls: string) => all(root, (e) => (e.attrs.class ?? "").split(" ").includes(cls));
const texts = (els: El[]) => els.map((e) => e.text.trim());

const latency: Panel = {
  title: "Decode latency",
  x: { label: "context", unit: "tokens", log: 2 },
  y: { label: "latency", unit: "ms / token" },
  series: [
    { name: "full attention", points: [[8192, 10], [16384, 20], [32768, 40], [65536, null]] },
    { name: "DuoAttention", points: [[8192, 6], [16384, 11], [32768, 21], [65536, 41]] },
    { name: "theory <r·T & S+R>", dashed: true, points: [[8192, 5], [65536, 40]] },
  ],
};

test("bench svg: a multi-panel figure is well-formed XML with title, axes, ticks, units, one path per series and a legend", () => {
  const memory: Panel = { ...latency, title: "KV memory", y: { label: "KV cache", unit: "GiB" } };
  const svg = figure({ title: "Decode vs context", subtitle: "node 20, wasm, 2 threads", panels: [latency, memory] });
  const root = parseXml(svg);
  assert.equal(root.name, "svg");
  assert.equal(root.attrs.xmlns, "http://www.w3.org/2000/svg");
  assert.match(root.attrs.viewBox ?? "", /^0 0 \d+ \d+$/);
  assert.ok(Number(root.attrs.width) > 0 && Number(root.attrs.height) > 0);
  assert.deepEqual(texts(all(root, (e) => e.name === "title")), ["Decode vs context"]);
  assert.deepEqual(texts(byClass(root, "figure-title")), ["Decode vs context"]);
  assert.deepEqual(texts(byClass(root, "subtitle")), ["node 20, wasm, 2 threads"]);
  assert.deepEqual(texts(byClass(root, "panel-title")), ["Decode latency", "KV memory"]);
  const panels = byClass(root, "panel");
  assert.equal(panels.length, 2);
  for (const [i, p] of panels.entries()) {
    assert.equal(byClass(p, "x-axis").length, 1, "one x axis line per panel");
    assert.equal(byClass(p, "y-axis").length, 1, "one y axis line per panel");
    assert.deepEqual(texts(byClass(p, "x-label")), ["context (tokens)"]);
    assert.deepEqual(texts(byClass(p, "y-label")), [i === 0 ? "latency (ms / token)" : "KV cache (GiB)"]);
    // Base-2 log axis: ticks at the powers of two, written as token counts.
    const xTicks = texts(byClass(p, "tick-label")).filter((t) => /K$/.test(t));
    assert.deepEqual(xTicks, ["8K", "16K", "32K", "64K"]);
    const paths = byClass(p, "series");
    assert.equal(paths.length, 3, "one <path> per series");
    assert.deepEqual(paths.map((e) => e.name), ["path", "path", "path"]);
    assert.deepEqual(paths.map((e) => e.attrs["data-series"]), ["full attention", "DuoAttention", "theory &lt;r·T &amp; S+R&gt;"]);
    assert.deepEqual(texts(byClass(p, "legend-label")), ["full attention", "DuoAttention", "theory &lt;r·T &amp; S+R&gt;"]);
    assert.match(paths[0]!.attrs.d!, /^M[\d.]+,[\d.]+ L[\d.]+,[\d.]+ L[\d.]+,[\d.]+$/, "the null point is left out");
    assert.equal(paths[2]!.attrs["stroke-dasharray"], "6,4");
    // Every series is drawn inside its plot area: x within the axis line's span.
    const ax = byClass(p, "x-axis")[0]!.attrs;
    for (const e of paths) {
      for (const [, x] of e.attrs.d!.matchAll(/[ML]([\d.]+),/g)) assert.ok(Number(x) >= Number(ax.x1) && Number(x) <= Number(ax.x2), `x ${x} outside the axis`);
    }
  }
});

test("bench svg: gaps split a series into moves within one path; linear y ticks are round numbers from zero", () => {
  const svg = lineChart({
    title: "t", x: { label: "retrieval heads", unit: "fraction" }, y: { label: "latency", unit: "ms" },
    series: [{ name: "a", points: [[0.125, 3], [0.25, null], [0.5, 7], [1, 13]] }],
  });
  const root = parseXml(svg);
  const paths = byClass(root, "series");
  assert.equal(paths.length, 1);
  assert.equal(paths[0]!.attrs.d!.match(/M/g)!.length, 2);
  const ticks = texts(byClass(root, "tick-label")).map(Number);
  assert.ok(ticks.includes(0), `y ticks start at 0: ${ticks}`);
  assert.ok(ticks.every((t) => Number.isFinite(t)), "numeric tick labels");
  assert.ok(Math.max(...ticks) >= 13, "the top tick covers the data");
  assert.equal(all(root, (e) => e.name === "circle").length, 3, "markers on measured points");
});

test("bench svg: number and token formatting, XML escaping", () => {
  assert.equal(formatTokens(8192), "8K");
  assert.equal(formatTokens(1536), "1.5K");
  assert.equal(formatTokens(1 << 20), "1M");
  assert.equal(formatTokens(100), "100");
  assert.equal(formatNumber(0.25), "0.25");
  assert.equal(formatNumber(25000), "25k");
  assert.equal(formatNumber(3e6), "3M");
  assert.equal(escapeXml(`a<b & "c" 'd'>`), "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;");
});

test("bench svg: an empty series and a single point still give a valid plot", () => {
  const svg = lineChart({ title: "x", x: { label: "a" }, y: { label: "b" }, series: [{ name: "one", points: [[5, 5]] }, { name: "none", points: [] }] });
  const root = parseXml(svg);
  assert.equal(byClass(root, "series").length, 2);
  assert.ok(!svg.includes("NaN") && !svg.includes("Infinity"), "no NaN/Infinity coordinates");
});
