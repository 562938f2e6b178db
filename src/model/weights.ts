/**
 * The tensors a Llama-family checkpoint must have, checked against config.json, then streamed into the kernel set.
 * Attention projections of a layer whose head schedule is not already "retrieval heads first" are permuted once
 * here (SPEC §2, src/schedule/permute.ts): q rows in blocks of G·D, k/v rows in blocks of D, o columns in blocks
 * of G·D, q/k/v biases like their rows, never the o bias. A permuted Q8_0 / Q4_0 matrix is decoded, permuted and
 * quantized again, which gives its bytes back whenever G·D is a multiple of 32 (whole blocks move); a permuted
 * Q4_K / Q6_K matrix is held decoded, as f32. Kernels that map files (native: mapFile, LoadOptions.mmap; they read
 * every dtype as stored) use the matrices whose rows are in the file's order as read-only views of the file. Kernels that read files themselves (native: readFile) get every other matrix straight from the file, and
 * permute q/k/v row blocks and o column blocks on raw bytes (any dtype, when o's column blocks are whole quantization
 * blocks and llama.cpp did not interleave the rows).
 */
import { f32ToBf16Bits, f32ToF16Bits } from "../dtype.ts";
import { DuoError } from "../errors.ts";
import { type AttentionWeights, permuteAttentionWeights, permuteRowBlocks } from "../schedule/permute.ts";
import type { HeadSchedule } from "../schedule/schedule.ts";
import type { ModelConfig } from "./config.ts";
import type { Matrix, ModelKernels, Vector, WeightDtype } from "./kernels.ts";
import { READ_CHUNK_BYTES, readTensorBytes, readTensorF32, streamTensor, type TensorEntry } from "./safetensors.ts";
import { BLOCKS, quantizeQ4_0, quantizeQ8_0, TENSOR_DTYPES, type TensorDtype } from "./tensor-types.ts";

export interface LayerWeights {
  inputNorm: Vector; // [hidden]
  q: Matrix; // [Hq·D, hidden]
  k: Matrix; // [Hkv·D, hidden]
  v: Matrix; // [Hkv·D, hidden]
  o: Matrix; // [hidden, Hq·D]
  qBias?: Vector; // [Hq·D]
  kBias?: Vector; // [Hkv·D]
  vBias?: Vector; // [Hkv·D]
  oBias?: Vector; // [hidden]
  postNorm: Vector; // [hidden]
  gate: Matrix; // [I, hidden]
  up: Matrix; // [I, hidden]
  down: Matrix; // [hidden, I]
  gateBias?: Vector; // [I]
  upBias?: Vector; // [I]
  downBias?: Vector; // [hidden]
}

export interface ModelWeights {
  embed: Matrix; // [vocab, hidden]
  layers: LayerWeights[];
  norm: Vector; // [hidden]
  /** [vocab, hidden]; the embedding itself when tie_word_embeddings */
  lmHead: Matrix;
}

const DTYPES: Record<TensorDtype, WeightDtype> = { F32: "f32", F16: "f16", BF16: "bf16", Q8_0: "q8_0", Q4_0: "q4_0", Q4_K: "q4_k", Q6_K: "q6_k" };
const dtypeOf = (t: TensorEntry) => DTYPES[t.dtype as TensorDtype];

/** name → expected shape, for every tensor the config implies. */
export function expectedTensors(cfg: ModelConfig): Map<string, number[]> {
  const { hiddenSize: H, intermediateSize: I, numHeads, numKvHeads, headDim: D, vocabSize: V } = cfg;
  const m = new Map<string, number[]>([["model.embed_tokens.weight", [V, H]], ["model.norm.weight", [H]]]);
  if (!cfg.tieWordEmbeddings) m.set("lm_head.weight", [V, H]);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}.`;
    m.set(`${p}input_layernorm.weight`, [H]);
    m.set(`${p}post_attention_layernorm.weight`, [H]);
    m.set(`${p}self_attn.q_proj.weight`, [numHeads * D, H]);
    m.set(`${p}self_attn.k_proj.weight`, [numKvHeads * D, H]);
    m.set(`${p}self_attn.v_proj.weight`, [numKvHeads * D, H]);
    m.set(`${p}self_attn.o_proj.weight`, [H, numHeads * D]);
    if (cfg.qkvBias) {
      m.set(`${p}self_attn.q_proj.bias`, [numHeads * D]);
      m.set(`${p}self_attn.k_proj.bias`, [numKvHeads * D]);
      m.set(`${p}self_attn.v_proj.bias`, [numKvHeads * D]);
    }
    if (cfg.oBias) m.set(`${p}self_attn.o_proj.bias`, [H]);
    m.set(`${p}mlp.gate_proj.weight`, [I, H]);
    m.set(`${p}mlp.up_proj.weight`, [I, H]);
    m.set(`${p}mlp.down_proj.weight`, [H, I]);
    if (cfg.mlpBias) {
      m.set(`${p}mlp.gate_proj.bias`, [I]);
      m.set(`${p}mlp.up_proj.bias`, [I]);
      m.set(`${p}mlp.down_proj.bias`, [H]);
    }
  }
  return m;
}

/**
 * Check that every expected tensor is present with its shape and a supported dtype; returns the bytes the
 * weights take in their file dtypes (what the wasm kernels hold, before 64-byte alignment).
 */
export function checkTensors(tensors: Map<string, TensorEntry>, cfg: ModelConfig): number {
  const cfgShape = `${cfg.architecture}: hidden_size ${cfg.hiddenSize}, intermediate_size ${cfg.intermediateSize}, ` +
    `${cfg.numHeads} heads, ${cfg.numKvHeads} KV heads, head_dim ${cfg.headDim}, vocab_size ${cfg.vocabSize}`;
  let bytes = 0;
  for (const [name, shape] of expectedTensors(cfg)) {
    const t = tensors.get(name);
    if (!t) throw new DuoError("SHAPE_MISMATCH", `the weights have no tensor "${name}", which config.json implies (${cfgShape}); expected shape [${shape.join(", ")}]`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new DuoError("SHAPE_MISMATCH", `tensor "${name}" has shape [${t.shape.join(", ")}] but config.json implies [${shape.join(", ")}] (${cfgShape})`);
    }
    const dt = dtypeOf(t);
    if (!dt || (shape.length === 1 && BLOCKS[t.dtype as TensorDtype].elements > 1)) {
      throw new DuoError("UNSUPPORTED", `${t.file}: tensor "${name}" has dtype ${t.dtype}; supported weight dtypes are ${shape.length === 1 ? "F32, F16, BF16 for vectors" : TENSOR_DTYPES.join(", ")}`);
    }
    bytes += shape.length === 1 ? shape[0]! * 4 : t.byteLength;
  }
  return bytes;
}

/** Called with the bytes of each piece of the checkpoint once it is loaded (a progress bar sums them). */
export type LoadProgress = (bytes: number) => void;

/** Bytes of one block of the tensor's dtype (1 element for F32/F16/BF16): reads and writes move whole blocks. */
const blockBytes = (t: TensorEntry) => BLOCKS[t.dtype as TensorDtype].bytes;

/** kernels.readFile of `bytes` at byte `byteOffset` of `m` from byte `fileOffset` of the tensor's file, naming the
 *  tensor when it fails. */
function readPiece(k: ModelKernels, m: Matrix, t: TensorEntry, byteOffset: number, fileOffset: number, bytes: number): void {
  try {
    k.readFile!(m, byteOffset, t.file, fileOffset, bytes);
  } catch (e) {
    throw new DuoError("IO", `${t.file}: reading tensor "${t.name}" (${t.dtype} [${t.shape.join(", ")}]) failed: ${(e as Error).message}`, { cause: e });
  }
}

/** A matrix mapped from the file where the kernels can (native mapFile, `mmap` on, rows in file order), else read in
 *  pieces of about READ_CHUNK_BYTES: by the kernels straight from the file where they can (native: readFile, no copy
 *  in the JS heap; pieces of whole rows), else through the JS heap (streamTensor + write, pieces of whole blocks).
 *  Rows llama.cpp interleaved are reordered in one piece in the JS heap. */
async function readMatrix(k: ModelKernels, t: TensorEntry, mmap: boolean, progress?: LoadProgress): Promise<Matrix> {
  const dtype = dtypeOf(t)!;
  if (mmap && k.mapFile && !t.interleavedHeads) {
    let m: Matrix;
    try {
      m = k.mapFile(t.shape[0]!, t.shape[1]!, dtype, t.file, t.offset);
    } catch (e) {
      throw new DuoError("IO", `${t.file}: mapping tensor "${t.name}" (${t.dtype} [${t.shape.join(", ")}], bytes [${t.offset}, ${t.offset + t.byteLength})) failed: ${(e as Error).message}`, { cause: e });
    }
    progress?.(t.byteLength);
    return m;
  }
  const m = k.matrix(t.shape[0]!, t.shape[1]!, dtype);
  if (t.interleavedHeads) {
    k.write(m, 0, await readTensorBytes(t));
    progress?.(t.byteLength);
  } else if (!k.readFile) {
    await streamTensor(t, (off, bytes) => {
      k.write(m, off, bytes);
      progress?.(bytes.length);
    }, blockBytes(t));
  } else {
    const rowBytes = t.byteLength / t.shape[0]!, chunk = Math.max(rowBytes, READ_CHUNK_BYTES - (READ_CHUNK_BYTES % rowBytes));
    for (let off = 0; off < t.byteLength; off += chunk) {
      const n = Math.min(chunk, t.byteLength - off);
      readPiece(k, m, t, off, t.offset + off, n);
      progress?.(n);
      await Promise.resolve(); // let a progress bar redraw between pieces
    }
  }
  return m;
}

/** A matrix whose row blocks of `block` rows are read from the file in the order `perm` (block i = file block
 *  perm[i]), each straight into the kernels (readFile). Rows are whole blocks of any dtype, so raw bytes move. */
function readRowBlocks(k: ModelKernels, t: TensorEntry, perm: ArrayLike<number>, block: number, progress?: LoadProgress): Matrix {
  const m = k.matrix(t.shape[0]!, t.shape[1]!, dtypeOf(t)!);
  const bytes = (t.byteLength / t.shape[0]!) * block;
  for (let i = 0; i < perm.length; i++) readPiece(k, m, t, i * bytes, t.offset + perm[i]! * bytes, bytes);
  progress?.(t.byteLength);
  return m;
}

/** A matrix whose column blocks of `block` columns are reordered (block i = file block perm[i]) on its raw bytes;
 *  `block` must hold whole blocks of the dtype (canMoveColumns). */
async function readColumnBlocks(k: ModelKernels, t: TensorEntry, perm: ArrayLike<number>, block: number, progress?: LoadProgress): Promise<Matrix> {
  const raw = await readTensorBytes(t), out = new Uint8Array(raw.length);
  const rowBytes = raw.length / t.shape[0]!, colBytes = (rowBytes / t.shape[1]!) * block;
  for (let r = 0; r < raw.length; r += rowBytes) {
    for (let i = 0; i < perm.length; i++) out.set(raw.subarray(r + perm[i]! * colBytes, r + (perm[i]! + 1) * colBytes), r + i * colBytes);
  }
  const m = k.matrix(t.shape[0]!, t.shape[1]!, dtypeOf(t)!);
  k.write(m, 0, out);
  progress?.(t.byteLength);
  return m;
}

/** An f32 host matrix narrowed back to `dtype` (exact for values that came from that dtype); K-quants, which have no
 *  quantizer here, stay f32. */
function matrixFrom(k: ModelKernels, data: Float32Array, rows: number, cols: number, dtype: WeightDtype): Matrix {
  if (dtype === "q4_k" || dtype === "q6_k") dtype = "f32";
  const m = k.matrix(rows, cols, dtype);
  if (dtype === "f32") k.write(m, 0, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  else if (dtype === "q8_0") k.write(m, 0, quantizeQ8_0(data));
  else if (dtype === "q4_0") k.write(m, 0, quantizeQ4_0(data));
  else {
    const narrow = dtype === "bf16" ? f32ToBf16Bits : f32ToF16Bits;
    k.write(m, 0, new Uint8Array(Uint16Array.from(data, narrow).buffer));
  }
  return m;
}

/** Whether a layer's q/k/v/o can be permuted on their raw bytes: q/k rows not interleaved by llama.cpp (those are
 *  reordered in the JS heap), and o's column blocks of `oBlock` columns made of whole blocks of its dtype. */
function rawPermutable(q: TensorEntry, k: TensorEntry, v: TensorEntry, o: TensorEntry, oBlock: number): boolean {
  return !q.interleavedHeads && !k.interleavedHeads && !v.interleavedHeads && oBlock % BLOCKS[o.dtype as TensorDtype].elements === 0;
}

/** Load every weight into `k`. `schedule` (original head order) decides the per-layer head permutation; `mmap`
 *  (LoadOptions.mmap) lets kernels that map files (native) use the tensors stored in their own layout in place. */
export async function loadWeights(tensors: Map<string, TensorEntry>, cfg: ModelConfig, k: ModelKernels, schedule: HeadSchedule, progress?: LoadProgress, mmap = true): Promise<ModelWeights> {
  const get = (name: string) => tensors.get(name)!;
  const has = (name: string) => tensors.has(name);
  const read = async (name: string) => {
    const t = get(name), data = await readTensorF32(t);
    progress?.(t.byteLength);
    return data;
  };
  const vec = async (name: string) => k.vector(await read(name));
  const matrix = (t: TensorEntry) => readMatrix(k, t, mmap, progress);
  const optVec = async (name: string, wanted: boolean) => (wanted && has(name) ? await vec(name) : undefined);
  const shape = { numLayers: cfg.numLayers, numHeads: cfg.numHeads, numKvHeads: cfg.numKvHeads, headDim: cfg.headDim };
  const embed = await matrix(get("model.embed_tokens.weight"));
  const layers: LayerWeights[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}.`, a = `${p}self_attn.`;
    const perm = schedule.permutation[l]!;
    const identity = perm.every((h, i) => h === i);
    let q: Matrix, kk: Matrix, v: Matrix, o: Matrix, qBias: Vector | undefined, kBias: Vector | undefined, vBias: Vector | undefined;
    const G = cfg.numHeads / cfg.numKvHeads, D = cfg.headDim;
    if (!identity && k.readFile && rawPermutable(get(`${a}q_proj.weight`), get(`${a}k_proj.weight`), get(`${a}v_proj.weight`), get(`${a}o_proj.weight`), G * D)) {
      // Native: q/k/v rows read in head blocks straight from the file in the new order; o's columns permuted on its
      // raw bytes (one [hidden, Hq·D] copy in the JS heap, no f32 widening, no requantizing); biases as vectors.
      q = readRowBlocks(k, get(`${a}q_proj.weight`), perm, G * D, progress);
      kk = readRowBlocks(k, get(`${a}k_proj.weight`), perm, D, progress);
      v = readRowBlocks(k, get(`${a}v_proj.weight`), perm, D, progress);
      o = await readColumnBlocks(k, get(`${a}o_proj.weight`), perm, G * D, progress);
      const bias = async (name: string, block: number) => (cfg.qkvBias ? k.vector(permuteRowBlocks(await read(`${a}${name}.bias`), 1, perm, block)) : undefined);
      qBias = await bias("q_proj", G * D);
      kBias = await bias("k_proj", D);
      vBias = await bias("v_proj", D);
    } else if (identity) {
      q = await matrix(get(`${a}q_proj.weight`));
      kk = await matrix(get(`${a}k_proj.weight`));
      v = await matrix(get(`${a}v_proj.weight`));
      o = await matrix(get(`${a}o_proj.weight`));
      qBias = await optVec(`${a}q_proj.bias`, cfg.qkvBias);
      kBias = await optVec(`${a}k_proj.bias`, cfg.qkvBias);
      vBias = await optVec(`${a}v_proj.bias`, cfg.qkvBias);
    } else {
      const f32 = read;
      const w: AttentionWeights = { q: await f32(`${a}q_proj.weight`), k: await f32(`${a}k_proj.weight`), v: await f32(`${a}v_proj.weight`), o: await f32(`${a}o_proj.weight`) };
      if (cfg.qkvBias) {
        w.qBias = await f32(`${a}q_proj.bias`);
        w.kBias = await f32(`${a}k_proj.bias`);
        w.vBias = await f32(`${a}v_proj.bias`);
      }
      const r = permuteAttentionWeights(w, perm, shape);
      const dt = (name: string) => dtypeOf(get(`${a}${name}.weight`))!;
      const H = cfg.hiddenSize, qRows = cfg.numHeads * cfg.headDim, kvRows = cfg.numKvHeads * cfg.headDim;
      q = matrixFrom(k, r.q, qRows, H, dt("q_proj"));
      kk = matrixFrom(k, r.k, kvRows, H, dt("k_proj"));
      v = matrixFrom(k, r.v, kvRows, H, dt("v_proj"));
      o = matrixFrom(k, r.o, H, qRows, dt("o_proj"));
      qBias = r.qBias && k.vector(r.qBias);
      kBias = r.kBias && k.vector(r.kBias);
      vBias = r.vBias && k.vector(r.vBias);
    }
    layers.push({
      inputNorm: await vec(`${p}input_layernorm.weight`),
      q, k: kk, v, o, qBias, kBias, vBias,
      oBias: await optVec(`${a}o_proj.bias`, cfg.oBias),
      postNorm: await vec(`${p}post_attention_layernorm.weight`),
      gate: await matrix(get(`${p}mlp.gate_proj.weight`)),
      up: await matrix(get(`${p}mlp.up_proj.weight`)),
      down: await matrix(get(`${p}mlp.down_proj.weight`)),
      gateBias: await optVec(`${p}mlp.gate_proj.bias`, cfg.mlpBias),
      upBias: await optVec(`${p}mlp.up_proj.bias`, cfg.mlpBias),
      downBias: await optVec(`${p}mlp.down_proj.bias`, cfg.mlpBias),
    });
  }
  const norm = await vec("model.norm.weight");
  const lmHead = cfg.tieWordEmbeddings ? embed : await matrix(get("lm_head.weight"));
  return { embed, layers, norm, lmHead };
}
