/** Plain-text formatting shared by CLI commands. */

/** Bytes as B / KiB / MiB / GiB with 3 significant digits. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toPrecision(3)} ${units[i]}`;
}

/** A markdown-compatible table with columns padded to width; numeric-looking cells right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const width = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? "").length)));
  const numeric = (s: string) => /^[-+]?[\d.,]+(x| [KMGT]?i?B)?$/.test(s);
  const line = (cells: string[]) => "| " + cells.map((s, c) => (numeric(s) ? s.padStart(width[c]!) : s.padEnd(width[c]!))).join(" | ") + " |";
  return [line(header), "|" + width.map((w) => "-".repeat(w + 2)).join("|") + "|", ...rows.map(line)].join("\n");
}
