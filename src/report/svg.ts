/**
 * Self-contained SVG line charts (no fonts, scripts or external references): one or more panels, each with axes,
 * ticks, unit labels, several series and a legend, under a figure title. Used by `duo bench` and `duo demo` to
 * write plots that read without the accompanying text.
 *
 *   figure({ title: "Decode", panels: [{ title: "Latency", x: { label: "context", unit: "tokens", log: 2 },
 *     y: { label: "latency", unit: "ms / token" }, series: [{ name: "full", points: [[8192, 12], [16384, 25]] }] }] })
 */

export interface Axis {
  label: string;
  /** shown in parentheses after the label, e.g. "ms / token" */
  unit?: string;
  /** logarithmic scale with this base (2 suits token counts, 10 suits wide ranges); linear when absent */
  log?: 2 | 10;
  /** domain bounds; by default the data range (a linear axis starts at 0 unless `fromZero` is false) */
  min?: number;
  max?: number;
  fromZero?: boolean;
  /** tick label text (default: compact numbers; token-style "8K" / "1M" on a base-2 log axis) */
  format?: (v: number) => string;
}

export interface Series {
  name: string;
  /** [x, y] points in x order; y = null leaves a gap (e.g. "does not fit") */
  points: readonly (readonly [number, number | null])[];
  /** CSS colour; by default the next colour of a colour-blind-safe palette */
  color?: string;
  /** a dashed line without markers, for computed (theoretical) series */
  dashed?: boolean;
}

export interface Panel {
  title: string;
  x: Axis;
  y: Axis;
  series: readonly Series[];
}

export interface Figure {
  title: string;
  /** a smaller line under the title (setup, machine, units) */
  subtitle?: string;
  panels: readonly Panel[];
  /** panels per row (default: up to 2) */
  columns?: number;
  panelWidth?: number;
  panelHeight?: number;
}

/** Okabe–Ito colours: distinguishable with the common colour-vision deficiencies. */
export const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"] as const;

const FONT = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\"";
const MARGIN = { left: 64, right: 16, top: 30, bottom: 50 };
const LEGEND_ROW = 18;

/** Escape text for use inside SVG elements and attributes. */
export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&apos;" })[c]!);
}

/** 8192 → "8K", 1048576 → "1M", 1536 → "1.5K" (binary multiples, as context lengths are usually given). */
export function formatTokens(v: number): string {
  for (const [unit, size] of [["M", 1 << 20], ["K", 1 << 10]] as const) {
    if (Math.abs(v) >= size) return `${trim(v / size)}${unit}`;
  }
  return trim(v);
}

/** Compact decimal numbers: 0.25, 12, 1.5k, 2M. */
export function formatNumber(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e9) return `${trim(v / 1e9)}G`;
  if (a >= 1e6) return `${trim(v / 1e6)}M`;
  if (a >= 1e4) return `${trim(v / 1e3)}k`;
  return trim(v);
}

function trim(v: number): string {
  return String(Number(v.toPrecision(3)));
}

/** A figure with one or more panels. */
export function figure(fig: Figure): string {
  const cols = Math.max(1, Math.min(fig.columns ?? 2, fig.panels.length));
  const rows = Math.ceil(fig.panels.length / cols);
  const pw = fig.panelWidth ?? 460;
  const legendRows = Math.max(1, ...fig.panels.map((p) => legendLayout(p.series, pw).rows));
  const ph = (fig.panelHeight ?? 300) + legendRows * LEGEND_ROW;
  const head = fig.subtitle ? 52 : 34;
  const width = cols * pw, height = head + rows * ph + 6;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT}>`,
    `<title>${escapeXml(fig.title)}</title>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text class="figure-title" x="${width / 2}" y="22" text-anchor="middle" font-size="16" font-weight="bold">${escapeXml(fig.title)}</text>`,
  ];
  if (fig.subtitle) parts.push(`<text class="subtitle" x="${width / 2}" y="42" text-anchor="middle" font-size="11" fill="#444444">${escapeXml(fig.subtitle)}</text>`);
  fig.panels.forEach((p, i) => {
    const x0 = (i % cols) * pw, y0 = head + Math.floor(i / cols) * ph;
    parts.push(`<g class="panel" transform="translate(${x0},${y0})">`, ...panel(p, pw, ph, legendRows), "</g>");
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

/** A single-panel figure. */
export function lineChart(p: Panel, size: { width?: number; height?: number } = {}): string {
  return figure({ title: p.title, panels: [{ ...p, title: "" }], panelWidth: size.width, panelHeight: size.height });
}

interface Scale {
  map: (v: number) => number;
  ticks: number[];
  format: (v: number) => string;
}

function panel(p: Panel, pw: number, ph: number, legendRows: number): string[] {
  const plotW = pw - MARGIN.left - MARGIN.right;
  const plotH = ph - MARGIN.top - MARGIN.bottom - legendRows * LEGEND_ROW;
  const left = MARGIN.left, top = MARGIN.top, bottom = top + plotH, right = left + plotW;
  const xs = p.series.flatMap((s) => s.points.map((pt) => pt[0]));
  const ys = p.series.flatMap((s) => s.points.flatMap((pt) => (pt[1] === null ? [] : [pt[1]])));
  const sx = scale(p.x, xs, left, right);
  const sy = scale(p.y, ys, bottom, top);
  const out: string[] = [];
  if (p.title) out.push(`<text class="panel-title" x="${left + plotW / 2}" y="18" text-anchor="middle" font-size="13" font-weight="bold">${escapeXml(p.title)}</text>`);
  // Grid and ticks.
  for (const t of sy.ticks) {
    const y = fix(sy.map(t));
    out.push(`<line class="grid" x1="${left}" y1="${y}" x2="${right}" y2="${y}" stroke="#e4e4e4" stroke-width="1"/>`);
    out.push(`<line class="tick" x1="${left - 5}" y1="${y}" x2="${left}" y2="${y}" stroke="#333333"/>`);
    out.push(`<text class="tick-label" x="${left - 8}" y="${fix(y + 4)}" text-anchor="end" font-size="11">${escapeXml(sy.format(t))}</text>`);
  }
  for (const t of sx.ticks) {
    const x = fix(sx.map(t));
    out.push(`<line class="grid" x1="${x}" y1="${top}" x2="${x}" y2="${bottom}" stroke="#efefef" stroke-width="1"/>`);
    out.push(`<line class="tick" x1="${x}" y1="${bottom}" x2="${x}" y2="${bottom + 5}" stroke="#333333"/>`);
    out.push(`<text class="tick-label" x="${x}" y="${bottom + 18}" text-anchor="middle" font-size="11">${escapeXml(sx.format(t))}</text>`);
  }
  // Axes.
  out.push(`<line class="axis x-axis" x1="${left}" y1="${bottom}" x2="${right}" y2="${bottom}" stroke="#333333" stroke-width="1.2"/>`);
  out.push(`<line class="axis y-axis" x1="${left}" y1="${top}" x2="${left}" y2="${bottom}" stroke="#333333" stroke-width="1.2"/>`);
  out.push(`<text class="axis-label x-label" x="${left + plotW / 2}" y="${bottom + 36}" text-anchor="middle" font-size="12">${escapeXml(axisTitle(p.x))}</text>`);
  out.push(`<text class="axis-label y-label" transform="translate(16,${fix(top + plotH / 2)}) rotate(-90)" text-anchor="middle" font-size="12">${escapeXml(axisTitle(p.y))}</text>`);
  // Series: one <path> each (gaps become a new "M"), markers for measured series.
  p.series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length]!;
    let d = "", pen = false;
    const marks: string[] = [];
    for (const [x, y] of s.points) {
      if (y === null) {
        pen = false;
        continue;
      }
      const px = fix(sx.map(x)), py = fix(sy.map(y));
      d += `${pen ? "L" : "M"}${px},${py} `;
      pen = true;
      if (!s.dashed) marks.push(`<circle cx="${px}" cy="${py}" r="3" fill="${color}"/>`);
    }
    const dash = s.dashed ? ` stroke-dasharray="6,4"` : "";
    out.push(`<path class="series" data-series="${escapeXml(s.name)}" d="${d.trim()}" fill="none" stroke="${color}" stroke-width="2"${dash}/>`);
    out.push(...marks);
  });
  // Legend under the x-axis label.
  const layout = legendLayout(p.series, pw);
  let lx = left, row = 0;
  p.series.forEach((s, i) => {
    const w = layout.widths[i]!;
    if (lx + w > pw - MARGIN.right && lx > left) {
      lx = left;
      row++;
    }
    const ly = bottom + 48 + row * LEGEND_ROW;
    const color = s.color ?? PALETTE[i % PALETTE.length]!;
    const dash = s.dashed ? ` stroke-dasharray="6,4"` : "";
    out.push(`<g class="legend-item"><line x1="${lx}" y1="${ly}" x2="${lx + 22}" y2="${ly}" stroke="${color}" stroke-width="2"${dash}/>` +
      `<text class="legend-label" x="${lx + 27}" y="${ly + 4}" font-size="11">${escapeXml(s.name)}</text></g>`);
    lx += w;
  });
  return out;
}

/** Legend entries flow left to right and wrap; entry width is estimated from the label length. */
function legendLayout(series: readonly Series[], pw: number): { widths: number[]; rows: number } {
  const widths = series.map((s) => 40 + s.name.length * 6.2);
  let x = MARGIN.left, rows = series.length ? 1 : 0;
  for (const w of widths) {
    if (x + w > pw - MARGIN.right && x > MARGIN.left) {
      x = MARGIN.left;
      rows++;
    }
    x += w;
  }
  return { widths, rows };
}

function axisTitle(a: Axis): string {
  return a.unit ? `${a.label} (${a.unit})` : a.label;
}

function fix(v: number): number {
  return Math.round(v * 10) / 10;
}

/** Map data values onto [from, to] pixels, with ticks chosen for the axis type. */
function scale(a: Axis, data: number[], from: number, to: number): Scale {
  const finite = data.filter((v) => Number.isFinite(v) && (!a.log || v > 0));
  let lo = a.min ?? (finite.length ? Math.min(...finite) : a.log ? 1 : 0);
  let hi = a.max ?? (finite.length ? Math.max(...finite) : lo + 1);
  if (a.log) {
    const b = a.log;
    if (hi <= lo) hi = lo * b;
    const l0 = Math.log(lo) / Math.log(b), l1 = Math.log(hi) / Math.log(b);
    // Ticks at integer powers of the base, thinned to at most 8.
    const first = Math.ceil(l0 - 1e-9), last = Math.floor(l1 + 1e-9);
    const step = Math.max(1, Math.ceil((last - first + 1) / 8));
    const ticks: number[] = [];
    for (let e = first; e <= last; e += step) ticks.push(b ** e);
    if (ticks.length < 2) ticks.splice(0, ticks.length, lo, hi);
    const pad = (l1 - l0) * 0.04 || 0.5;
    const m0 = l0 - pad, m1 = l1 + pad;
    return {
      map: (v) => from + ((Math.log(v) / Math.log(b) - m0) / (m1 - m0)) * (to - from),
      ticks,
      format: a.format ?? (b === 2 ? formatTokens : formatNumber),
    };
  }
  if (a.min === undefined && (a.fromZero ?? true)) lo = Math.min(0, lo);
  if (hi <= lo) hi = lo + (Math.abs(lo) || 1);
  const step = niceStep((hi - lo) / 5);
  const t0 = Math.ceil(lo / step - 1e-9) * step;
  if (a.max === undefined) hi = Math.ceil(hi / step - 1e-9) * step;
  if (a.min === undefined) lo = Math.floor(lo / step + 1e-9) * step;
  const ticks: number[] = [];
  for (let t = Math.min(t0, lo); t <= hi + step * 1e-6; t += step) if (t >= lo - step * 1e-6) ticks.push(Number(t.toPrecision(12)));
  return { map: (v) => from + ((v - lo) / (hi - lo)) * (to - from), ticks, format: a.format ?? formatNumber };
}

/** The 1-2-2.5-5 step nearest above `raw`. */
function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw * 0.999) return m * p;
  return 10 * p;
}
