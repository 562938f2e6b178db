/**
 * numpy.savetxt's default number format, `%.18e`: 19 significant digits, correctly rounded with ties to even,
 * exponent with a sign and at least two digits ("8.906250000000000000e-01"). JS's toExponential(18) rounds
 * ties away from zero, so the digits are computed exactly here: a finite double is m·2^e, i.e. an integer over a
 * power of ten, which BigInt expands without error.
 */
import { DuoError } from "../errors.ts";

const DIGITS = 19;

export function formatE18(x: number): string {
  if (!Number.isFinite(x)) throw new DuoError("INVALID_ARGUMENT", `cannot write ${x} as a gate; gates are finite numbers`);
  const sign = x < 0 || Object.is(x, -0) ? "-" : "";
  const [digits, exp10] = x === 0 ? ["0".repeat(DIGITS), 0] : decimalDigits(Math.abs(x));
  const exp = `${exp10 < 0 ? "-" : "+"}${String(Math.abs(exp10)).padStart(2, "0")}`;
  return `${sign}${digits[0]}.${digits.slice(1)}e${exp}`;
}

/** The first DIGITS significant digits of x > 0 (rounded half to even) and the power of ten of the first. */
function decimalDigits(x: number): [string, number] {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const hi = view.getUint32(0), lo = view.getUint32(4);
  const biased = (hi >>> 20) & 0x7ff;
  let m = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  let e = -1074; // subnormal
  if (biased !== 0) {
    m |= 1n << 52n;
    e = biased - 1075;
  }
  // x = m·2^e = int / 10^k with int = m·5^k when e = -k < 0.
  const int = e >= 0 ? m << BigInt(e) : m * 5n ** BigInt(-e);
  const k = Math.max(0, -e);
  const s = int.toString();
  let exp10 = s.length - 1 - k;
  if (s.length <= DIGITS) return [s.padEnd(DIGITS, "0"), exp10];
  let head = BigInt(s.slice(0, DIGITS));
  const rest = s.slice(DIGITS);
  const half = "5".padEnd(rest.length, "0"); // same length: string order is numeric order
  if (rest > half || (rest === half && (head & 1n) === 1n)) head += 1n;
  let d = head.toString();
  if (d.length > DIGITS) { // 999…9 rounded up to 10^DIGITS
    d = d.slice(0, DIGITS);
    exp10++;
  }
  return [d, exp10];
}
