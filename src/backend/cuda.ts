// Placeholder until the cuda backend lands: it reports itself unusable, with the reason.
import { DuoError } from "../errors.ts";
import type { BackendOptions } from "./registry.ts";
import type { Backend, BackendProbe } from "./types.ts";

export async function probeCuda(_opts: BackendOptions): Promise<BackendProbe> {
  return { name: "cuda", usable: false, reason: "not built into this version yet" };
}
export async function createCudaBackend(_opts: BackendOptions): Promise<Backend> {
  throw new DuoError("BACKEND_UNAVAILABLE", "cuda backend: not built into this version yet");
}
