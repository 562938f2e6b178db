/** Byte sizes on the command line: "20GiB", "512MiB", "1.5e9" (bytes). (src/cli/demo.ts has its own, with "max".) */
import { DuoError } from "../errors.ts";

const UNITS: Record<string, number> = { b: 1, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12 };

export function parseSize(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?(?:e\d+)?)\s*([a-z]+)?$/i.exec(text.trim());
  const unit = UNITS[(m?.[2] ?? "B").toLowerCase()];
  const bytes = m && unit ? Number(m[1]) * unit : NaN;
  if (!(bytes >= 1)) throw new DuoError("INVALID_ARGUMENT", `${flag} must be a size like 20GiB, 512MiB, 16GB or 1000000 (bytes); got ${JSON.stringify(text)}`);
  return Math.floor(bytes);
}
