/**
 * The one place that knows which JavaScript runtime we are in and what it can do.
 * Everything else in src/ asks here instead of touching Deno.*, Bun.* or node:* itself
 * (capability injection: runtime-specific FFI code lives in ffi/, file access goes through the helpers below).
 */
export type RuntimeName = "deno" | "bun" | "node" | "browser" | "worker" | "unknown";
export type FfiKind = "deno" | "bun" | "koffi" | "none";

export interface RuntimeInfo {
  name: RuntimeName;
  version: string;
  /** Which FFI this runtime offers natively; "koffi" means Node, which needs the optional koffi package. */
  ffi: FfiKind;
  wasm: boolean;
  wasmSimd: boolean;
  /** relaxed SIMD (f32x4.relaxed_madd) validates: Node >= 22, Deno, Bun; Node 20 behind --experimental-wasm-relaxed-simd */
  wasmRelaxedSimd: boolean;
  workers: boolean;
  sharedArrayBuffer: boolean;
  /** Logical cores this process may use (1 where unknown). */
  cores: number;
  /** Whether files can be read by path (false in browsers and most edge functions). */
  fs: boolean;
}

// deno-lint-ignore no-explicit-any
const g = globalThis as any;

function detectName(): RuntimeName {
  if (typeof g.Deno?.version?.deno === "string") return "deno";
  if (typeof g.Bun?.version === "string") return "bun";
  if (typeof g.process?.versions?.node === "string") return "node";
  if (typeof g.window === "object" && typeof g.document === "object") return "browser";
  if (typeof g.WorkerGlobalScope === "function" || typeof g.importScripts === "function") return "worker";
  return "unknown";
}

// The smallest module that uses a v128 instruction: (func (result v128) (v128.const i32x4 0 0 0 0)).
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 22, 1, 20, 0, 253, 12, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 11,
]);

// The same with a relaxed-SIMD instruction: (func (result v128) (f32x4.relaxed_madd (v128.const 0) x3)).
const RELAXED_SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 61, 1, 59, 0,
  253, 12, ...new Array(16).fill(0), 253, 12, ...new Array(16).fill(0), 253, 12, ...new Array(16).fill(0),
  253, 133, 2, 11,
]);

/**
 * A Node built-in module (Node >= 20.16, Bun, Deno all have process.getBuiltinModule). Asked for by name at run time
 * rather than imported, so that no module of the package has a top-level await (require() of the package works) and
 * a bundle for a browser or edge runtime holds no `node:` import to resolve.
 */
function builtin<T>(name: string): T {
  const get = g.process?.getBuiltinModule;
  if (typeof get !== "function") {
    throw new Error(`${name} is not available in this runtime (${detectName()}): it needs process.getBuiltinModule (Node >= 20.16, Bun, Deno)`);
  }
  return get(name) as T;
}

let cached: RuntimeInfo | undefined;

export function runtime(): RuntimeInfo {
  if (cached) return cached;
  const name = detectName();
  const wasm = typeof g.WebAssembly?.validate === "function";
  const version = name === "deno" ? g.Deno.version.deno : name === "bun" ? g.Bun.version
    : name === "node" ? g.process.versions.node : (g.navigator?.userAgent ?? "");
  // Node 20 has no navigator.hardwareConcurrency: ask node:os
  let cores = Number(g.navigator?.hardwareConcurrency) || 0;
  if (!cores && name === "node") cores = builtin<typeof import("node:os")>("node:os").availableParallelism();
  cached = {
    name,
    version: String(version),
    ffi: name === "deno" ? "deno" : name === "bun" ? "bun" : name === "node" ? "koffi" : "none",
    wasm,
    wasmSimd: wasm && WebAssembly.validate(SIMD_PROBE),
    wasmRelaxedSimd: wasm && WebAssembly.validate(RELAXED_SIMD_PROBE),
    // Deno and Bun have web Workers; Node has worker_threads (loaded lazily by the wasm backend).
    workers: name === "node" || typeof g.Worker === "function",
    sharedArrayBuffer: typeof g.SharedArrayBuffer === "function",
    cores: Math.max(1, cores || 1),
    fs: name === "deno" || name === "bun" || name === "node",
  };
  return cached;
}

/**
 * For a program that owns its Node process (the `duo` command): turn on relaxed SIMD where Node has it behind a flag
 * (Node 20), so that the wasm backend can load its fused-multiply-add build. Must run before any module is compiled;
 * a library import never calls this (a flag is the host program's business). Returns whether relaxed SIMD validates.
 */
export async function enableRelaxedSimd(): Promise<boolean> {
  const g2 = g as { WebAssembly?: typeof WebAssembly };
  if (!g2.WebAssembly || WebAssembly.validate(RELAXED_SIMD_PROBE)) return Boolean(g2.WebAssembly);
  if (detectName() !== "node") return false;
  builtin<typeof import("node:v8")>("node:v8").setFlagsFromString("--experimental-wasm-relaxed-simd");
  cached = undefined;
  return WebAssembly.validate(RELAXED_SIMD_PROBE);
}

/** An environment variable, or undefined (never throws, also without Deno's --allow-env). */
export function env(name: string): string | undefined {
  try {
    if (typeof g.Deno?.env?.get === "function") return g.Deno.env.get(name) ?? undefined;
    return g.process?.env?.[name] ?? undefined;
  } catch {
    return undefined;
  }
}

async function fs(): Promise<typeof import("node:fs/promises")> {
  if (!runtime().fs) throw new Error(`files cannot be read by path in this runtime (${runtime().name})`);
  return builtin<typeof import("node:fs/promises")>("node:fs/promises");
}

export async function readBytes(path: string): Promise<Uint8Array> {
  return new Uint8Array(await (await fs()).readFile(path));
}
export async function readText(path: string): Promise<string> {
  return await (await fs()).readFile(path, "utf8");
}
export async function writeText(path: string, text: string): Promise<void> {
  await (await fs()).writeFile(path, text);
}
export async function makeDir(path: string): Promise<void> {
  await (await fs()).mkdir(path, { recursive: true });
}
/** Read `length` bytes at `offset` of a file without loading the rest (for large weight files). */
export async function readRange(path: string, offset: number, length: number): Promise<Uint8Array> {
  const fh = await (await fs()).open(path, "r");
  try {
    const buf = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done === length ? buf : buf.subarray(0, done);
  } finally {
    await fh.close();
  }
}
export async function fileSize(path: string): Promise<number> {
  return (await (await fs()).stat(path)).size;
}
export async function exists(path: string): Promise<boolean> {
  try {
    await (await fs()).stat(path);
    return true;
  } catch {
    return false;
  }
}
/** Names of the directories directly inside `path`, sorted. */
export async function listDirs(path: string): Promise<string[]> {
  const entries = await (await fs()).readdir(path, { withFileTypes: true });
  return entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
}
/** Monotonic milliseconds. */
export function now(): number {
  return performance.now();
}

/** The bytes at a URL: file: URLs are read from disk (Node, Bun, Deno), anything else is fetched. */
export async function readUrl(url: URL): Promise<Uint8Array> {
  if (url.protocol === "file:") return new Uint8Array(await (await fs()).readFile(url));
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url.href}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** A worker thread running an ES module, with one message API everywhere (node:worker_threads in Node, Bun and Deno,
 *  which can unref it; a web Worker elsewhere). */
export interface WorkerThread {
  post(message: unknown, transfer?: ArrayBuffer[]): void;
  onMessage(fn: (message: unknown) => void): void;
  /** an uncaught error in the worker, or its unexpected exit */
  onError(fn: (error: Error) => void): void;
  /** keep the process alive while this worker has work (no-op for web Workers) */
  ref(): void;
  /** let the process exit even though this worker is alive (no-op for web Workers) */
  unref(): void;
  terminate(): Promise<void>;
}

/** Start a worker running the module at `url`. Under Node, a `.ts` module is loaded through tsx (the TypeScript
 *  loader the caller itself runs under) when it resolves, because Node 20 does not apply `--import` hooks to workers.
 *  Deno gets its native web Worker: its node:worker_threads layer moved our messages ~15x slower (0.03 vs 0.5 GB/s
 *  of KV appended). Web Workers cannot be unref'd, so in Deno (as in browsers) a process ends once its backends are
 *  disposed. */
export async function spawnWorker(url: URL): Promise<WorkerThread> {
  const name = runtime().name;
  if (name === "node" || name === "bun") {
    const { Worker } = builtin<typeof import("node:worker_threads")>("node:worker_threads");
    let tsx: string | undefined;
    if (name === "node" && url.pathname.endsWith(".ts")) {
      try {
        tsx = import.meta.resolve("tsx/esm/api");
      } catch {
        // no tsx: a Node that strips types itself loads the .ts worker directly (it inherits execArgv)
      }
    }
    const boot = tsx && `import(${JSON.stringify(tsx)}).then((api) => { api.register(); return import(${JSON.stringify(url.href)}); })`;
    const w = boot ? new Worker(boot, { eval: true }) : new Worker(url);
    return {
      post: (m, transfer) => w.postMessage(m, transfer as never),
      onMessage: (fn) => void w.on("message", fn),
      onError: (fn) => {
        w.on("error", fn);
        w.on("exit", (code) => fn(new Error(`worker exited with code ${code}`)));
      },
      ref: () => w.ref(),
      unref: () => w.unref(),
      terminate: async () => void (await w.terminate()),
    };
  }
  const w = new g.Worker(url, { type: "module" });
  return {
    post: (m, transfer) => w.postMessage(m, transfer ?? []),
    onMessage: (fn) => void (w.onmessage = (e: MessageEvent) => fn(e.data)),
    onError: (fn) => void (w.onerror = (e: ErrorEvent) => (e.preventDefault(), fn(new Error(e.message)))),
    ref: () => {},
    unref: () => {},
    terminate: async () => w.terminate(),
  };
}

/** Inside a worker started by spawnWorker: the channel to the thread that started it. */
export async function parentChannel(): Promise<{ post(message: unknown, transfer?: ArrayBuffer[]): void; onMessage(fn: (message: unknown) => void): void }> {
  const name = runtime().name;
  if (name === "node" || name === "bun") {
    const { parentPort } = builtin<typeof import("node:worker_threads")>("node:worker_threads");
    if (!parentPort) throw new Error("parentChannel(): not running in a worker thread");
    return { post: (m, transfer) => parentPort.postMessage(m, transfer as never), onMessage: (fn) => void parentPort.on("message", fn) };
  }
  return {
    post: (m, transfer) => g.postMessage(m, transfer ?? []),
    onMessage: (fn) => void (g.onmessage = (e: MessageEvent) => fn(e.data)),
  };
}

/** The 1-minute load average (runnable processes), or null where the runtime cannot tell (benchmarks report it). */
export async function loadAverage(): Promise<number | null> {
  try {
    if (typeof g.Deno?.loadavg === "function") return g.Deno.loadavg()[0] ?? null;
    if (runtime().fs) return builtin<typeof import("node:os")>("node:os").loadavg()[0] ?? null;
  } catch {
    // not permitted or not implemented here
  }
  return null;
}
