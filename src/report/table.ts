/**
 * Tables for reports: one description of columns and rows, rendered as aligned plain text (terminals) or as a
 * GitHub-flavoured markdown table (report files). Numbers right-aligned, text left-aligned.
 */

export interface Column {
  title: string;
  /** "right" for numbers (default when most cells of the column are numeric), "left" for text */
  align?: "left" | "right";
}

export type Cell = string | number | null;

export interface TableOptions {
  /** "text": padded columns separated by two spaces, a dashed rule under the header; "markdown": pipes */
  format?: "text" | "markdown";
  /** how numbers become text (default: 3 significant digits, no exponent below 1e9) */
  number?: (v: number) => string;
  /** text for null cells (default "-") */
  empty?: string;
}

/** 3 significant digits, thousands kept whole (12345 → "12345", 0.01234 → "0.0123"). */
export function formatCell(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Math.abs(v) >= 1000) return String(Math.round(v));
  return String(Number(v.toPrecision(3)));
}

/** Bytes in binary units with 3 significant digits: 536 MiB, 1.02 GiB, 16.0 GiB (never an exponent). */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (i < units.length - 1 && Math.abs(n) >= 1024 * (1 - 5e-4)) {
    n /= 1024;
    i++;
  }
  if (i === 0) return `${Math.round(n)} B`;
  const a = Math.abs(n);
  return `${n.toFixed(a >= 99.95 ? 0 : a >= 9.995 ? 1 : 2)} ${units[i]}`;
}

/** "2.03x" */
export function formatRatio(v: number | null | undefined): string {
  return v === null || v === undefined || !Number.isFinite(v) ? "-" : `${v.toFixed(2)}x`;
}

const NUMERIC = /^[-+]?(\d[\d,]*(\.\d+)?|\.\d+)(e[-+]?\d+)?\s*(x|%|B|[kKMGT]i?B|ms|s|GB\/s)?$/;

export function renderTable(columns: readonly (Column | string)[], rows: readonly (readonly Cell[])[], o: TableOptions = {}): string {
  const cols = columns.map((c) => (typeof c === "string" ? { title: c } : c));
  const num = o.number ?? formatCell;
  const markdown = (o.format ?? "text") === "markdown";
  const text = rows.map((r) => cols.map((_, i) => {
    const v = r[i] ?? null;
    const s = v === null ? (o.empty ?? "-") : typeof v === "number" ? num(v) : v;
    return markdown ? s.replace(/\|/g, "\\|") : s;
  }));
  // A column is numeric (right-aligned) when most of its cells are numbers; "does not fit"-style notes may mix in.
  const align = cols.map((c, i) => {
    const filled = text.map((r) => r[i]!).filter((s) => s !== (o.empty ?? "-"));
    return c.align ?? (filled.filter((s) => NUMERIC.test(s)).length * 2 > filled.length ? "right" : "left");
  });
  const width = cols.map((c, i) => Math.max(c.title.length, ...text.map((r) => r[i]!.length)));
  const pad = (s: string, i: number) => (align[i] === "right" ? s.padStart(width[i]!) : s.padEnd(width[i]!));
  if (markdown) {
    const line = (cells: string[]) => `| ${cells.map(pad).join(" | ")} |`;
    const rule = `|${width.map((w, i) => (align[i] === "right" ? `${"-".repeat(w + 1)}:` : `${"-".repeat(w + 2)}`)).join("|")}|`;
    return [line(cols.map((c) => c.title)), rule, ...text.map(line)].join("\n") + "\n";
  }
  const line = (cells: string[]) => cells.map(pad).join("  ").replace(/\s+$/, "");
  return [line(cols.map((c) => c.title)), width.map((w) => "-".repeat(w)).join("  "), ...text.map(line)].join("\n") + "\n";
}
