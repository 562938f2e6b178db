/**
 * Safetensors files, read by hand: an 8-byte little-endian header length N, N bytes of JSON
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, __metadata__? }`, then the data section; offsets are
 * relative to byte 8 + N. Every entry is checked against the file size here, so a truncated or corrupt file fails
 * at open with a message naming the tensor, never later with a short read.
 * Tensors are read with readRange in bounded chunks: a weight file is never held whole in the JS heap.
 */
import { DuoError } from "../errors.ts";
import { exists, fileSize, readRange, readText } from "../runtime.ts";
import { tensorBytes, toF32 } from "./tensor-types.ts";

/** Largest header we accept (real headers are a few hundred KiB). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** Bytes per readRange call when streaming a tensor. */
export const READ_CHUNK_BYTES = 64 * 1024 * 1024;

export interface TensorEntry {
  name: string;
  file: string;
  /** as written in the header; F32, F16, BF16 (and Q8_0, Q4_0 from GGUF) are the ones the model runner reads */
  dtype: string;
  /** row-major, Hugging Face order: [rows, cols] for a matrix */
  shape: number[];
  /** absolute byte offset of the first element in `file` */
  offset: number;
  byteLength: number;
  /**
   * The rows are stored as llama.cpp's converter writes q_proj / k_proj for the llama architecture: within each of
   * this many heads, RoPE pairs interleaved (file row 2i + j holds Hugging Face row j·D/2 + i). readTensorBytes
   * undoes it.
   */
  interleavedHeads?: number;
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
    const bytes = tensorBytes(v.dtype, shape as number[]);
    if (bytes !== undefined && bytes !== end - begin) {
      throw bad(file, `tensor "${name}" (${v.dtype} [${shape.join(", ")}]) should take ${bytes} bytes but data_offsets span ${end - begin}`);
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

/** Read a tensor's raw little-endian bytes (as stored: see `interleavedHeads`) in chunks of at most
 *  READ_CHUNK_BYTES, a multiple of `granule` bytes (a quantized type's block), handing each to `sink`. */
export async function streamTensor(t: TensorEntry, sink: (byteOffset: number, bytes: Uint8Array) => void, granule = 1): Promise<void> {
  const chunk = READ_CHUNK_BYTES - (READ_CHUNK_BYTES % granule);
  for (let done = 0; done < t.byteLength;) {
    const n = Math.min(chunk, t.byteLength - done);
    const bytes = await readRange(t.file, t.offset + done, n);
    if (bytes.length !== n) throw bad(t.file, `was truncated while reading tensor "${t.name}" (got ${bytes.length} of ${n} bytes at offset ${t.offset + done})`);
    sink(done, bytes);
    done += n;
  }
}

/** A whole tensor's raw bytes in Hugging Face row order (only for tensors that are small or must be permuted in
 *  one piece). */
export async function readTensorBytes(t: TensorEntry): Promise<Uint8Array> {
  const raw = new Uint8Array(t.byteLength);
  await streamTensor(t, (off, bytes) => raw.set(bytes, off));
  return t.interleavedHeads ? deinterleaveRows(raw, t.shape[0]!, t.interleavedHeads) : raw;
}

/** Undo llama.cpp's RoPE row interleave: per head of D = rows/heads rows, file row 2i + j -> row j·D/2 + i. */
function deinterleaveRows(raw: Uint8Array, rows: number, heads: number): Uint8Array {
  const D = rows / heads, half = D / 2, rowBytes = raw.length / rows, out = new Uint8Array(raw.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const from = (h * D + 2 * i + j) * rowBytes, to = (h * D + j * half + i) * rowBytes;
        out.set(raw.subarray(from, from + rowBytes), to);
      }
    }
  }
  return out;
}

/** A tensor decoded to f32 (any TensorDtype in the file). */
export async function readTensorF32(t: TensorEntry): Promise<Float32Array> {
  return toF32(await readTensorBytes(t), t.dtype, t.name);
}
