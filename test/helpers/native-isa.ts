// Runs a body once per native instruction set this CPU (and library) has, each selected in turn for the whole
// library (duo_select_isa), then puts back the one chosen at load, also when the body throws. Returns the sets that
// ran, so a test can assert that some did.
import { selectNativeIsa } from "../../src/backend/native.ts";

export async function onEachNativeIsa(isas: readonly string[], body: (isa: string) => Promise<void>): Promise<string[]> {
  const ran: string[] = [];
  try {
    for (const isa of isas) {
      if (!(await selectNativeIsa(isa))) continue;
      ran.push(isa);
      await body(isa);
    }
  } finally {
    await selectNativeIsa("");
  }
  return ran;
}
