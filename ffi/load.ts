/**
 * Finds, opens and checks libduo_cuda.so with this runtime's FFI (bun:ffi, Deno.dlopen, or koffi under Node).
 *
 * Library path, first that is set: the `cudaLibrary` option, $DUO_CUDA_LIB, cuda/build/libduo_cuda.so of this
 * checkout or package (what `npm run build:cuda` writes). A failure is a DuoError("BACKEND_UNAVAILABLE") whose message
 * is the short reason (`duo info` prints it) and whose `cause` lists the tried path and what went wrong.
 * The API version is checked at load; one library is opened once per process and path.
 */
import { DuoError } from "../src/errors.ts";
import { env, runtime } from "../src/runtime.ts";
import { type Binding, DUO_API_VERSION, type DuoLibrary } from "./symbols.ts";

/** Where `npm run build:cuda` puts the library (the repo or package root is one level above ffi/ and dist/). */
export function defaultLibraryPath(): string {
  return decodeURIComponent(new URL("../cuda/build/libduo_cuda.so", import.meta.url).pathname);
}

export interface LoadedLibrary {
  lib: DuoLibrary;
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

const opened = new Map<string, Promise<LoadedLibrary>>();

export function loadLibrary(explicit?: string): Promise<LoadedLibrary> {
  const fromEnv = env("DUO_CUDA_LIB");
  const [path, source] = explicit ? [explicit, "the cudaLibrary option"]
    : fromEnv ? [fromEnv, "DUO_CUDA_LIB"]
    : [defaultLibraryPath(), "the default build location"];
  let p = opened.get(path);
  if (!p) {
    p = open(path, source);
    opened.set(path, p);
    p.catch(() => opened.delete(path)); // a later call (after a build) tries again
  }
  return p;
}

async function open(path: string, source: string): Promise<LoadedLibrary> {
  const b = await binding();
  let lib: DuoLibrary;
  try {
    lib = await b.open(path);
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
      const reason = source === "the default build location" ? "library not built (npm run build:cuda)"
        : `library not found at ${path} (from ${source})`;
      throw new DuoError("BACKEND_UNAVAILABLE", reason, { cause });
    }
    throw new DuoError("BACKEND_UNAVAILABLE", `cannot load ${path}: ${msg}`, { cause });
  }
  const version = lib.duo_api_version();
  if (version !== DUO_API_VERSION) {
    lib.close();
    throw new DuoError(
      "BACKEND_UNAVAILABLE",
      `${path} has C API version ${version}, this package needs ${DUO_API_VERSION} (rebuild: npm run build:cuda)`,
      { cause: new Error(`tried ${path} (${source}): API version ${version}`) },
    );
  }
  return { lib, path };
}
