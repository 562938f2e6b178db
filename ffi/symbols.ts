/**
 * The C ABIs of the two native libraries, declared once in a runtime-neutral vocabulary: SYMBOLS for libduo_cuda.so
 * (cuda/include/duo.h) and NATIVE_SYMBOLS for libduo.so, the CPU kernels (wasm/src/duo.h + native/src/host.h).
 * ffi/bun.ts (bun:ffi), ffi/deno.ts (Deno.dlopen) and ffi/node.ts (koffi) translate a table; ffi/load.ts picks one.
 *
 * Vocabulary
 *   "i32", "u32"  32-bit integers (JS number)
 *   "u64"         byte counts and offsets, and addresses in the library's memory (JS number; exact below 2^53,
 *                 which user-space addresses are on x86-64 and aarch64)
 *   "buffer"      a pointer to the bytes of a typed array (or null), taken at call time on every call; the library
 *                 never keeps it (no cached pointers: Bun's ptr() goes stale once a caller is JIT-compiled)
 *   "f32"         float
 *   "f64"         double (result only)
 *   "cstring"     const char* owned by the library (result only; copied into a JS string)
 * The C prototype is written beside every argument. Constants below mirror the enums of duo.h (test/cuda-abi.test.ts
 * compares them with the header).
 */
export type ArgType = "i32" | "u32" | "u64" | "f32" | "buffer";
export type ResultType = "i32" | "u32" | "f32" | "f64" | "cstring" | "void";
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
      "buffer", // const float* src [T, src_heads, head_dim] (NULL with a device tensor src)
      "buffer", // const int32_t* heads [row_heads]
      "buffer", // const int32_t* rows [T]
    ],
    result: "i32",
  },
  duo_attend: {
    args: [
      "buffer", // const int32_t* params [ATTEND.PARAMS]
      "buffer", // const float* q [T, Hq, D] (NULL with a device tensor q)
      "buffer", // const int32_t* q_heads [kv_heads]
      "buffer", // const int32_t* kv_slots [kv_heads]
      "buffer", // const int32_t* segments [n_segments][SEG.FIELDS]
      "buffer", // const int32_t* positions [n_positions] (or NULL)
      "buffer", // float* out [T, Hq, D] (NULL with a device tensor out)
      "buffer", // float* lse [T, Hq] (or NULL)
    ],
    result: "i32",
  },
  // double duo_last_device_ms(void)
  duo_last_device_ms: { args: [], result: "f64" },
  // ---- the model math on the device (duo.h: f32 tensors are a handle + an element offset) ----
  duo_upload: {
    args: [
      "u32", // uint32_t handle
      "u64", // uint64_t offset (bytes)
      "u64", // uint64_t bytes
      "buffer", // const void* src
    ],
    result: "i32",
  },
  duo_model_embed: {
    args: [
      "u32", // uint32_t y: [T, cols] f32
      "u64", // uint64_t y_off (elements)
      "buffer", // const int32_t* ids [T]
      "i32", // int32_t T
      "u32", // uint32_t table: [rows, cols] of dtype
      "i32", // int32_t rows
      "i32", // int32_t cols
      "i32", // int32_t dtype (WEIGHT)
    ],
    result: "i32",
  },
  duo_model_matmul: {
    args: [
      "u32", // uint32_t y: [T, rows] f32
      "u64", // uint64_t y_off
      "u32", // uint32_t x: [T, cols] f32
      "u64", // uint64_t x_off
      "u32", // uint32_t w: [rows, cols] of dtype
      "i32", // int32_t dtype (WEIGHT)
      "u32", // uint32_t bias: [rows] f32, or 0
      "i32", // int32_t T
      "i32", // int32_t cols
      "i32", // int32_t rows
    ],
    result: "i32",
  },
  duo_model_rmsnorm: {
    args: [
      "u32", // uint32_t y: [T, n] f32
      "u64", // uint64_t y_off
      "u32", // uint32_t x: [T, n] f32
      "u64", // uint64_t x_off
      "u32", // uint32_t w: [n] f32
      "i32", // int32_t T
      "i32", // int32_t n
      "f32", // float eps
    ],
    result: "i32",
  },
  duo_model_rope: {
    args: [
      "u32", // uint32_t x: [T, heads, head_dim] f32, in place
      "u64", // uint64_t x_off
      "buffer", // const float* cos [T, head_dim / 2]
      "buffer", // const float* sin [T, head_dim / 2]
      "i32", // int32_t T
      "i32", // int32_t heads
      "i32", // int32_t head_dim
    ],
    result: "i32",
  },
  duo_model_swiglu: {
    args: [
      "u32", // uint32_t y: [n] f32
      "u64", // uint64_t y_off
      "u32", // uint32_t gate: [n] f32
      "u64", // uint64_t gate_off
      "u32", // uint32_t up: [n] f32
      "u64", // uint64_t up_off
      "u64", // uint64_t n
    ],
    result: "i32",
  },
  duo_model_add: {
    args: [
      "u32", // uint32_t y: [n] f32
      "u64", // uint64_t y_off
      "u32", // uint32_t x: [n] f32
      "u64", // uint64_t x_off
      "u64", // uint64_t n
    ],
    result: "i32",
  },
  duo_model_argmax: {
    args: [
      "u32", // uint32_t x: [n] f32
      "u64", // uint64_t x_off
      "i32", // int32_t n
      "buffer", // int32_t* out [1]
    ],
    result: "i32",
  },
} as const satisfies Record<string, SymbolDef>;

export type SymbolName = keyof typeof SYMBOLS;
export type SymbolTable = Readonly<Record<string, SymbolDef>>;

type ArgValue<T> = T extends "buffer" ? ArrayBufferView | null : number;
type ResultValue<T> = T extends "cstring" ? string : T extends "void" ? void : number;
type Args<A> = { -readonly [I in keyof A]: ArgValue<A[I]> };

/** A library as each runtime binding returns it: one JS function per symbol of its table, plus close(). */
export type Library<S extends SymbolTable> = {
  readonly [K in keyof S]: (...args: Args<S[K]["args"]>) => ResultValue<S[K]["result"]>;
} & { close(): void };
export type DuoLibrary = Library<typeof SYMBOLS>;
export type NativeLibrary = Library<typeof NATIVE_SYMBOLS>;

/** What ffi/bun.ts, ffi/deno.ts and ffi/node.ts export. */
export interface Binding {
  open<S extends SymbolTable>(path: string, symbols: S): Promise<Library<S>>;
}

// ---- constants of duo.h ----

export const DUO_API_VERSION = 3;

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

export const DTYPE = { f32: 0, f16: 1, bf16: 2, int8: 3, int4: 4 } as const;

/** enum duo_weight_dtype: the weight element types of the model kernels */
export const WEIGHT = { F32: 0, F16: 1, BF16: 2, Q8_0: 3, Q4_0: 4, Q4_K: 5, Q6_K: 6 } as const;

/** SRC_BUF / *_BUF: a device tensor's buffer (0: the host array argument), its element offset in two words (LO, HI) */
export const APPEND = { DST: 0, DTYPE: 1, ROW_HEADS: 2, HEAD_DIM: 3, TOKENS: 4, SRC_HEADS: 5, SRC_BUF: 6, SRC_OFF_LO: 7, SRC_OFF_HI: 8, PARAMS: 9 } as const;

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
  Q_BUF: 11,
  Q_OFF_LO: 12,
  Q_OFF_HI: 13,
  OUT_BUF: 14,
  OUT_OFF_LO: 15,
  OUT_OFF_HI: 16,
  LSE_BUF: 17,
  LSE_OFF_LO: 18,
  LSE_OFF_HI: 19,
  PARAMS: 20,
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

// ---- libduo.so: the CPU kernels (wasm/src/duo.h ops, native/src/host.h memory and threads) ----

/** Its constants (DUO_API_VERSION, status, dtype and layout codes, the segment words) are src/backend/abi.ts's:
 *  one wire format for the wasm and native builds. Addresses ("u64") are those duo_alloc gave. */
export const NATIVE_SYMBOLS = {
  // int32_t duo_api_version(void)
  duo_api_version: { args: [], result: "i32" },
  // const char* duo_last_error(void)
  duo_last_error: { args: [], result: "cstring" },
  // const char* duo_isa(void)
  duo_isa: { args: [], result: "cstring" },
  duo_select_isa: {
    args: [
      "buffer", // const char* name (NUL-terminated; NULL or "": the best this CPU runs)
    ],
    result: "i32",
  },
  duo_threads: {
    args: [
      "i32", // int32_t n
    ],
    result: "i32",
  },
  duo_alloc: {
    args: [
      "u64", // uint64_t bytes
      "buffer", // uint64_t* out: the block's address
    ],
    result: "i32",
  },
  duo_free: {
    args: [
      "u64", // uint64_t block
    ],
    result: "i32",
  },
  duo_memory: {
    args: [
      "buffer", // double* out: [bytes in live blocks, live blocks]
    ],
    result: "i32",
  },
  duo_read: {
    args: [
      "u64", // uint64_t block
      "u64", // uint64_t offset
      "u64", // uint64_t bytes
      "buffer", // void* dst
    ],
    result: "i32",
  },
  duo_write: {
    args: [
      "u64", // uint64_t block
      "u64", // uint64_t offset
      "u64", // uint64_t bytes
      "buffer", // const void* src
    ],
    result: "i32",
  },
  duo_read_file: {
    args: [
      "buffer", // const char* path (NUL-terminated UTF-8)
      "u64", // uint64_t file_offset
      "u64", // uint64_t bytes
      "u64", // uint64_t block
      "u64", // uint64_t block_offset
    ],
    result: "i32",
  },
  duo_map_file: {
    args: [
      "buffer", // const char* path (NUL-terminated UTF-8)
      "buffer", // uint64_t* out: [the mapping's address (its handle), the file's bytes]
    ],
    result: "i32",
  },
  duo_map_view: {
    args: [
      "u64", // uint64_t map
      "u64", // uint64_t offset
      "u64", // uint64_t bytes
      "buffer", // uint64_t* out: the view's address, a read-only block (duo_free releases it)
    ],
    result: "i32",
  },
  duo_unmap: {
    args: [
      "u64", // uint64_t map
    ],
    result: "i32",
  },
  duo_append: {
    args: [
      "u64", // void* dst (a block)
      "i32", // int32_t dtype (KV code: abi.ts DTYPE_CODE)
      "i32", // int32_t row_heads
      "i32", // int32_t head_dim
      "buffer", // const float* src [n][src_heads][head_dim]
      "i32", // int32_t src_heads
      "buffer", // const int32_t* heads [row_heads]
      "buffer", // const int32_t* rows [n]
      "i32", // int32_t n
      "i32", // int32_t layout
      "i32", // int32_t buffer_rows
    ],
    result: "i32",
  },
  duo_attend: {
    args: [
      "buffer", // const float* q [t][num_heads][head_dim]
      "i32", // int32_t t
      "i32", // int32_t num_heads
      "i32", // int32_t head_dim
      "i32", // int32_t group
      "i32", // int32_t n_heads
      "buffer", // const int32_t* q_heads [n_heads]
      "buffer", // const int32_t* kv_slots [n_heads]
      "buffer", // const duo_segment* segments [n_segments] (SEGMENT_WORDS i32 each)
      "i32", // int32_t n_segments
      "i32", // int32_t q_pos0
      "i32", // int32_t windowed
      "i32", // int32_t sink
      "i32", // int32_t recent
      "buffer", // float* out [t][n_heads * group][head_dim]
      "buffer", // float* lse [t][n_heads * group] (or NULL)
      "buffer", // void* work (NULL: the library keeps its own)
    ],
    result: "i32",
  },
  duo_bench_read: {
    args: [
      "u64", // const void* ptr (a block)
      "u32", // uint32_t bytes
    ],
    result: "f32",
  },
  duo_bench_mad: {
    args: [
      "i32", // int32_t iters
    ],
    result: "f32",
  },
  duo_model_matmul: {
    args: [
      "buffer", // float* y [T][nout]
      "buffer", // const float* x [T][nin]
      "u64", // uint64_t w (a block: [nout, nin] of dtype; quantized rows in whole blocks)
      "buffer", // const float* bias [nout] (or NULL)
      "i32", // int32_t T
      "i32", // int32_t nin
      "i32", // int32_t nout
      "i32", // int32_t dtype (weight code, host.h DUO_W_*: kernels-native.ts WEIGHT_CODE)
    ],
    result: "i32",
  },
  duo_model_embed: {
    args: [
      "buffer", // float* y [T][cols]
      "buffer", // const int32_t* ids [T]
      "u64", // uint64_t table (a block: [rows, cols] of dtype)
      "i32", // int32_t T
      "i32", // int32_t rows
      "i32", // int32_t cols
      "i32", // int32_t dtype (weight code, host.h DUO_W_*: kernels-native.ts WEIGHT_CODE)
    ],
    result: "i32",
  },
  duo_model_rmsnorm: {
    args: [
      "buffer", // float* y [T][n]
      "buffer", // const float* x [T][n]
      "buffer", // const float* w [n]
      "i32", // int32_t T
      "i32", // int32_t n
      "f32", // float eps
    ],
    result: "i32",
  },
  duo_model_rope: {
    args: [
      "buffer", // float* x [T][heads][head_dim] (in place)
      "buffer", // const float* cos [T][head_dim / 2]
      "buffer", // const float* sin [T][head_dim / 2]
      "i32", // int32_t T
      "i32", // int32_t heads
      "i32", // int32_t head_dim
    ],
    result: "i32",
  },
  duo_model_swiglu: {
    args: [
      "buffer", // float* y [n]
      "buffer", // const float* gate [n]
      "buffer", // const float* up [n]
      "i32", // int32_t n
    ],
    result: "i32",
  },
  // The backward kernels of gate identification (native/src/backward.c; src/identify/backward-kernels.ts).
  duo_bwd_linear: {
    args: [
      "buffer", // float* dx [T][nin] (+)=
      "buffer", // const float* dy [T][nout]
      "u64", // uint64_t w (a block: [nout, nin] of dtype f32 / f16 / bf16, rows as the file stores them)
      "i32", // int32_t T
      "i32", // int32_t nin
      "i32", // int32_t nout
      "i32", // int32_t dtype (0 f32, 1 f16, 2 bf16)
      "i32", // int32_t accumulate
    ],
    result: "i32",
  },
  duo_bwd_rms_inv: {
    args: [
      "buffer", // float* rinv [T]
      "buffer", // const float* x [T][n]
      "i32", // int32_t T
      "i32", // int32_t n
      "f32", // float eps
    ],
    result: "i32",
  },
  duo_bwd_rmsnorm: {
    args: [
      "buffer", // float* dx [T][n] +=
      "buffer", // const float* dy [T][n]
      "buffer", // const float* x [T][n]
      "buffer", // const float* w [n]
      "buffer", // const float* rinv [T]
      "i32", // int32_t T
      "i32", // int32_t n
    ],
    result: "i32",
  },
  duo_bwd_swiglu: {
    args: [
      "buffer", // float* da [n]
      "buffer", // float* du [n]
      "buffer", // const float* dm [n]
      "buffer", // const float* a [n]
      "buffer", // const float* u [n]
      "i32", // int32_t n
    ],
    result: "i32",
  },
  duo_bwd_rope: {
    args: [
      "buffer", // float* x [T][heads][head_dim] (in place, rotated by -theta)
      "buffer", // const float* cos [T][head_dim / 2]
      "buffer", // const float* sin [T][head_dim / 2]
      "i32", // int32_t T
      "i32", // int32_t heads
      "i32", // int32_t head_dim
    ],
    result: "i32",
  },
  duo_bwd_attend: {
    args: [
      "buffer", // float* out [nq][Hq][D]
      "buffer", // float* lse [nq][Hq]
      "buffer", // const float* q [nq][Hq][D]
      "buffer", // const float* k [nk][Hkv][D]
      "buffer", // const float* v [nk][Hkv][D]
      "buffer", // const int32_t* ranges [nq][3]: keys [0, a) and [b, e)
      "i32", // int32_t nq
      "i32", // int32_t nk
      "i32", // int32_t Hq
      "i32", // int32_t Hkv
      "i32", // int32_t D
    ],
    result: "i32",
  },
  duo_bwd_attend_backward: {
    args: [
      "buffer", // float* dq [nq][Hq][D] +=
      "buffer", // float* dk [nk][Hkv][D] +=
      "buffer", // float* dv [nk][Hkv][D] +=
      "buffer", // const float* dO [nq][Hq][D]
      "buffer", // const float* O [nq][Hq][D]
      "buffer", // const float* lse [nq][Hq]
      "buffer", // const float* q [nq][Hq][D]
      "buffer", // const float* k [nk][Hkv][D]
      "buffer", // const float* v [nk][Hkv][D]
      "buffer", // const int32_t* ranges [nq][3]
      "i32", // int32_t nq
      "i32", // int32_t nk
      "i32", // int32_t Hq
      "i32", // int32_t Hkv
      "i32", // int32_t D
    ],
    result: "i32",
  },
  duo_bwd_mix: {
    args: [
      "buffer", // float* dstr [nq][Hq][D]
      "buffer", // double* dalpha [Hkv] +=
      "buffer", // const float* dmix [nq][Hq][D]
      "buffer", // const float* afull [nq][Hq][D]
      "buffer", // const float* astr [nq][Hq][D]
      "buffer", // const float* alpha [Hkv]
      "i32", // int32_t nq
      "i32", // int32_t Hq
      "i32", // int32_t Hkv
      "i32", // int32_t D
    ],
    result: "i32",
  },
} as const satisfies SymbolTable;
