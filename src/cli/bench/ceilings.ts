/** The machine's two ceilings as this runtime sees them (placeholder until bench/wasm-kernels.ts lands). */
import type { Ceilings } from "./roofline.ts";

export async function measureCeilings(_workers: number): Promise<Ceilings | null> {
  return null;
}
