/**
 * The null backend: allocates nothing real and computes nothing. It measures what the TypeScript layers above the
 * kernels cost (bookkeeping, planning, validation) — overhead tests and benchmarks only.
 */
import { KV_DTYPES } from "../dtype.ts";
import { DuoError } from "../errors.ts";
import type { KvLayout } from "./layout.ts";
import type { Backend, BackendCapabilities, BackendMemory, Handle, Op } from "./types.ts";
import { checkOps } from "./validate.ts";

export class NullBackend implements Backend {
  readonly name = "null" as const;
  readonly shards = 1;
  readonly capabilities: BackendCapabilities = { dtypes: KV_DTYPES, headDims: { multipleOf: 1 }, layouts: ["NHD"] };
  pageLayout(): KvLayout {
    return "NHD";
  }
  private sizes = new Map<Handle, number>();
  private next = 1;
  private total = 0;

  alloc(_shard: number, bytes: number): Handle {
    this.sizes.set(this.next, bytes);
    this.total += bytes;
    return this.next++;
  }
  free(_shard: number, h: Handle): void {
    this.total -= this.sizes.get(h) ?? 0;
    this.sizes.delete(h);
  }
  memory(_shard: number): BackendMemory {
    return { allocated: this.total, capacity: Infinity };
  }
  /** Validates like every backend (its cost is part of what this backend measures), then does nothing. */
  async run(_shard: number, ops: Op[]): Promise<void> {
    checkOps(ops, this.capabilities, (h) => this.size(h));
  }
  async read(_shard: number, _h: Handle, _o: number, byteLength: number): Promise<Uint8Array> {
    return new Uint8Array(byteLength);
  }
  async dispose(): Promise<void> {
    this.sizes.clear();
  }
  private size(h: Handle): number {
    const n = this.sizes.get(h);
    if (n === undefined) throw new DuoError("INVALID_ARGUMENT", `null backend: unknown buffer handle ${h}`);
    return n;
  }
}
