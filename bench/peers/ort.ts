/**
 * The onnxruntime peers: full-attention decode through the com.microsoft GroupQueryAttention op, on
 * onnxruntime-node (native CPU execution provider) or onnxruntime-web (its WebAssembly build), with the same shape
 * and thread count as our backend. Each call is stateless, as ORT's API is: the past K/V go in (BNSH), the
 * present K/V come out, so ORT's own cache copy is part of what is timed.
 */
import { type GqaGraph, gqaDecodeModel, ONNX_FLOAT, ONNX_FLOAT16 } from "./onnx-graph.ts";

export const ORT_FLAVORS = ["onnxruntime-web", "onnxruntime-node"] as const;
export type OrtFlavor = (typeof ORT_FLAVORS)[number];

/** The parts of the onnxruntime-common API used here (both packages export it). */
interface OrtTensor {
  readonly data: ArrayLike<number>;
  dispose?(): void;
}
interface OrtSession {
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release(): Promise<void>;
}
interface OrtModule {
  Tensor: new (type: string, data: ArrayBufferView, dims: readonly number[]) => OrtTensor;
  InferenceSession: { create(model: Uint8Array, options: Record<string, unknown>): Promise<OrtSession> };
  env: { versions?: { common?: string }; wasm?: { numThreads?: number }; logLevel?: string };
}

export interface OrtDecodeStep {
  /** one decode step over `context` cached tokens; resolves with the output [Hq · D] as f32 */
  run(): Promise<Float32Array>;
}

export interface OrtPeer {
  flavor: OrtFlavor;
  version: string;
  threads: number;
  /** "float32" or "float16": ORT's CPU GQA has no bf16 */
  dtype: "float32" | "float16";
  /** A decode step with a past cache of `context` tokens filled by `fill(array, seed)`; inputs are built once. */
  decodeStep(context: number, fill: (a: Float32Array, seed: number) => void, q?: Float32Array): OrtDecodeStep;
  release(): Promise<void>;
}

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
/** f32 → IEEE half bits (round to nearest even; inputs here are in [-1, 1], so no overflow handling is needed). */
function toHalf(x: number): number {
  f32[0] = x;
  const b = u32[0]!, sign = (b >>> 16) & 0x8000, exp = ((b >>> 23) & 0xff) - 112;
  if (exp <= 0) return sign; // |x| < 2^-14: flush (random inputs rarely land here)
  const mant = b & 0x7fffff, h = (exp << 10) | (mant >>> 13), rest = mant & 0x1fff;
  return sign | (rest > 0x1000 || (rest === 0x1000 && (h & 1)) ? h + 1 : h);
}
function fromHalf(h: number): number {
  const e = (h >>> 10) & 0x1f, m = h & 0x3ff, s = h & 0x8000 ? -1 : 1;
  return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Load one onnxruntime package and build a session; throws with the reason when the package cannot run here. */
export async function loadOrtPeer(flavor: OrtFlavor, g: Omit<GqaGraph, "elemType">, threads: number, dtype: "float32" | "float16"): Promise<OrtPeer> {
  const ort = (await import(flavor)) as OrtModule;
  const t = Math.max(1, threads);
  if (flavor === "onnxruntime-web") {
    ort.env.wasm!.numThreads = t;
  }
  ort.env.logLevel = "error";
  const model = gqaDecodeModel({ ...g, elemType: dtype === "float16" ? ONNX_FLOAT16 : ONNX_FLOAT });
  const options = flavor === "onnxruntime-node"
    ? { intraOpNumThreads: t, interOpNumThreads: 1, executionMode: "sequential", graphOptimizationLevel: "all" }
    : { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
  const session = await ort.InferenceSession.create(model, options);
  const { numHeads: Hq, numKvHeads: Hkv, headDim: D } = g;
  const tensor = (a: Float32Array, dims: number[]): OrtTensor =>
    dtype === "float16" ? new ort.Tensor("float16", Uint16Array.from(a, toHalf), dims) : new ort.Tensor("float32", a, dims);
  return {
    flavor,
    version: ort.env.versions?.common ?? "?",
    // onnxruntime-web drops to one thread where it cannot start workers (no cross-origin isolation): report that.
    threads: flavor === "onnxruntime-web" ? ort.env.wasm?.numThreads ?? 1 : t,
    dtype,
    decodeStep(context, fill, qIn) {
      const make = (n: number, seed: number) => {
        const a = new Float32Array(n);
        fill(a, seed);
        return a;
      };
      const feeds: Record<string, OrtTensor> = {
        query: tensor(qIn ?? make(Hq * D, 11), [1, 1, Hq * D]),
        key: tensor(make(Hkv * D, 12), [1, 1, Hkv * D]),
        value: tensor(make(Hkv * D, 13), [1, 1, Hkv * D]),
        past_key: tensor(make(Hkv * context * D, 1), [1, Hkv, context, D]),
        past_value: tensor(make(Hkv * context * D, 2), [1, Hkv, context, D]),
        seqlens_k: new ort.Tensor("int32", Int32Array.of(context), [1]),
        total_sequence_length: new ort.Tensor("int32", Int32Array.of(context + 1), []),
      };
      return {
        async run() {
          const out = await session.run(feeds);
          const o = out.output!.data;
          const result = dtype === "float16" ? Float32Array.from(o as Uint16Array, fromHalf) : Float32Array.from(o);
          for (const v of Object.values(out)) v.dispose?.();
          return result;
        },
      };
    },
    release: () => session.release(),
  };
}
