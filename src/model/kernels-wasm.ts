/**
 * The WASM SIMD model kernels (wasm/model/kernels.c → wasm/dist/duo-model.wasm): one instance in the calling
 * thread, synchronous calls. Memory layout, managed here: [C stack + data | weights and activations (bump-allocated,
 * 64-byte aligned; weights never freed, the topmost released activations given back) | scratch]; the scratch area
 * holds a call's host inputs (RoPE tables, token ids) and starts at the top. Matrices keep their file dtype (2 bytes per parameter for f16/bf16, rows packed in groups of 8
 * for the kernels: pack_u16 in kernels.c; the quantized types' blocks as in the file), so a model fits
 * when its weights plus the scratch of one prefill chunk stay under the 4 GiB of a wasm32 memory.
 */
import { DuoError } from "../errors.ts";
import { readUrl } from "../runtime.ts";
import { checkElementwise, checkEmbed, checkMatmul, checkRmsnorm, checkRope } from "./kernel-checks.ts";
import { type Activations, type Matrix, matrixBytes, type ModelKernels, type Vector, type WeightDtype } from "./kernels.ts";

const PAGE = 65536;
const MAX_PAGES = 65536; // 4 GiB, the module's declared maximum
const ALIGN = 64;

interface Exports {
  memory: WebAssembly.Memory;
  __heap_base: WebAssembly.Global;
  matmul_f32(y: number, x: number, w: number, b: number, T: number, nin: number, nout: number): void;
  matmul_bf16(y: number, x: number, w: number, b: number, T: number, nin: number, nout: number): void;
  matmul_f16(y: number, x: number, w: number, b: number, T: number, nin: number, nout: number): void;
  matmul_q8_0(y: number, x: number, w: number, b: number, T: number, nin: number, nout: number): void;
  matmul_q4_0(y: number, x: number, w: number, b: number, T: number, nin: number, nout: number): void;
  matmul_q4_k(y: number, x: number, w: number, b: number, T: number, nin: number, nout: number): void;
  matmul_q6_k(y: number, x: number, w: number, b: number, T: number, nin: number, nout: number): void;
  embed_f32(y: number, ids: number, table: number, T: number, n: number): void;
  embed_bf16(y: number, ids: number, table: number, T: number, n: number): void;
  embed_f16(y: number, ids: number, table: number, T: number, n: number): void;
  embed_q8_0(y: number, ids: number, table: number, T: number, n: number): void;
  embed_q4_0(y: number, ids: number, table: number, T: number, n: number): void;
  embed_q4_k(y: number, ids: number, table: number, T: number, n: number): void;
  embed_q6_k(y: number, ids: number, table: number, T: number, n: number): void;
  rmsnorm(y: number, x: number, w: number, T: number, n: number, eps: number): void;
  rope(x: number, cos: number, sin: number, T: number, H: number, D: number): void;
  swiglu(y: number, g: number, u: number, n: number): void;
  pack_u16(w: number, rows: number, cols: number): void;
}

class WasmMatrix implements Matrix {
  /** bytes written so far; a 16-bit matrix is packed for the kernels once all of it has been written */
  written = 0;
  constructor(readonly rows: number, readonly cols: number, readonly dtype: WeightDtype, readonly ptr: number) {}
}
class WasmVector implements Vector {
  constructor(readonly length: number, readonly ptr: number) {}
}
/** f32 elements at byte `ptr` of the instance's memory. */
class WasmActivations implements Activations {
  constructor(readonly owner: WasmKernels, readonly ptr: number, readonly length: number) {}
}

const align = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

/** wasm/dist/duo-model.wasm from the TypeScript sources, or the copy beside the bundle (npm's dist/). */
function wasmUrl(): URL {
  return import.meta.url.endsWith(".ts") ? new URL("../../wasm/dist/duo-model.wasm", import.meta.url) : new URL("./duo-model.wasm", import.meta.url);
}

let compiled: Promise<WebAssembly.Module> | undefined;

async function compile(): Promise<WebAssembly.Module> {
  const url = wasmUrl();
  let bytes: Uint8Array;
  try {
    bytes = await readUrl(url);
  } catch (e) {
    throw new DuoError("BACKEND_UNAVAILABLE", `wasm model kernels: cannot read ${url.href} (${(e as Error).message}); build it with bash wasm/model/build.sh, or pass a precompiled module (modelWasm)`, { cause: e });
  }
  try {
    return await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>);
  } catch (e) {
    throw new DuoError("BACKEND_UNAVAILABLE", `wasm model kernels: ${url.href} does not compile here (${(e as Error).message}); they need WebAssembly SIMD128 — use kernels "reference"`, { cause: e });
  }
}

/** The compiled duo-model.wasm: `module` when given, else wasm/dist's (or the bundle's), compiled once per process. */
export async function modelModule(module?: WebAssembly.Module): Promise<WebAssembly.Module> {
  if (module) return module;
  compiled ??= compile();
  try {
    return await compiled;
  } catch (e) {
    compiled = undefined;
    throw e;
  }
}

export async function createWasmKernels(module?: WebAssembly.Module): Promise<WasmKernels> {
  const instance = await WebAssembly.instantiate(await modelModule(module), {});
  return new WasmKernels(instance.exports as unknown as Exports);
}

export class WasmKernels implements ModelKernels {
  readonly name = "wasm" as const;
  private top: number;
  private readonly base: number;
  /** activations() blocks, oldest first; the freed ones at the top are popped */
  private readonly live: { a: WasmActivations; end: number; freed: boolean }[] = [];
  /** bytes of matrices and vectors (64-byte aligned) */
  private weightBytes = 0;
  private disposed = false;

  constructor(private readonly ex: Exports) {
    this.base = this.top = align(Number(ex.__heap_base.value));
  }

  memory(): { weights: number; capacity: number } {
    return { weights: this.weightBytes, capacity: MAX_PAGES * PAGE - this.base };
  }

  reserve(weightBytes: number, scratchBytes: number): void {
    const need = this.top + weightBytes + scratchBytes, max = MAX_PAGES * PAGE;
    if (need > max) {
      const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
      throw new DuoError(
        "CAPACITY",
        `the model needs ${weightBytes} bytes of weights (${gib(weightBytes)}) + ${scratchBytes} bytes of activations, but one wasm instance holds ${max} bytes (4 GiB) and ${max - this.top} are available (${gib(max - this.top)}); use a smaller model, bf16/f16 weights, a smaller prefillChunk, or backend "reference"`,
      );
    }
    this.grow(need);
  }

  matrix(rows: number, cols: number, dtype: WeightDtype): Matrix {
    const bytes = matrixBytes(rows, cols, dtype);
    this.weightBytes += align(bytes);
    return new WasmMatrix(rows, cols, dtype, this.alloc(bytes));
  }

  /** Each byte is written once; when the last byte lands, f16/bf16 rows are packed (wasm/model/kernels.c). */
  write(m: Matrix, byteOffset: number, bytes: Uint8Array): void {
    const w = m as WasmMatrix, total = matrixBytes(w.rows, w.cols, w.dtype);
    if (byteOffset < 0 || byteOffset + bytes.length > total || w.written + bytes.length > total) {
      throw new DuoError("INVALID_ARGUMENT", `write of ${bytes.length} bytes at byte ${byteOffset} overruns a [${w.rows}, ${w.cols}] ${w.dtype} matrix (${total} bytes, ${w.written} written)`);
    }
    new Uint8Array(this.ex.memory.buffer).set(bytes, w.ptr + byteOffset);
    w.written += bytes.length;
    if (w.written === total && (w.dtype === "f16" || w.dtype === "bf16")) this.ex.pack_u16(w.ptr, w.rows, w.cols);
  }

  vector(data: Float32Array): Vector {
    const ptr = this.alloc(data.length * 4);
    this.weightBytes += align(data.length * 4);
    new Float32Array(this.ex.memory.buffer, ptr, data.length).set(data);
    return new WasmVector(data.length, ptr);
  }

  /** Activations live above the weights, bump-allocated from the top; release() gives back the topmost ones. */
  activations(length: number): Activations {
    const ptr = this.alloc(length * 4);
    new Float32Array(this.ex.memory.buffer, ptr, length).fill(0);
    const a = new WasmActivations(this, ptr, length);
    this.live.push({ a, end: this.top, freed: false });
    return a;
  }

  view(a: Activations, offset: number, length: number): Activations {
    const w = this.own(a);
    if (offset < 0 || length < 0 || offset + length > w.length) throw new DuoError("INVALID_ARGUMENT", `a view of elements [${offset}, ${offset + length}) overruns activations of ${w.length}`);
    return new WasmActivations(this, w.ptr + 4 * offset, length);
  }

  release(a: Activations): void {
    const block = this.live.find((b) => b.a === a);
    if (!block) throw new DuoError("INVALID_ARGUMENT", "release() takes activations made by activations() of this kernel set, not a view, once");
    block.freed = true;
    for (let b = this.live.at(-1); b?.freed && b.end === this.top; b = this.live.at(-1)) {
      this.live.pop();
      this.top = b.a.ptr;
    }
  }

  upload(a: Activations, src: Float32Array): void {
    const w = this.own(a);
    if (src.length > w.length) throw new DuoError("INVALID_ARGUMENT", `upload of ${src.length} elements into activations of ${w.length}`);
    this.f32(w).set(src);
  }

  download(a: Activations, dst: Float32Array): void {
    const w = this.own(a);
    if (dst.length > w.length) throw new DuoError("INVALID_ARGUMENT", `download of ${dst.length} elements from activations of ${w.length}`);
    dst.set(this.f32(w).subarray(0, dst.length));
  }

  /** @internal The elements of `a` as a view of the wasm memory (valid until the memory grows). */
  f32(a: Activations): Float32Array {
    const w = this.own(a);
    return new Float32Array(this.ex.memory.buffer, w.ptr, w.length);
  }

  matmul(y: Activations, x: Activations, w: Matrix, T: number, bias?: Vector): void {
    checkMatmul(y, x, w, T, bias);
    const m = w as WasmMatrix, e = this.ex;
    const fn = { f32: e.matmul_f32, bf16: e.matmul_bf16, f16: e.matmul_f16, q8_0: e.matmul_q8_0, q4_0: e.matmul_q4_0, q4_k: e.matmul_q4_k, q6_k: e.matmul_q6_k }[m.dtype];
    fn(this.own(y).ptr, this.own(x).ptr, m.ptr, bias ? (bias as WasmVector).ptr : 0, T, m.cols, m.rows);
  }

  rmsnorm(y: Activations, x: Activations, w: Vector, T: number, eps: number): void {
    checkRmsnorm(y, x, w, T);
    this.ex.rmsnorm(this.own(y).ptr, this.own(x).ptr, (w as WasmVector).ptr, T, w.length, eps);
  }

  rope(x: Activations, T: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void {
    checkRope(x, T, heads, headDim, cos, sin);
    const px = this.own(x).ptr, [pc, ps] = this.scratch(cos.subarray(0, (T * headDim) / 2), sin.subarray(0, (T * headDim) / 2));
    this.ex.rope(px, pc, ps, T, heads, headDim);
  }

  swiglu(y: Activations, gate: Activations, up: Activations): void {
    checkElementwise("swiglu", y, gate, up);
    this.ex.swiglu(this.own(y).ptr, this.own(gate).ptr, this.own(up).ptr, y.length);
  }

  add(y: Activations, x: Activations): void {
    checkElementwise("add", y, x);
    const Y = this.f32(y), X = this.f32(x);
    for (let i = 0; i < Y.length; i++) Y[i]! += X[i]!;
  }

  embed(y: Activations, ids: Int32Array, table: Matrix): void {
    checkEmbed(y, ids, table);
    const m = table as WasmMatrix, e = this.ex;
    const [pi] = this.scratch(ids);
    const fn = { f32: e.embed_f32, bf16: e.embed_bf16, f16: e.embed_f16, q8_0: e.embed_q8_0, q4_0: e.embed_q4_0, q4_k: e.embed_q4_k, q6_k: e.embed_q6_k }[m.dtype];
    fn(this.own(y).ptr, pi, m.ptr, ids.length, m.cols);
  }

  dispose(): void {
    this.disposed = true;
  }

  /** Grow the memory so that byte `end` is addressable. */
  private grow(end: number): void {
    const have = this.ex.memory.buffer.byteLength;
    if (end <= have) return;
    const pages = Math.ceil((end - have) / PAGE);
    try {
      this.ex.memory.grow(pages);
    } catch (e) {
      throw new DuoError("CAPACITY", `the wasm model memory could not grow from ${have} to ${have + pages * PAGE} bytes (${(e as Error).message})`, { cause: e });
    }
  }

  private alloc(bytes: number): number {
    if (this.disposed) throw new DuoError("DISPOSED", "these model kernels have been disposed");
    const ptr = this.top;
    if (ptr + bytes > MAX_PAGES * PAGE) this.reserve(bytes, 0);
    this.grow(ptr + bytes);
    this.top = align(ptr + bytes);
    return ptr;
  }

  /** Copy a call's host inputs (RoPE tables, token ids) into the scratch area above the top; returns addresses. */
  private scratch<P extends (Float32Array | Int32Array | Float64Array)[]>(...parts: P): { [K in keyof P]: number } {
    if (this.disposed) throw new DuoError("DISPOSED", "these model kernels have been disposed");
    const ptrs: number[] = [];
    let end = this.top;
    for (const p of parts) {
      ptrs.push(end);
      end = align(end + p.byteLength);
    }
    if (end > MAX_PAGES * PAGE) {
      throw new DuoError("CAPACITY", `a model kernel call needs ${end - this.top} bytes of scratch but only ${MAX_PAGES * PAGE - this.top} are left in the wasm memory; use a smaller prefillChunk`);
    }
    this.grow(end);
    const buf = this.ex.memory.buffer;
    parts.forEach((p, i) => new Uint8Array(buf, ptrs[i]!, p.byteLength).set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength)));
    return ptrs as { [K in keyof P]: number };
  }

  /** @internal Kernels outside this set's members that share its instance (identify/backward-wasm.ts): `fn` runs on
   *  the instance's exports with `arrays` copied into the scratch area (addresses in `ptrs`), and the first `outputs`
   *  of them are copied back after. */
  callOnScratch(arrays: (Float32Array | Int32Array | Float64Array)[], outputs: number, fn: (exports: WebAssembly.Exports, ptrs: number[]) => void): void {
    const ptrs = this.scratch(...arrays);
    fn(this.ex as unknown as WebAssembly.Exports, ptrs);
    const buf = this.ex.memory.buffer;
    for (let i = 0; i < outputs; i++) {
      const a = arrays[i]!;
      new Uint8Array(a.buffer, a.byteOffset, a.byteLength).set(new Uint8Array(buf, ptrs[i]!, a.byteLength));
    }
  }

  /** The address of a matrix of this set in the wasm memory (callOnScratch's kernels take it). */
  matrixAddress(m: Matrix): number {
    if (!(m instanceof WasmMatrix)) throw new DuoError("INVALID_ARGUMENT", "a matrix of another kernel set");
    return m.ptr;
  }

  /** `a` as this set's activations, or INVALID_ARGUMENT. */
  private own(a: Activations): WasmActivations {
    if (this.disposed) throw new DuoError("DISPOSED", "these model kernels have been disposed");
    if (a instanceof WasmActivations && a.owner === this) return a;
    throw new DuoError("INVALID_ARGUMENT", "wasm model kernels compute on their own activations (activations() of this set, or its views); got a host array or another set's");
  }
}
