/**
 * Safetensors files, read by hand: an 8-byte little-endian header length N, N bytes of JSON
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, __metadata__? }`, then the data section; offsets are
 * relative to byte 8 + N. Every entry is checked against the file size here, so a truncated or corrupt file fails
 * at open with a message naming the tensor, never later with a short read.
 * Tensors are read with readRange in bounded chunks: a weight file is never held whole in the JS heap.
 */
import { f16BitsToF32 } from "../dtype.ts";
import { DuoError } from "../errors.ts";
import { exists, fileSize, readRange, readText } from "../runtime.ts";

export type TensorDtype = "F32" | "F16" | "BF16";
const ELEMENT_BYTES: Record<TensorDtype, number> = { F32: 4, F16: 2, BF16: 2 };
/** Largest header we accept (real headers are a few hundred KiB). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** Bytes per readRange call when streaming a tensor. */
export const READ_CHUNK_BYTES = 64 * 1024 * 1024;

export interface TensorEntry {
  name: string;
  file: string;
  /** as written in the header; F32, F16, BF16 are the ones the model runner reads */
  dtype: string;
  shape: number[];
  /** absolute byte offset of the first element in `file` */
  offset: number;
  byteLength: number;
}

export function elementBytes(dtype: string): number | undefined {
  return ELEMENT_BYTES[dtype as TensorDtype];
}

function bad(file: string, what: string): DuoError {
  return new DuoError("IO", `${file}: ${what}`);
}

/** Parse and validate the header of one safetensors file. */
export async function readHeader(file: string): Promise<TensorEntry[]> {
  if (!(await exists(file))) throw new DuoError("IO", `${file}: file not found`);
  const size = await fileSize(file);
  if (size < 8) throw bad(file, `is ${size} bytes, too short for a safetensors file (8-byte header length + JSON header)`);
  const head = await readRange(file, 0, 8);
  const n = Number(new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true));
  if (n < 2 || n > MAX_HEADER_BYTES) throw bad(file, `header length ${n} is not a valid safetensors header length (2..${MAX_HEADER_BYTES})`);
  if (8 + n > size) throw bad(file, `is truncated: the header needs ${8 + n} bytes but the file has ${size}`);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(await readRange(file, 8, n)));
  } catch (e) {
    throw new DuoError("IO", `${file}: the safetensors header is not valid JSON (${(e as Error).message})`, { cause: e });
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) throw bad(file, "the safetensors header is not a JSON object");
  const dataStart = 8 + n, dataBytes = size - dataStart;
  const entries: TensorEntry[] = [];
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") continue;
    const v = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const shape = v?.shape, offs = v?.data_offsets;
    if (typeof v?.dtype !== "string" || !Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0) ||
      !Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isInteger(o) && o >= 0) || offs[0] > offs[1]) {
      throw bad(file, `tensor "${name}" has a malformed header entry ${JSON.stringify(value)} (need dtype, shape, data_offsets [begin, end])`);
    }
    const [begin, end] = offs as [number, number];
    if (end > dataBytes) {
      throw bad(file, `is truncated or corrupt: tensor "${name}" needs bytes [${begin}, ${end}) of the data section, which has ${dataBytes} bytes (file size ${size}, header ${n} bytes)`);
    }
    const eb = elementBytes(v.dtype);
    const count = (shape as number[]).reduce((a, d) => a * d, 1);
    if (eb !== undefined && count * eb !== end - begin) {
      throw bad(file, `tensor "${name}" (${v.dtype} [${shape.join(", ")}]) should take ${count * eb} bytes but data_offsets span ${end - begin}`);
    }
    entries.push({ name, file, dtype: v.dtype, shape: shape as number[], offset: dataStart + begin, byteLength: end - begin });
  }
  return entries;
}

/**
 * All tensors of a model directory: `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
 * Every tensor of the index must be found in the shard it names.
 */
export async function openWeights(dir: string): Promise<Map<string, TensorEntry>> {
  const single = `${dir}/model.safetensors`, index = `${dir}/model.safetensors.index.json`;
  const tensors = new Map<string, TensorEntry>();
  if (await exists(index)) {
    let weightMap: Record<string, unknown>;
    try {
      weightMap = (JSON.parse(await readText(index)) as { weight_map: Record<string, unknown> }).weight_map;
    } catch (e) {
      throw new DuoError("IO", `${index}: not valid JSON (${(e as Error).message})`, { cause: e });
    }
    if (weightMap === null || typeof weightMap !== "object") throw bad(index, `has no "weight_map" object (tensor name -> shard file)`);
    const shards = new Map<string, Map<string, TensorEntry>>();
    for (const [name, shard] of Object.entries(weightMap)) {
      if (typeof shard !== "string" || shard.includes("/") || shard.includes("\\")) throw bad(index, `weight_map["${name}"] must be a file name in the model directory, got ${JSON.stringify(shard)}`);
      if (!shards.has(shard)) shards.set(shard, new Map((await readHeader(`${dir}/${shard}`)).map((e) => [e.name, e])));
      const entry = shards.get(shard)!.get(name);
      if (!entry) throw bad(index, `says tensor "${name}" is in ${shard}, but that file has no such tensor`);
      tensors.set(name, entry);
    }
    return tensors;
  }
  if (!(await exists(single))) throw new DuoError("IO", `${dir}: no model.safetensors or model.safetensors.index.json (only safetensors weights are supported)`);
  for (const e of await readHeader(single)) tensors.set(e.name, e);
  return tensors;
}

/** Read a tensor's raw little-endian bytes in chunks of at most READ_CHUNK_BYTES, handing each to `sink`. */
export async function streamTensor(t: TensorEntry, sink: (byteOffset: number, bytes: Uint8Array) => void): Promise<void> {
  for (let done = 0; done < t.byteLength;) {
    const n = Math.min(READ_CHUNK_BYTES, t.byteLength - done);
    const bytes = await readRange(t.file, t.offset + done, n);
    if (bytes.length !== n) throw bad(t.file, `was truncated while reading tensor "${t.name}" (got ${bytes.length} of ${n} bytes at offset ${t.offset + done})`);
    sink(done, bytes);
    done += n;
  }
}

/** A whole tensor's raw bytes (only for tensors that are small or must be permuted in one piece). */
export async function readTensorBytes(t: TensorEntry): Promise<Uint8Array> {
  const out = new Uint8Array(t.byteLength);
  await streamTensor(t, (off, bytes) => out.set(bytes, off));
  return out;
}

/** A tensor widened to f32 (F32, F16 or BF16 in the file). */
export async function readTensorF32(t: TensorEntry): Promise<Float32Array> {
  return toF32(await readTensorBytes(t), t.dtype, t.name);
}

/** Raw little-endian elements of `dtype` -> f32 (exact for all three). */
export function toF32(bytes: Uint8Array, dtype: string, name: string): Float32Array {
  const n = bytes.length / (elementBytes(dtype) ?? 1);
  const out = new Float32Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === "F32") for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true);
  else if (dtype === "BF16") {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = view.getUint16(i * 2, true) << 16;
  } else if (dtype === "F16") for (let i = 0; i < n; i++) out[i] = f16BitsToF32(view.getUint16(i * 2, true));
  else throw new DuoError("UNSUPPORTED", `tensor "${name}" has dtype ${dtype}; supported weight dtypes are F32, F16, BF16`);
  return out;
}
