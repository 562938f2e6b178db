/**
 * The C ABI of libduo_cuda.so (cuda/include/duo.h), declared once in a runtime-neutral vocabulary.
 * ffi/bun.ts (bun:ffi), ffi/deno.ts (Deno.dlopen) and ffi/node.ts (koffi) translate this table; ffi/load.ts picks one.
 *
 * Vocabulary
 *   "i32", "u32"  32-bit integers (JS number)
 *   "u64"         byte counts and offsets (JS number; exact below 2^53)
 *   "buffer"      a pointer to the bytes of a typed array (or null), taken at call time on every call; the library
 *                 never keeps it (no cached pointers: Bun's ptr() goes stale once a caller is JIT-compiled)
 *   "f64"         double (result only)
 *   "cstring"     const char* owned by the library (result only; copied into a JS string)
 * The C prototype is written beside every argument. Constants below mirror the enums of duo.h (test/cuda-abi.test.ts
 * compares them with the header).
 */
export type ArgType = "i32" | "u32" | "u64" | "buffer";
export type ResultType = "i32" | "f64" | "cstring";
export interface SymbolDef {
  readonly args: readonly ArgType[];
  readonly result: ResultType;
}

export const SYMBOLS = {
  // int32_t duo_api_version(void)
  duo_api_version: { args: [], result: "i32" },
  // const char* duo_last_error(void)
  duo_last_error: { args: [], result: "cstring" },
  // int32_t duo_device_count(void)
  duo_device_count: { args: [], result: "i32" },
  duo_init: {
    args: [
      "i32", // int32_t device
    ],
    result: "i32",
  },
  duo_memory: {
    args: [
      "buffer", // double* out: [bytes of live buffers, free device bytes, total device bytes]
    ],
    result: "i32",
  },
  duo_alloc: {
    args: [
      "u64", // uint64_t bytes
      "buffer", // uint32_t* handle (out)
    ],
    result: "i32",
  },
  duo_free: {
    args: [
      "u32", // uint32_t handle
    ],
    result: "i32",
  },
  duo_read: {
    args: [
      "u32", // uint32_t handle
      "u64", // uint64_t offset
      "u64", // uint64_t bytes
      "buffer", // void* dst
    ],
    result: "i32",
  },
  duo_write: {
    args: [
      "u32", // uint32_t handle
      "u64", // uint64_t offset
      "u64", // uint64_t bytes
      "buffer", // const void* src
    ],
    result: "i32",
  },
  duo_append: {
    args: [
      "buffer", // const int32_t* params [APPEND.PARAMS]
      "buffer", // const float* src [T, src_heads, head_dim]
      "buffer", // const int32_t* heads [row_heads]
      "buffer", // const int32_t* rows [T]
    ],
    result: "i32",
  },
  duo_attend: {
    args: [
      "buffer", // const int32_t* params [ATTEND.PARAMS]
      "buffer", // const float* q [T, Hq, D]
      "buffer", // const int32_t* q_heads [kv_heads]
      "buffer", // const int32_t* kv_slots [kv_heads]
      "buffer", // const int32_t* segments [n_segments][SEG.FIELDS]
      "buffer", // const int32_t* positions [n_positions] (or NULL)
      "buffer", // float* out [T, Hq, D]
      "buffer", // float* lse [T, Hq] (or NULL)
    ],
    result: "i32",
  },
  // double duo_last_device_ms(void)
  duo_last_device_ms: { args: [], result: "f64" },
} as const satisfies Record<string, SymbolDef>;

export type SymbolName = keyof typeof SYMBOLS;

type ArgValue<T> = T extends "buffer" ? ArrayBufferView | null : number;
type ResultValue<T> = T extends "cstring" ? string : number;
type Args<A> = { -readonly [I in keyof A]: ArgValue<A[I]> };

/** The library as each runtime binding returns it: one JS function per symbol, plus close(). */
export type DuoLibrary = {
  readonly [K in SymbolName]: (
    ...args: Args<(typeof SYMBOLS)[K]["args"]>
  ) => ResultValue<(typeof SYMBOLS)[K]["result"]>;
} & { close(): void };

/** What ffi/bun.ts, ffi/deno.ts and ffi/node.ts export. */
export interface Binding {
  open(path: string): Promise<DuoLibrary>;
}

// ---- constants of duo.h ----

export const DUO_API_VERSION = 1;

export const STATUS = {
  OK: 0,
  ERR_ARGUMENT: -1,
  ERR_HANDLE: -2,
  ERR_CAPACITY: -3,
  ERR_UNSUPPORTED: -4,
  ERR_NO_DEVICE: -5,
  ERR_CUDA: -6,
  ERR_INTERNAL: -7,
} as const;

export const DTYPE = { f32: 0, f16: 1, bf16: 2 } as const;

export const APPEND = { DST: 0, DTYPE: 1, ROW_HEADS: 2, HEAD_DIM: 3, TOKENS: 4, SRC_HEADS: 5, PARAMS: 6 } as const;

export const ATTEND = {
  TOKENS: 0,
  NUM_HEADS: 1,
  HEAD_DIM: 2,
  GROUP: 3,
  KV_HEADS: 4,
  SEGMENTS: 5,
  POSITIONS: 6,
  QPOS0: 7,
  SINK: 8,
  RECENT: 9,
  SPLITS: 10,
  PARAMS: 11,
} as const;

export const SEG = {
  K: 0,
  V: 1,
  DTYPE: 2,
  ROW_HEADS: 3,
  ROW_START: 4,
  ROW_COUNT: 5,
  POS0: 6,
  POS_INDEX: 7,
  FIELDS: 8,
} as const;
