/**
 * The WASM SIMD model kernels (wasm/model/kernels.c → wasm/dist/duo-model.wasm): one instance in the calling
 * thread, synchronous calls. Memory layout, managed here: [C stack + data | weights (bump-allocated, 64-byte
 * aligned, never freed) | scratch]; the scratch area holds the inputs and outputs of one kernel call and starts where
 * the weights end. Matrices keep their file dtype (2 bytes per parameter for f16/bf16, rows packed in groups of 8
 * for the kernels: pack_u16 in kernels.c), so a model fits when its weights plus the scratch of one prefill chunk
 * stay under the 4 GiB of a wasm32 memory.
 */
import { DuoError } from "../errors.ts";
import { readUrl } from "../runtime.ts";
import { type Matrix, type ModelKernels, type Vector, WEIGHT_BYTES, type WeightDtype } from "./kernels.ts";

const PAGE = 65536;
const MAX_PAGES = 65536; // 4 GiB, the module's declared maximum
const ALIGN = 64;

interface Exports {
  memory: WebAssembly.Memory;
  __heap_base: WebAssembly.Global;
  matmul_f32(y: number, x: number, w: number, b: number, T: number, nin: number, nout: number): void;
  matmul_bf16(y: number, x: number, w: number, b: number, T: number, nin: number, nout: number): void;
  matmul_f16(y: number, x: number, w: number, b: number, T: number, nin: number, nout: number): void;
  embed_f32(y: number, ids: number, table: number, T: number, n: number): void;
  embed_bf16(y: number, ids: number, table: number, T: number, n: number): void;
  embed_f16(y: number, ids: number, table: number, T: number, n: number): void;
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
  private disposed = false;

  constructor(private readonly ex: Exports) {
    this.base = this.top = align(Number(ex.__heap_base.value));
  }

  memory(): { weights: number; capacity: number } {
    return { weights: this.top - this.base, capacity: MAX_PAGES * PAGE - this.base };
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
    return new WasmMatrix(rows, cols, dtype, this.alloc(rows * cols * WEIGHT_BYTES[dtype]));
  }

  /** Each element is written once; when the last byte lands, f16/bf16 rows are packed (wasm/model/kernels.c). */
  write(m: Matrix, elementOffset: number, bytes: Uint8Array): void {
    const w = m as WasmMatrix, eb = WEIGHT_BYTES[w.dtype], total = w.rows * w.cols * eb;
    if (elementOffset < 0 || elementOffset * eb + bytes.length > total || w.written + bytes.length > total) {
      throw new DuoError("INVALID_ARGUMENT", `write of ${bytes.length} bytes at element ${elementOffset} overruns a [${w.rows}, ${w.cols}] ${w.dtype} matrix (${total} bytes, ${w.written} written)`);
    }
    new Uint8Array(this.ex.memory.buffer).set(bytes, w.ptr + elementOffset * eb);
    w.written += bytes.length;
    if (w.written === total && eb === 2) this.ex.pack_u16(w.ptr, w.rows, w.cols);
  }

  vector(data: Float32Array): Vector {
    const ptr = this.alloc(data.length * 4);
    new Float32Array(this.ex.memory.buffer, ptr, data.length).set(data);
    return new WasmVector(data.length, ptr);
  }

  matmul(y: Float32Array, x: Float32Array, w: Matrix, T: number, bias?: Vector): void {
    const m = w as WasmMatrix;
    const [px, py] = this.scratch(x, y.length);
    const fn = m.dtype === "f32" ? this.ex.matmul_f32 : m.dtype === "bf16" ? this.ex.matmul_bf16 : this.ex.matmul_f16;
    fn(py, px, m.ptr, bias ? (bias as WasmVector).ptr : 0, T, m.cols, m.rows);
    this.out(y, py);
  }

  rmsnorm(y: Float32Array, x: Float32Array, w: Vector, T: number, eps: number): void {
    const [px, py] = this.scratch(x, y.length);
    this.ex.rmsnorm(py, px, (w as WasmVector).ptr, T, w.length, eps);
    this.out(y, py);
  }

  rope(x: Float32Array, T: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array): void {
    const [px, pc, ps] = this.scratch(x, cos, sin);
    this.ex.rope(px, pc, ps, T, heads, headDim);
    this.out(x, px);
  }

  swiglu(y: Float32Array, gate: Float32Array, up: Float32Array): void {
    const [pg, pu, py] = this.scratch(gate, up, y.length);
    this.ex.swiglu(py, pg, pu, y.length);
    this.out(y, py);
  }

  embed(y: Float32Array, ids: Int32Array, table: Matrix): void {
    const m = table as WasmMatrix;
    const [pi, py] = this.scratch(ids, y.length);
    const fn = m.dtype === "f32" ? this.ex.embed_f32 : m.dtype === "bf16" ? this.ex.embed_bf16 : this.ex.embed_f16;
    fn(py, pi, m.ptr, ids.length, m.cols);
    this.out(y, py);
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

  /** Lay out the call's inputs (copied in) and output sizes (in elements) in the scratch area; returns addresses. */
  private scratch<P extends (Float32Array | Int32Array | number)[]>(...parts: P): { [K in keyof P]: number } {
    if (this.disposed) throw new DuoError("DISPOSED", "these model kernels have been disposed");
    const ptrs: number[] = [];
    let end = this.top;
    for (const p of parts) {
      ptrs.push(end);
      end = align(end + 4 * (typeof p === "number" ? p : p.length));
    }
    if (end > MAX_PAGES * PAGE) {
      throw new DuoError("CAPACITY", `a model kernel call needs ${end - this.top} bytes of scratch but only ${MAX_PAGES * PAGE - this.top} are left in the wasm memory; use a smaller prefillChunk`);
    }
    this.grow(end);
    const buf = this.ex.memory.buffer;
    parts.forEach((p, i) => {
      if (typeof p !== "number") new Uint8Array(buf, ptrs[i]!, p.byteLength).set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength));
    });
    return ptrs as { [K in keyof P]: number };
  }

  private out(y: Float32Array, ptr: number): void {
    y.set(new Float32Array(this.ex.memory.buffer, ptr, y.length));
  }
}
