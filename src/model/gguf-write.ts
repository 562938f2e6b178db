/**
 * The header of a GGUF file (version 3): magic, counts and key-value metadata serialized by @huggingface/gguf, then
 * the tensor infos (name, dims fastest-first, ggml type, offset in the data section), padded to the alignment;
 * the tensor data follows, each tensor starting at a multiple of the alignment (llama.cpp's gguf.cpp layout).
 */
import { GGMLQuantizationType, type GGUFTypedMetadata, GGUFValueType } from "@huggingface/gguf";
import type { TensorDtype } from "./tensor-types.ts";

export const GGUF_ALIGNMENT = 32;
export const GGML_TYPES: Record<TensorDtype, GGMLQuantizationType> = {
  F32: GGMLQuantizationType.F32,
  F16: GGMLQuantizationType.F16,
  BF16: GGMLQuantizationType.BF16,
  Q8_0: GGMLQuantizationType.Q8_0,
  Q4_0: GGMLQuantizationType.Q4_0,
  Q4_K: GGMLQuantizationType.Q4_K,
  Q6_K: GGMLQuantizationType.Q6_K,
};

/** A metadata value with its GGUF type (arrays name their element type). */
export type GgufValue =
  | { type: GGUFValueType.STRING; value: string }
  | { type: GGUFValueType.UINT32 | GGUFValueType.INT32 | GGUFValueType.FLOAT32; value: number }
  | { type: GGUFValueType.BOOL; value: boolean }
  | { type: GGUFValueType.ARRAY; subType: GGUFValueType; value: (string | number)[] };

export interface GgufTensorSpec {
  name: string;
  dtype: TensorDtype;
  /** row-major [rows, cols] (written to the file fastest dimension first) */
  shape: number[];
  byteLength: number;
}

const pad = (n: number) => Math.ceil(n / GGUF_ALIGNMENT) * GGUF_ALIGNMENT;

/** The header bytes (a multiple of the alignment) and each tensor's byte offset in the data section after it. */
export async function ggufHeader(metadata: Record<string, GgufValue>, tensors: readonly GgufTensorSpec[]): Promise<{ header: Uint8Array; offsets: number[] }> {
  const { serializeGgufMetadata } = await import("@huggingface/gguf");
  const typed = {
    version: { value: 3, type: GGUFValueType.UINT32 },
    tensor_count: { value: BigInt(tensors.length), type: GGUFValueType.UINT64 },
    kv_count: { value: BigInt(Object.keys(metadata).length), type: GGUFValueType.UINT64 },
    ...metadata,
  } as unknown as GGUFTypedMetadata;
  const kv = serializeGgufMetadata(typed, { alignment: 1 }); // unpadded: the tensor infos come next
  const enc = new TextEncoder();
  const infos: Uint8Array[] = [];
  const offsets: number[] = [];
  let data = 0;
  for (const t of tensors) {
    const name = enc.encode(t.name);
    const info = new Uint8Array(8 + name.length + 4 + 8 * t.shape.length + 4 + 8);
    const v = new DataView(info.buffer);
    let at = 0;
    v.setBigUint64(at, BigInt(name.length), true);
    info.set(name, (at += 8));
    v.setUint32((at += name.length), t.shape.length, true);
    at += 4;
    for (const d of [...t.shape].reverse()) v.setBigUint64(at, BigInt(d), true), (at += 8);
    v.setUint32(at, GGML_TYPES[t.dtype], true);
    v.setBigUint64(at + 4, BigInt(data), true);
    offsets.push(data);
    data = pad(data + t.byteLength);
    infos.push(info);
  }
  const size = kv.length + infos.reduce((a, b) => a + b.length, 0);
  const header = new Uint8Array(pad(size));
  header.set(kv, 0);
  let at = kv.length;
  for (const info of infos) header.set(info, at), (at += info.length);
  return { header, offsets };
}
