/** Assertions for DuoError: the right code and a message that says what is valid. */
import assert from "node:assert/strict";
import { DuoError, type DuoErrorCode } from "../../src/errors.ts";

/** A predicate for assert.throws / assert.rejects. */
export function isDuo(code: DuoErrorCode, message: RegExp): (e: unknown) => true {
  return (e: unknown) => {
    assert.ok(e instanceof DuoError, `expected a DuoError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  };
}

export function throwsDuo(fn: () => unknown, code: DuoErrorCode, message: RegExp): void {
  assert.throws(fn, isDuo(code, message));
}

export async function rejectsDuo(p: Promise<unknown>, code: DuoErrorCode, message: RegExp): Promise<void> {
  await assert.rejects(p, isDuo(code, message));
}
