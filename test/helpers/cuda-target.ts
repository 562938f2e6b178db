/**
 * Which CUDA library the CUDA tests run on: $DUO_CUDA_LIB when set; else cuda/build/libduo_cuda.so when it loads and
 * sees a device; else the host emulation cuda/build/libduo_cuda_emu.so (bash cuda/emu/build.sh) when it is built, so
 * that a machine without a GPU (CI) runs the kernels through the emulator; else none, and the tests skip.
 * `label` goes into the test names, so that every report says which library ran.
 */
import { probeCuda } from "../../src/backend/cuda.ts";
import { env, exists } from "../../src/runtime.ts";

export interface CudaTarget {
  /** the cudaLibrary option to pass (undefined: the default build location) */
  library: string | undefined;
  /** e.g. "emulator", "GPU" */
  label: string;
  /** false, or why the tests skip */
  skip: string | false;
}

export const emulatorLibraryPath = decodeURIComponent(new URL("../../cuda/build/libduo_cuda_emu.so", import.meta.url).pathname);

async function find(): Promise<CudaTarget> {
  const named = env("DUO_CUDA_LIB");
  const label = (path: string) => (/_emu(_asan)?\.so$/.test(path) ? "emulator" : "GPU");
  if (named) {
    const probe = await probeCuda({ cudaLibrary: named });
    return { library: named, label: label(named), skip: probe.usable ? false : `skipped: DUO_CUDA_LIB: ${probe.reason}` };
  }
  const gpu = await probeCuda({});
  if (gpu.usable) return { library: undefined, label: "GPU", skip: false };
  if (await exists(emulatorLibraryPath)) {
    const probe = await probeCuda({ cudaLibrary: emulatorLibraryPath });
    return { library: emulatorLibraryPath, label: "emulator", skip: probe.usable ? false : `skipped: emulator: ${probe.reason}` };
  }
  return { library: undefined, label: "no device", skip: `skipped: no CUDA device (${gpu.reason}) and no emulation build (bash cuda/emu/build.sh)` };
}

export const cudaTarget: CudaTarget = await find();
