/**
 * Progress for long CLI work: a redrawn bar on a terminal, a plain line at every quarter otherwise (logs, CI).
 * Writes to stderr so stdout stays clean for tables and JSON.
 */
import { isTTY, write } from "./io.ts";

export class Progress {
  private readonly tty = isTTY("stderr");
  private lastQuarter = 0;
  private readonly start = performance.now();

  constructor(private readonly label: string, private readonly total: number) {}

  update(done: number, detail = ""): void {
    const frac = this.total > 0 ? Math.min(1, done / this.total) : 1;
    const secs = ((performance.now() - this.start) / 1000).toFixed(1);
    if (this.tty) {
      const width = 28, fill = Math.round(frac * width);
      write(`\r  ${this.label} [${"#".repeat(fill)}${".".repeat(width - fill)}] ${(frac * 100).toFixed(0).padStart(3)}% ${secs}s ${detail}\x1b[K`, "stderr");
      return;
    }
    const quarter = Math.floor(frac * 4);
    if (quarter > this.lastQuarter && frac > 0) {
      this.lastQuarter = quarter;
      write(`  ${this.label}: ${(frac * 100).toFixed(0)}% (${secs}s) ${detail}\n`, "stderr");
    }
  }

  done(detail = ""): void {
    this.update(this.total, detail);
    if (this.tty) write("\n", "stderr");
  }
}
