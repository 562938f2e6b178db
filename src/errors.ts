/**
 * The one error type the library throws for bad input or an unusable environment.
 * `code` is stable (callers branch on it); the message names what was wrong and what is valid.
 */
export type DuoErrorCode =
  | "INVALID_ARGUMENT" // a value outside its valid set (negative sizes, unknown option, NaN)
  | "SHAPE_MISMATCH" // array lengths / pattern dims that do not match the model shape
  | "PATTERN_FORMAT" // a malformed gate file or config.json
  | "CAPACITY" // context past maxContext, or a cache that does not fit in the backend's memory
  | "BACKEND_UNAVAILABLE" // a backend that cannot run here (library missing, no device, no workers)
  | "UNSUPPORTED" // a dtype / head dim / architecture the chosen backend does not implement
  | "DISPOSED" // use after dispose()
  | "IO"; // files, URLs

export class DuoError extends Error {
  readonly code: DuoErrorCode;
  constructor(code: DuoErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DuoError";
    this.code = code;
  }
}

/** Throw INVALID_ARGUMENT unless `n` is an integer within [min, max]. */
export function checkInt(name: string, n: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof n !== "number" || !Number.isInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer in [${min}, ${max}]`;
    throw new DuoError("INVALID_ARGUMENT", `${name} must be ${range}, got ${String(n)}`);
  }
  return n;
}

/** Throw INVALID_ARGUMENT unless `value` is one of `valid`. */
export function checkOneOf<T extends string>(name: string, value: unknown, valid: readonly T[]): T {
  if (typeof value !== "string" || !(valid as readonly string[]).includes(value)) {
    throw new DuoError("INVALID_ARGUMENT", `${name} must be one of ${valid.map((v) => `"${v}"`).join(", ")}, got ${JSON.stringify(value)}`);
  }
  return value as T;
}
