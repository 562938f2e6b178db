// Placeholder until the wasm backend lands: it reports itself unusable, with the reason.
import { DuoError } from "../errors.ts";
import type { BackendOptions } from "./registry.ts";
import type { Backend, BackendProbe } from "./types.ts";

export async function probeWasm(_opts: BackendOptions): Promise<BackendProbe> {
  return { name: "wasm", usable: false, reason: "not built into this version yet" };
}
export async function createWasmBackend(_opts: BackendOptions): Promise<Backend> {
  throw new DuoError("BACKEND_UNAVAILABLE", "wasm backend: not built into this version yet");
}
