/**
 * The Backend contract. Backends own memory and run kernels; everything else (which heads, which tokens, where
 * in the cache) is decided by pure TypeScript in src/cache and src/schedule and handed down as plain-data ops.
 *
 * Memory model
 *  - A backend has `shards` independent memory domains (1 for reference/cuda; one per worker for wasm). The cache
 *    gives every shard some KV heads of every layer (src/schedule/shard.ts) and allocates that shard's buffers there.
 *  - Buffers are numeric handles (u32, never raw pointers in JS). Their contents are only touched by ops.
 *
 * Ops
 *  - `run(shard, ops)` executes a list of ops on one shard, in order, and resolves when all are done; host arrays
 *    named `out` are filled before it resolves (a DeviceTensor `out`: in the backend's stream order). Different
 *    shards may run concurrently (Promise.all).
 *  - Ops are plain objects that can be posted to a worker or flattened for FFI as they are.
 *  - Every backend checks a run's ops with validate.ts `checkOps` (against its `capabilities` and its buffers' sizes)
 *    before any kernel runs, so every backend refuses the same ops with the same DuoError and a refused run changes
 *    nothing.
 *
 * Cache tensors: a KV buffer holds rows of `rowHeads` heads × `headDim` elements of `dtype`, token-major ("NHD": row r,
 *  head j, element d at element index (r · rowHeads + j) · headDim + d) unless an op says "T64" (tiled: layout.ts).
 *  The cache asks the backend which layout it wants for its retrieval pages (`pageLayout`); rings and staging rows
 *  are always NHD. Quantized dtypes (int8, int4) are NHD only, with one record of headBytes(dtype, headDim) bytes per
 *  row and head in place of the elements (src/quant.ts): record (r, j) at byte (r · rowHeads + j) · headBytes.
 */
import type { KvDtype } from "../dtype.ts";
import type { ModelKernels, ModelKernelsOptions } from "../model/kernels.ts";
import type { BufferLayout, KvLayout } from "./layout.ts";

export type BackendName = "reference" | "wasm" | "native" | "cuda" | "null";
export type Handle = number;

/**
 * f32 elements [offset, offset + length) of a buffer in the backend's own memory, in place of a host Float32Array in
 * an op (AppendOp.src, AttendOp.q / out / lse) on a backend with `capabilities.deviceTensors`: the model kernels'
 * activations (CudaActivations) are one, so q / k / v and the attention output of a model on the device never cross
 * to the host. `handle` is a buffer of that backend's library (its own, or its model kernels'); `offset` counts
 * elements (a safe integer: it may pass 2^32). Its values are never read on the host.
 */
export interface DeviceTensor {
  readonly handle: Handle;
  readonly offset: number;
  readonly length: number;
}

/** A tensor of an op: a host array, or a device tensor where the backend takes them. */
export type OpTensor = Float32Array | DeviceTensor;

/** Copy rows of an f32 tensor into a KV buffer, rounding to the buffer's dtype (RNE). `X`: what its tensor may be
 *  (host arrays only by default: what a backend without `deviceTensors` gets, checkOps having refused the rest). */
export interface AppendOp<X extends OpTensor = Float32Array> {
  kind: "append";
  dst: Handle;
  dtype: KvDtype;
  /** heads per row in dst */
  rowHeads: number;
  headDim: number;
  /** [T, srcHeads, headDim] f32: the K or V of a call (post-RoPE keys), in the caller's head order (host, or a
   *  DeviceTensor) */
  src: X;
  srcHeads: number;
  /** for each dst head j (length rowHeads): which src head to copy */
  heads: Int32Array;
  /** for each src token t (length T): the dst row to write, or -1 to skip the token */
  rows: Int32Array;
  /** dst's layout (layout.ts); default "NHD" */
  layout?: BufferLayout;
}

/** A run of cached keys/values: rows [rowStart, rowStart + rowCount) of a K and a V buffer (NHD), or of the one buffer
 *  that holds both (T64: k === v). */
export interface Segment {
  k: Handle;
  v: Handle;
  dtype: KvDtype;
  rowHeads: number;
  rowStart: number;
  rowCount: number;
  /** absolute position of each row of this segment (length rowCount), or the position of the first row when
   *  rows hold consecutive positions (pages of the retrieval store, a prefill chunk's staging rows) */
  positions: Int32Array | number;
  /** the buffers' layout (layout.ts: "T64" = one buffer, named as both k and v, of K64 and V64 tiles); default "NHD" */
  layout?: KvLayout;
}

/**
 * Attention of the query heads of some KV heads over a list of segments (the union of their rows is the key set).
 * For query row t (absolute position qPos0 + t) and a key at absolute position p, the key is visible iff
 *     p <= qPos0 + t                                       (causal, bottom-right aligned)
 *     and, when window is set: p < window.sink || p >= qPos0 + t - window.recent.
 * Softmax in f32 or better with scale = 1/sqrt(headDim), over visible keys only; a row with no visible key writes
 * zeros and lse = -Infinity. Output rows of query heads not covered by this op are left untouched.
 */
export interface AttendOp<X extends OpTensor = Float32Array> {
  kind: "attend";
  /** [T, numHeads, headDim] f32 queries (post-RoPE), the caller's head order (host, or a DeviceTensor) */
  q: X;
  T: number;
  numHeads: number;
  headDim: number;
  /** GQA group: query heads [h·G, h·G + G) read KV head h */
  group: number;
  /** for each KV head j of this op: its index h in the caller's head order (selects query heads h·G .. h·G+G-1) */
  qHeads: Int32Array;
  /** for each KV head j of this op: its head slot within the segments' rows (same for every segment) */
  kvSlots: Int32Array;
  segments: Segment[];
  qPos0: number;
  window: { sink: number; recent: number } | null;
  /** [T, numHeads, headDim] f32 output: rows of the covered query heads are written (host, or a DeviceTensor; out
   *  and lse are both host or both device tensors) */
  out: X;
  /** optional [T, numHeads] f32: the natural-log-sum-exp of the scaled scores of each covered row */
  lse?: X;
}

/** An op with host tensors; `Op<OpTensor>`: one that may name device tensors (what the cache hands to `run`). */
export type Op<X extends OpTensor = Float32Array> = AppendOp<X> | AttendOp<X>;

export interface BackendMemory {
  /** bytes reserved on this shard right now */
  allocated: number;
  /** the most this shard can hold (Infinity when unbounded / unknown) */
  capacity: number;
}

/**
 * What a backend's kernels implement, declared once per backend. DuoAttention.create refuses an engine the backend
 * cannot run (validate.ts `unsupported`), and every op is checked against it before a kernel sees it (`checkOps`).
 */
export interface BackendCapabilities {
  /** KV storage dtypes */
  readonly dtypes: readonly KvDtype[];
  /** head dims: the sizes the kernels are built for, or every positive multiple of `multipleOf` */
  readonly headDims: readonly number[] | { readonly multipleOf: number };
  /** cache buffer layouts the kernels read and write (layout.ts); "NHD" always, "T64" where the kernels tile */
  readonly layouts: readonly KvLayout[];
  /** ops may name DeviceTensors for append src and attend q / out / lse (cuda); absent: host Float32Arrays only */
  readonly deviceTensors?: boolean;
}

export interface Backend {
  readonly name: BackendName;
  /** independent memory domains; the cache spreads heads over them */
  readonly shards: number;
  /** what the kernels implement: dtypes, head dims, layouts */
  readonly capabilities: BackendCapabilities;
  /** The layout this backend reads fastest for retrieval pages of `pageRows` rows, read by `group` query heads per KV
   *  head (every backend accepts "NHD"). */
  pageLayout(dtype: KvDtype, headDim: number, pageRows: number, group: number): KvLayout;
  /** Allocate `bytes` on `shard`, zero-filled. Throws DuoError("CAPACITY") when it does not fit. */
  alloc(shard: number, bytes: number): Handle;
  free(shard: number, h: Handle): void;
  /** Ops naming DeviceTensors reach only a backend with `capabilities.deviceTensors`; every other refuses them in
   *  checkOps, so its implementation sees host arrays (declared as `run(shard, ops: Op[])`). */
  run(shard: number, ops: Op<OpTensor>[]): Promise<void>;
  memory(shard: number): BackendMemory;
  /** Read back bytes of a buffer (tests and debugging). */
  read(shard: number, h: Handle, byteOffset: number, byteLength: number): Promise<Uint8Array>;
  /** The model math where this backend computes (src/model/kernels.ts: weights, activations and the model ops as
   *  one kernel set): the reference kernels on reference, duo-model.wasm in this thread or its workers on wasm, the
   *  same library and threads on native, the same device and stream on cuda. The model runner takes its kernels from
   *  here unless told otherwise, so one code path runs on every backend. Absent on backends without model math. */
  modelKernels?(options?: ModelKernelsOptions): Promise<ModelKernels>;
  dispose(): Promise<void>;
}

/** Why a backend cannot be used here (for `backend: "auto"` and `duo info`). */
export interface BackendProbe {
  name: BackendName;
  usable: boolean;
  reason?: string;
}
