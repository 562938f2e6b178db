/**
 * A heatmap as a standalone SVG: one panel per method, rows × columns of scored cells, axes with tick labels,
 * panel titles, and a color-bar legend. Colors run red → yellow → green over [vmin, vmax] (upstream's NIAH
 * colormap #F0496E, #EBB839, #0CD79F); a missing cell is grey.
 */

export interface HeatmapPanel {
  title: string;
  /** [row][column] in [vmin, vmax], or null where nothing was measured */
  values: (number | null)[][];
  /** optional hover text per cell */
  notes?: (string | null)[][];
}

export interface HeatmapOptions {
  title: string;
  /** a line under the title (what the score means) */
  subtitle?: string;
  rowLabels: string[];
  columnLabels: string[];
  rowTitle: string;
  columnTitle: string;
  legend: string;
  vmin?: number;
  vmax?: number;
}

const STOPS = [[0xf0, 0x49, 0x6e], [0xeb, 0xb8, 0x39], [0x0c, 0xd7, 0x9f]] as const;

/** The colormap at f in [0, 1]. */
export function colorAt(f: number): string {
  const x = Math.min(1, Math.max(0, f)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x)), t = x - i;
  const c = STOPS[i]!.map((a, k) => Math.round(a + (STOPS[i + 1]![k]! - a) * t));
  return `#${c.map((v) => v.toString(16).padStart(2, "0")).join("")}`;
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

export function heatmapSvg(panels: HeatmapPanel[], o: HeatmapOptions): string {
  const vmin = o.vmin ?? 0, vmax = o.vmax ?? 1;
  const rows = o.rowLabels.length, cols = o.columnLabels.length;
  const cw = Math.max(14, Math.min(48, Math.floor(560 / Math.max(1, cols)))), ch = Math.max(12, Math.min(32, Math.floor(360 / Math.max(1, rows))));
  const left = 70, top = 64, bottom = 78, gap = 36;
  const panelW = left + cols * cw, legendW = 110;
  const width = panels.length * (panelW + gap) + legendW, height = top + rows * ch + bottom;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${esc(o.title)}</text>`,
  ];
  if (o.subtitle) out.push(`<text x="${width / 2}" y="37" text-anchor="middle" fill="#555">${esc(o.subtitle)}</text>`);
  panels.forEach((p, n) => {
    const x0 = n * (panelW + gap) + left;
    out.push(`<g>`, `<text x="${x0 + (cols * cw) / 2}" y="${top - 14}" text-anchor="middle" font-size="13" font-weight="bold">${esc(p.title)}</text>`);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const v = p.values[r]?.[c] ?? null;
        const fill = v === null ? "#d0d0d0" : colorAt((v - vmin) / (vmax - vmin));
        const note = p.notes?.[r]?.[c];
        const tip = `${o.rowTitle} ${o.rowLabels[r]}, ${o.columnTitle} ${o.columnLabels[c]}: ${v === null ? "not run" : v.toFixed(3)}${note ? ` — ${note}` : ""}`;
        out.push(`<rect x="${x0 + c * cw}" y="${top + r * ch}" width="${cw}" height="${ch}" fill="${fill}" stroke="white" stroke-width="1"><title>${esc(tip)}</title></rect>`);
      }
    }
    for (let r = 0; r < rows; r++) out.push(`<text x="${x0 - 6}" y="${top + r * ch + ch / 2 + 4}" text-anchor="end">${esc(o.rowLabels[r]!)}</text>`);
    for (let c = 0; c < cols; c++) {
      const cx = x0 + c * cw + cw / 2, cy = top + rows * ch + 8;
      out.push(`<text x="${cx}" y="${cy}" text-anchor="end" transform="rotate(-45 ${cx} ${cy})">${esc(o.columnLabels[c]!)}</text>`);
    }
    out.push(
      `<rect x="${x0}" y="${top}" width="${cols * cw}" height="${rows * ch}" fill="none" stroke="#444"/>`,
      `<text x="${x0 + (cols * cw) / 2}" y="${height - 10}" text-anchor="middle">${esc(o.columnTitle)}</text>`,
      `<text x="${x0 - 52}" y="${top + (rows * ch) / 2}" text-anchor="middle" transform="rotate(-90 ${x0 - 52} ${top + (rows * ch) / 2})">${esc(o.rowTitle)}</text>`,
      `</g>`,
    );
  });
  // Legend: a vertical color bar with ticks at vmin, the middle and vmax.
  const lx = panels.length * (panelW + gap) + 10, barH = Math.max(80, rows * ch), steps = 40;
  out.push(`<g><text x="${lx}" y="${top - 14}" font-size="12" font-weight="bold">${esc(o.legend)}</text>`);
  for (let i = 0; i < steps; i++) {
    out.push(`<rect x="${lx}" y="${top + (i * barH) / steps}" width="18" height="${barH / steps + 0.5}" fill="${colorAt(1 - i / (steps - 1))}"/>`);
  }
  for (const f of [0, 0.5, 1]) {
    const y = top + (1 - f) * barH;
    out.push(`<line x1="${lx + 18}" x2="${lx + 23}" y1="${y}" y2="${y}" stroke="#444"/>`, `<text x="${lx + 26}" y="${y + 4}">${(vmin + f * (vmax - vmin)).toFixed(2)}</text>`);
  }
  out.push(
    `<rect x="${lx}" y="${top}" width="18" height="${barH}" fill="none" stroke="#444"/>`,
    `<rect x="${lx}" y="${top + barH + 14}" width="18" height="12" fill="#d0d0d0" stroke="#444"/>`,
    `<text x="${lx + 26}" y="${top + barH + 24}">not run</text></g>`,
    `</svg>`,
    "",
  );
  return out.join("\n");
}
