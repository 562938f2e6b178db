/**
 * The null backend: allocates nothing real and computes nothing. It measures what the TypeScript layers above the
 * kernels cost (bookkeeping, planning, validation) — overhead tests and benchmarks only.
 */
import { KV_DTYPES } from "../dtype.ts";
import type { KvLayout } from "./layout.ts";
import type { Backend, BackendMemory, Handle, Op } from "./types.ts";

export class NullBackend implements Backend {
  readonly name = "null" as const;
  readonly shards = 1;
  readonly dtypes = KV_DTYPES;
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
  async run(_shard: number, _ops: Op[]): Promise<void> {}
  async read(_shard: number, _h: Handle, _o: number, byteLength: number): Promise<Uint8Array> {
    return new Uint8Array(byteLength);
  }
  async dispose(): Promise<void> {
    this.sizes.clear();
  }
}
