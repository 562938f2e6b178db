/** One sequence of a DuoAttention engine: its own split KV cache, advanced one attention call at a time. */
import type { CallTensors, Staging } from "../cache/layer-shard.ts";
import type { SplitKVCache, KvBytes } from "../cache/split-cache.ts";
import type { Backend, OpTensor } from "../backend/types.ts";
import { isDeviceTensor } from "../backend/validate.ts";
import { isQuantized } from "../dtype.ts";
import { checkInt, DuoError } from "../errors.ts";
import { INT4_MAX_ABS } from "../quant.ts";
import { callTokens } from "./call-shape.ts";
import type { DuoAttention } from "./duo.ts";

export class Sequence {
  private disposed = false;
  private readonly busy: Set<number> = new Set();

  /** @internal created by DuoAttention.sequence() */
  constructor(
    private readonly engine: DuoAttention,
    private readonly cache: SplitKVCache,
    private readonly onDispose: (s: Sequence) => void,
  ) {}

  /**
   * Append this call's K/V to `layer`'s cache and attend. Positions continue from the layer's current length.
   * q: [T, numHeads, headDim], k and v: [T, numKvHeads, headDim], all post-RoPE f32; returns [T, numHeads, headDim].
   * Rejected calls (bad shapes, context past maxContext, out of memory) leave the cache exactly as it was.
   */
  async attend(layer: number, q: Float32Array, k: Float32Array, v: Float32Array): Promise<Float32Array> {
    const T = this.check(layer, q, k, v);
    const out = new Float32Array(T * this.engine.shape.numHeads * this.engine.shape.headDim);
    await this.run(layer, { q, k, v, out, T });
    return out;
  }

  /**
   * `attend` into the caller's `out` [T, numHeads, headDim]. Each of q, k, v and out is a host Float32Array or, on a
   * one-shard backend whose capabilities say `deviceTensors` (cuda), a DeviceTensor of that backend's memory (e.g.
   * the model kernels' activations): then they never cross to the host, and a device out is complete in stream order
   * (read it through the same library). Rejected calls leave the cache exactly as it was.
   * A quantized cache (int8, int4) checks host k / v for values it cannot store (non-finite; int4: |x| > 65504); device
   * k / v are not checked: reading them would bring them to the host, which is what device tensors avoid. Their
   * records are unspecified, as duo.h says (the model's activations are finite unless the model is broken).
   */
  async attendInto(layer: number, q: OpTensor, k: OpTensor, v: OpTensor, out: OpTensor): Promise<void> {
    const T = this.check(layer, q, k, v, out);
    await this.run(layer, { q, k, v, out, T });
  }

  /**
   * Store K/V for `layer` without attending (a prefix computed elsewhere, or a cache filled for a benchmark).
   * k and v: [T, numKvHeads, headDim] post-RoPE; positions continue from the layer's length. Streaming heads keep
   * only what they would keep after attending: the sinks and the last R tokens.
   */
  async fill(layer: number, k: Float32Array, v: Float32Array): Promise<void> {
    const T = this.check(layer, null, k, v);
    await this.run(layer, { q: new Float32Array(0), k, v, out: null, T });
  }

  /** Validate a call before anything changes; returns T. `out` only for attendInto, whose tensors may be device
   *  tensors where the backend takes them (their handles and bounds are the backend's checkOps's to check). */
  private check(layer: number, q: OpTensor | null, k: OpTensor, v: OpTensor, out?: OpTensor): number {
    this.checkAlive();
    const { numLayers, numHeads, numKvHeads, headDim: D } = this.engine.shape;
    checkInt("layer", layer, 0, numLayers - 1);
    const backend = this.engine.backend, devices = backend.capabilities.deviceTensors === true && backend.shards === 1;
    for (const [name, a] of [["q", q], ["k", k], ["v", v], ["out", out ?? null]] as [string, unknown][]) {
      if (a === null || a instanceof Float32Array) continue;
      if (!isDeviceTensor(a) || out === undefined) throw new DuoError("INVALID_ARGUMENT", `${name} must be a Float32Array${out === undefined ? "" : " or a device tensor"}, got ${describe(a)}`);
      if (!devices) {
        throw new DuoError("UNSUPPORTED", `${name} is a device tensor (buffer ${a.handle}); the ${backend.name} backend takes host Float32Arrays (device tensors need a one-shard backend whose capabilities say deviceTensors, e.g. cuda)`);
      }
    }
    const T = callTokens(q, k, v, { numHeads, numKvHeads, headDim: D });
    if (out !== undefined && out.length !== T * numHeads * D) {
      throw new DuoError("SHAPE_MISMATCH", `out has ${out.length} elements; for T=${T} tokens it must be [T, numHeads=${numHeads}, headDim=${D}] = ${T * numHeads * D}`);
    }
    if (isQuantized(this.engine.kvDtype)) checkQuantizable(this.engine.kvDtype, k, v);
    const cached = this.cache.length(layer);
    if (cached + T > this.engine.maxContext) {
      throw new DuoError("CAPACITY", `layer ${layer} holds ${cached} tokens; ${T} more would exceed maxContext = ${this.engine.maxContext}`);
    }
    if (this.busy.has(layer)) throw new DuoError("INVALID_ARGUMENT", `layer ${layer} has a call in flight; await it before the next one`);
    return T;
  }

  /** Reserve memory (all or nothing), run the ops on every shard, then advance the layer. */
  private async run(layer: number, x: CallTensors): Promise<void> {
    this.busy.add(layer);
    try {
      const undo = this.cache.reserve(layer, x.T);
      let staging: (Staging | null)[] = [];
      try {
        if (x.out) staging = this.engine.stagingFor(this.cache.stagingBytes(layer, x.T));
      } catch (e) {
        undo();
        throw e;
      }
      const { ops, finish } = this.cache.callOps(layer, x, staging);
      try {
        await Promise.all(ops.map((list, s) => (list.length ? this.engine.backend.run(s, list) : undefined)));
      } catch (e) {
        // A backend that fails late (a worker whose memory could not grow after all) may have lost the buffers this
        // call reserved: drop them, so the cache is what it was before the call and later calls do not meet them.
        undo();
        throw e;
      }
      finish();
      this.cache.commit(layer, x.T);
    } finally {
      this.busy.delete(layer);
    }
  }

  /** The engine's attention backend: where attendInto's device tensors must live (capabilities.deviceTensors). */
  get backend(): Backend {
    return this.engine.backend;
  }

  /** Tokens cached for `layer`. */
  length(layer: number): number {
    this.checkAlive();
    checkInt("layer", layer, 0, this.engine.shape.numLayers - 1);
    return this.cache.length(layer);
  }

  /** KV bytes held (SPEC.md §4.4), the full-attention equivalent, and what the backend has reserved. */
  bytes(): KvBytes {
    this.checkAlive();
    return this.cache.bytes();
  }

  /** Empty the cache (memory is returned to the backend); the sequence can be reused. */
  reset(): void {
    this.checkAlive();
    this.cache.clear();
  }

  dispose(): void {
    if (this.disposed) return;
    this.cache.clear();
    this.disposed = true;
    this.onDispose(this);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  private checkAlive(): void {
    this.engine.checkAlive();
    if (this.disposed) throw new DuoError("DISPOSED", "this sequence has been disposed; call duo.sequence() for a new one");
  }
}

/** A quantized cache stores finite values only (and int4, whose min is an f16, magnitudes up to 65504): src/quant.ts. */
function checkQuantizable(dtype: "int8" | "int4", k: OpTensor, v: OpTensor): void {
  const max = dtype === "int4" ? INT4_MAX_ABS : Infinity;
  for (const [name, a] of [["k", k], ["v", v]] as const) {
    if (isDeviceTensor(a)) continue; // not read on the host: see attendInto
    for (let i = 0; i < a.length; i++) {
      if (!(Math.abs(a[i]!) <= max)) {
        throw new DuoError("INVALID_ARGUMENT", `${name}[${i}] is ${a[i]}: a kvDtype "${dtype}" cache holds ${dtype === "int4" ? "finite values of magnitude at most 65504 (its min is an f16)" : "finite values"}; use "f32" for others`);
      }
    }
  }
}

function describe(a: unknown): string {
  if (a === null || typeof a !== "object") return String(a);
  return (a as object).constructor?.name ?? "an object";
}
