// A line chart in SVG, redrawn whole on each update (a few dozen points): axes from 0, one polyline per series.
const NS = "http://www.w3.org/2000/svg";
const PAD = { left: 56, right: 12, top: 28, bottom: 40 };

function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** A round step for at most about 5 ticks up to max: 1, 2 or 5 times a power of ten; for token counts (`binary`)
 *  a power of two, so the labels read 1K, 2K, 4K. */
function tickStep(max, binary) {
  const raw = max / 5;
  if (binary) return 2 ** Math.max(0, Math.ceil(Math.log2(raw || 1)));
  const p = 10 ** Math.floor(Math.log10(raw || 1));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
}

/**
 * Draw `series` ([{ name, color, points: [[x, y], ...] }], x a token count) into `svg`, with a title and axis labels.
 * Each polyline carries data-series and data-points, so a test can read what was drawn.
 */
export function drawChart(svg, { title, xLabel, yLabel, series }) {
  const W = Number(svg.getAttribute("width")), H = Number(svg.getAttribute("height"));
  const w = W - PAD.left - PAD.right, h = H - PAD.top - PAD.bottom;
  const all = series.flatMap((s) => s.points);
  const xMax = Math.max(1, ...all.map((p) => p[0])), yMax = Math.max(1e-9, ...all.map((p) => p[1])) * 1.1;
  const X = (x) => PAD.left + (x / xMax) * w, Y = (y) => PAD.top + h - (y / yMax) * h;
  svg.replaceChildren();
  svg.append(el("text", { x: PAD.left, y: 16, style: "font-weight:600;fill:#1d2433" }, title));
  const xs = tickStep(xMax, true), ys = tickStep(yMax, false);
  for (let v = 0; v <= xMax + 1e-9; v += xs) {
    svg.append(el("line", { x1: X(v), x2: X(v), y1: PAD.top, y2: PAD.top + h, stroke: "#eef1f5" }));
    svg.append(el("text", { x: X(v), y: PAD.top + h + 16, "text-anchor": "middle" }, v >= 1024 ? `${v / 1024}K` : String(v)));
  }
  for (let v = 0; v <= yMax + 1e-9; v += ys) {
    svg.append(el("line", { x1: PAD.left, x2: PAD.left + w, y1: Y(v), y2: Y(v), stroke: "#eef1f5" }));
    svg.append(el("text", { x: PAD.left - 6, y: Y(v) + 4, "text-anchor": "end" }, Number(v.toPrecision(3)).toString()));
  }
  svg.append(el("line", { x1: PAD.left, x2: PAD.left + w, y1: PAD.top + h, y2: PAD.top + h, stroke: "#9aa3b2" }));
  svg.append(el("line", { x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: PAD.top + h, stroke: "#9aa3b2" }));
  svg.append(el("text", { x: PAD.left + w / 2, y: H - 6, "text-anchor": "middle" }, xLabel));
  svg.append(el("text", { x: 14, y: PAD.top + h / 2, transform: `rotate(-90 14 ${PAD.top + h / 2})`, "text-anchor": "middle" }, yLabel));
  for (const s of series) {
    const pts = s.points.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(" ");
    svg.append(el("polyline", { points: pts, fill: "none", stroke: s.color, "stroke-width": 2.5, "data-series": s.name, "data-points": s.points.length }));
    for (const [x, y] of s.points) svg.append(el("circle", { cx: X(x), cy: Y(y), r: 3, fill: s.color }));
  }
}
