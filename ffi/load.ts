/**
 * Finds, opens and checks the native libraries with this runtime's FFI (bun:ffi, Deno.dlopen, or koffi under Node):
 * libduo_cuda.so (loadLibrary) and libduo.so, the CPU kernels (loadNativeLibrary).
 *
 * Library path, first that is set:
 *   cuda:   the `cudaLibrary` option, $DUO_CUDA_LIB, cuda/build/libduo_cuda.so (what `npm run build:cuda` writes)
 *   native: the `nativeLibrary` option, $DUO_NATIVE_LIB, native/dist/<os>-<arch>/libduo.so (committed for linux-x64;
 *           `bash native/build.sh` builds it for the host)
 * of this checkout or package. A failure is a DuoError("BACKEND_UNAVAILABLE") whose message is the short reason
 * (`duo info` prints it) and whose `cause` lists the tried path and what went wrong. The API version is checked at
 * load; one library is opened once per process and path (and never closed once checked: the native library's worker
 * threads live as long as the process).
 */
import { DUO_API_VERSION as NATIVE_API_VERSION } from "../src/backend/abi.ts";
import { DuoError } from "../src/errors.ts";
import { env, runtime } from "../src/runtime.ts";
import { type Binding, DUO_API_VERSION, type DuoLibrary, type Library, NATIVE_SYMBOLS, type NativeLibrary, SYMBOLS, type SymbolTable } from "./symbols.ts";

/** Where `npm run build:cuda` puts the library (the repo or package root is one level above ffi/ and dist/). */
export function defaultLibraryPath(): string {
  return decodeURIComponent(new URL("../cuda/build/libduo_cuda.so", import.meta.url).pathname);
}

/** "<os>-<arch>" of this process in Node's words (linux-x64, linux-arm64, darwin-arm64, ...). */
export function hostTarget(): string {
  const g = globalThis as { process?: { platform?: string; arch?: string }; Deno?: { build: { os: string; arch: string } } };
  if (g.Deno) return `${g.Deno.build.os}-${g.Deno.build.arch === "x86_64" ? "x64" : g.Deno.build.arch === "aarch64" ? "arm64" : g.Deno.build.arch}`;
  return `${g.process?.platform ?? "unknown"}-${g.process?.arch ?? "unknown"}`;
}

/** Where the CPU library of this host lives in the checkout or package. */
export function defaultNativePath(): string {
  return decodeURIComponent(new URL(`../native/dist/${hostTarget()}/libduo.so`, import.meta.url).pathname);
}

export interface LoadedLibrary<L = DuoLibrary> {
  lib: L;
  path: string;
}

async function binding(): Promise<Binding> {
  const rt = runtime();
  switch (rt.ffi) {
    case "bun":
      return (await import("./bun.ts")).binding;
    case "deno":
      return (await import("./deno.ts")).binding;
    case "koffi":
      return (await import("./node.ts")).binding;
    case "none":
      throw new DuoError("BACKEND_UNAVAILABLE", `no FFI in this runtime (${rt.name})`);
  }
}

/** What one library needs to be found, opened and checked. */
interface Spec<S extends SymbolTable> {
  symbols: S;
  version: number;
  /** the option that names a path, and the environment variable */
  option: string;
  envVar: string;
  defaultPath(): string;
  /** what builds it, for the messages */
  build: string;
  /** the reason when the default path has no library */
  notBuilt(): string;
}

const CUDA: Spec<typeof SYMBOLS> = {
  symbols: SYMBOLS, version: DUO_API_VERSION, option: "cudaLibrary", envVar: "DUO_CUDA_LIB", defaultPath: defaultLibraryPath,
  build: "npm run build:cuda", notBuilt: () => "library not built (npm run build:cuda)",
};
const NATIVE: Spec<typeof NATIVE_SYMBOLS> = {
  symbols: NATIVE_SYMBOLS, version: NATIVE_API_VERSION, option: "nativeLibrary", envVar: "DUO_NATIVE_LIB",
  defaultPath: defaultNativePath, build: "npm run build:native",
  notBuilt: () => `library not built for ${hostTarget()} (npm run build:native, which needs clang-19 and lld-19)`,
};

const opened = new Map<string, Promise<LoadedLibrary<unknown>>>();

function load<S extends SymbolTable>(spec: Spec<S>, explicit?: string): Promise<LoadedLibrary<Library<S>>> {
  const fromEnv = env(spec.envVar);
  const [path, source] = explicit ? [explicit, `the ${spec.option} option`]
    : fromEnv ? [fromEnv, spec.envVar]
    : [spec.defaultPath(), "the default build location"];
  const key = `${spec.envVar}:${path}`;
  let p = opened.get(key) as Promise<LoadedLibrary<Library<S>>> | undefined;
  if (!p) {
    p = open(spec, path, source);
    opened.set(key, p);
    p.catch(() => opened.delete(key)); // a later call (after a build) tries again
  }
  return p;
}

export function loadLibrary(explicit?: string): Promise<LoadedLibrary<DuoLibrary>> {
  return load(CUDA, explicit);
}

export function loadNativeLibrary(explicit?: string): Promise<LoadedLibrary<NativeLibrary>> {
  return load(NATIVE, explicit);
}

async function open<S extends SymbolTable>(spec: Spec<S>, path: string, source: string): Promise<LoadedLibrary<Library<S>>> {
  const b = await binding();
  let lib: Library<S>;
  try {
    lib = await b.open(path, spec.symbols);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    const cause = new Error(`tried ${path} (${source}): ${msg}`, { cause: e });
    if (e instanceof Error && (e.name === "NotCapable" || e.name === "PermissionDenied")) {
      throw new DuoError("BACKEND_UNAVAILABLE", `Deno needs --allow-ffi to load ${path}`, { cause });
    }
    if (/cannot find module|cannot find package|koffi/i.test(msg) && runtime().ffi === "koffi") {
      throw new DuoError("BACKEND_UNAVAILABLE", "koffi not installed (npm install koffi)", { cause });
    }
    if (/no such file|not found|cannot open shared object/i.test(msg)) {
      const reason = source === "the default build location" ? spec.notBuilt()
        : `library not found at ${path} (from ${source})`;
      throw new DuoError("BACKEND_UNAVAILABLE", reason, { cause });
    }
    throw new DuoError("BACKEND_UNAVAILABLE", `cannot load ${path}: ${msg}`, { cause });
  }
  const version = (lib as unknown as { duo_api_version(): number }).duo_api_version();
  if (version !== spec.version) {
    lib.close();
    throw new DuoError(
      "BACKEND_UNAVAILABLE",
      `${path} has C API version ${version}, this package needs ${spec.version} (rebuild: ${spec.build})`,
      { cause: new Error(`tried ${path} (${source}): API version ${version}`) },
    );
  }
  return { lib, path };
}
