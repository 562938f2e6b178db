/**
 * The small argument parser every `duo` command shares: `--name value` / `--name=value` options, `--flag`
 * switches, positionals, and `--` to end options. Unknown or repeated options are errors (INVALID_ARGUMENT, which
 * the CLI prints as one line and exits with status 2).
 */
import { DuoError } from "../errors.ts";

export interface ArgSpec {
  /** options that take a value, without the leading "--" */
  values?: readonly string[];
  /** switches without a value, without the leading "--" */
  flags?: readonly string[];
}

export interface Args {
  positional: string[];
  values: Map<string, string>;
  flags: Set<string>;
}

export function parseArgs(argv: readonly string[], spec: ArgSpec): Args {
  const values = new Set(spec.values ?? []), flags = new Set(spec.flags ?? []);
  const valid = () => [...values].map((v) => `--${v} <value>`).concat([...flags].map((f) => `--${f}`)).join(", ");
  const out: Args = { positional: [], values: new Map(), flags: new Set() };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      out.positional.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith("--") || arg === "-") {
      out.positional.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    if (flags.has(name)) {
      if (eq >= 0) throw new DuoError("INVALID_ARGUMENT", `--${name} takes no value`);
      out.flags.add(name);
    } else if (values.has(name)) {
      const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
      if (value === undefined) throw new DuoError("INVALID_ARGUMENT", `--${name} needs a value`);
      if (out.values.has(name)) throw new DuoError("INVALID_ARGUMENT", `--${name} given twice`);
      out.values.set(name, value);
    } else {
      throw new DuoError("INVALID_ARGUMENT", `unknown option ${arg.slice(0, eq < 0 ? undefined : eq)}; valid options: ${valid()}`);
    }
  }
  return out;
}

/** The number given for `--name`, or undefined; throws unless it is a number in [min, max] (an integer if asked). */
export function numberArg(
  args: Args,
  name: string,
  range: { min?: number; max?: number; integer?: boolean } = {},
): number | undefined {
  const raw = args.values.get(name);
  if (raw === undefined) return undefined;
  const n = raw.trim() === "" ? NaN : Number(raw);
  const { min = -Infinity, max = Infinity, integer = false } = range;
  if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    const kind = integer ? "an integer" : "a number";
    const bounds = min > -Infinity && max < Infinity ? ` in [${min}, ${max}]` : min > -Infinity ? ` >= ${min}` : max < Infinity ? ` <= ${max}` : "";
    throw new DuoError("INVALID_ARGUMENT", `--${name} must be ${kind}${bounds}, got ${JSON.stringify(raw)}`);
  }
  return n;
}
