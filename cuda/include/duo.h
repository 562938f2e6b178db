/*
 * libduo_cuda: the C ABI of the DuoAttention CUDA backend.
 *
 * Conventions
 *  - Every function returns a status (DUO_OK = 0, errors < 0); on error duo_last_error() holds a message for the
 *    calling thread that names the bad value and the valid range. Nothing throws across this boundary.
 *  - Device buffers are u32 handles (never raw pointers); host data is passed as plain arrays on every call and is
 *    not retained after the call returns (outputs are complete when it returns).
 *  - Arrays of scalar parameters and the segment table are flat int32 arrays whose field indices are the enums
 *    below, so they cross any FFI as an Int32Array.
 *  - KV buffers are token-major ("NHD"): row r, head j, element d at element index (r * row_heads + j) * head_dim + d;
 *    a quantized buffer (DUO_INT8, DUO_INT4) holds one record of b = head_dim + 4 (int8) or head_dim / 2 + 4 (int4)
 *    bytes per row and head instead, record (r, j) at byte (r * row_heads + j) * b (enum duo_dtype below).
 *  - One process drives one device (duo_init); calls are serialised by a lock.
 *  - Device tensors (API 3): duo_append's src and duo_attend's q, out and lse may instead be f32 elements of a buffer
 *    (a handle and a uint64_t element offset in the params, the host argument NULL), e.g. the model kernels'
 *    activations: the call then copies nothing between host and device for them (gathers and scatters run on the
 *    device), and with a device out it returns without waiting for the kernels (stream order, as the model kernels).
 *    Checked like every tensor: a live handle, elements inside the buffer (DUO_ERR_CAPACITY otherwise). The values
 *    are not read on the host: the int4 / int8 finiteness rule of duo_append is the caller's to keep (records of
 *    other values are unspecified, as for host src). A decode step captured as a CUDA graph is not provided: the
 *    calls stage host arrays (segment table, positions, ids, RoPE tables) through pinned memory per call and look
 *    handles up on the host; a graph needs those tables device-resident and updated by kernels (cuda/emu/README.md).
 */
#ifndef DUO_H
#define DUO_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DUO_API __attribute__((visibility("default")))

/* Bumped on any change of a prototype, enum value or semantics below (2: the model kernels and duo_upload; the
 * int8 / int4 dtypes; 3: device tensors for duo_append's src and duo_attend's q / out / lse). */
enum { DUO_API_VERSION = 3 };

enum duo_status {
  DUO_OK = 0,
  DUO_ERR_ARGUMENT = -1,    /* a value outside its valid range */
  DUO_ERR_HANDLE = -2,      /* an unknown or freed buffer handle */
  DUO_ERR_CAPACITY = -3,    /* out of device memory, or rows / bytes past the end of a buffer */
  DUO_ERR_UNSUPPORTED = -4, /* a head dim, dtype or device architecture this build does not cover */
  DUO_ERR_NO_DEVICE = -5,   /* no CUDA driver or device, or duo_init was not called */
  DUO_ERR_CUDA = -6,        /* any other CUDA runtime error (the message has its name and code) */
  DUO_ERR_INTERNAL = -7     /* a host allocation failure or another caught C++ exception */
};

/* KV dtypes. The quantized ones store each head's head_dim values of a row as one record (src/quant.ts, bit for bit):
 *   DUO_INT8  head_dim int8 codes, then an f32 scale (head_dim + 4 bytes)       x = q * scale
 *             amax = max |x|, scale = amax / 127, q = clamp(rne(x / scale), -127, 127) (0 when scale is 0)
 *   DUO_INT4  head_dim / 2 bytes, then f16 s and f16 z (head_dim / 2 + 4 bytes)  x = f16(f16(q * s) + z)
 *             upstream's KV4 codec: scale = (max - min) / 15 + 1e-8 (f32), q = clamp(roundf((x - min) / scale), 0, 15),
 *             s = f16(scale), z = f16(min); byte i = q[2i] << 4 | q[2i + 1]; head_dim even
 * Appends quantize each record; attention dequantizes inside the kernels (no dequantized copy of a cache is made). */
enum duo_dtype { DUO_F32 = 0, DUO_F16 = 1, DUO_BF16 = 2, DUO_INT8 = 3, DUO_INT4 = 4 };

/* duo_append scalar parameters: int32_t params[DUO_APPEND_PARAMS]. */
enum duo_append_param {
  DUO_APPEND_DST = 0,       /* handle of the destination KV buffer */
  DUO_APPEND_DTYPE = 1,     /* enum duo_dtype of the destination */
  DUO_APPEND_ROW_HEADS = 2, /* heads per destination row */
  DUO_APPEND_HEAD_DIM = 3,  /* elements per head */
  DUO_APPEND_TOKENS = 4,    /* T: tokens in src */
  DUO_APPEND_SRC_HEADS = 5, /* heads per src token */
  DUO_APPEND_SRC_BUF = 6,    /* 0: src is the host array; else src is NULL and this buffer holds it (a device tensor) */
  DUO_APPEND_SRC_OFF_LO = 7, /* the device tensor's uint64_t element offset: low 32 bits */
  DUO_APPEND_SRC_OFF_HI = 8, /*   and high 32 bits */
  DUO_APPEND_PARAMS = 9
};

/* duo_attend scalar parameters: int32_t params[DUO_ATTEND_PARAMS]. */
enum duo_attend_param {
  DUO_ATTEND_TOKENS = 0,    /* T: query tokens */
  DUO_ATTEND_NUM_HEADS = 1, /* Hq: query heads per token in q and out */
  DUO_ATTEND_HEAD_DIM = 2,  /* D: 64 or 128 */
  DUO_ATTEND_GROUP = 3,     /* G: query heads per KV head (query head h*G + g reads KV head h) */
  DUO_ATTEND_KV_HEADS = 4,  /* number of KV heads of this call (length of q_heads and kv_slots) */
  DUO_ATTEND_SEGMENTS = 5,  /* rows of the segment table */
  DUO_ATTEND_POSITIONS = 6, /* length of the positions array */
  DUO_ATTEND_QPOS0 = 7,     /* absolute position of query token 0 (token t is at qpos0 + t) */
  DUO_ATTEND_SINK = 8,      /* window: keys at positions < sink stay visible; -1 = no window (causal only) */
  DUO_ATTEND_RECENT = 9,    /* window: keys at positions >= t - recent stay visible; -1 = no window */
  DUO_ATTEND_SPLITS = 10,   /* split-KV: 0 = automatic, 1 = off, n = at most n key chunks per KV head */
  DUO_ATTEND_Q_BUF = 11,    /* device tensors (0: the host array argument; else that argument is NULL), each with */
  DUO_ATTEND_Q_OFF_LO = 12, /*   a uint64_t element offset in two words (low, high) */
  DUO_ATTEND_Q_OFF_HI = 13,
  DUO_ATTEND_OUT_BUF = 14,  /* out and lse are both host arrays or both device tensors (lse may be absent: 0 / NULL) */
  DUO_ATTEND_OUT_OFF_LO = 15,
  DUO_ATTEND_OUT_OFF_HI = 16,
  DUO_ATTEND_LSE_BUF = 17,
  DUO_ATTEND_LSE_OFF_LO = 18,
  DUO_ATTEND_LSE_OFF_HI = 19,
  DUO_ATTEND_PARAMS = 20
};

/* One row of the segment table: int32_t segments[n][DUO_SEG_FIELDS]. A segment is rows
 * [row_start, row_start + row_count) of a K and a V buffer with the same layout. */
enum duo_segment_field {
  DUO_SEG_K = 0,         /* handle of the K buffer */
  DUO_SEG_V = 1,         /* handle of the V buffer */
  DUO_SEG_DTYPE = 2,     /* enum duo_dtype of both buffers */
  DUO_SEG_ROW_HEADS = 3, /* heads per row */
  DUO_SEG_ROW_START = 4,
  DUO_SEG_ROW_COUNT = 5,
  DUO_SEG_POS0 = 6,      /* position of the first row when rows hold consecutive positions */
  DUO_SEG_POS_INDEX = 7, /* -1: consecutive from POS0; else positions[POS_INDEX + r] is the position of row r */
  DUO_SEG_FIELDS = 8
};

/* DUO_API_VERSION of the library (the caller compares it with the version it was written for). */
DUO_API int32_t duo_api_version(void);

/* The message of the calling thread's last failed call ("" if none). Valid until that thread's next call. */
DUO_API const char* duo_last_error(void);

/* Number of CUDA devices (>= 0), or a negative status when there is no usable driver (message says why). */
DUO_API int32_t duo_device_count(void);

/* Select the device, create the stream. Idempotent for the same device; another device is an error while buffers
 * are allocated. Devices older than sm_80 are DUO_ERR_UNSUPPORTED. */
DUO_API int32_t duo_init(int32_t device);

/* out[0] = bytes held by live buffers, out[1] = free device bytes, out[2] = total device bytes. */
DUO_API int32_t duo_memory(double* out);

/* Allocate `bytes` (zero-filled) and write its handle to *handle. */
DUO_API int32_t duo_alloc(uint64_t bytes, uint32_t* handle);

DUO_API int32_t duo_free(uint32_t handle);

/* Copy bytes [offset, offset + bytes) of a buffer to / from host memory (synchronous). */
DUO_API int32_t duo_read(uint32_t handle, uint64_t offset, uint64_t bytes, void* dst);
DUO_API int32_t duo_write(uint32_t handle, uint64_t offset, uint64_t bytes, const void* src);

/*
 * Copy rows of a host f32 tensor into a KV buffer, rounding to its dtype (round to nearest even; a NaN stays a NaN,
 * its sign and payload unspecified: f16 / bf16 get the GPU's canonical NaN 0x7FFF), or quantizing each head's values
 * into its record (DUO_INT8, DUO_INT4: the values must be finite, and within +-65504 for int4; records of other
 * values are unspecified).
 *   src   [T, src_heads, head_dim] f32, or NULL with a device tensor (params DUO_APPEND_SRC_BUF, gathered on the
 *         device; tokens x src_heads < 2^31)
 *   heads [row_heads]: destination head j takes src head heads[j]
 *   rows  [T]: token t goes to row rows[t], or nowhere when rows[t] == -1; when two tokens name one row the later wins
 */
DUO_API int32_t duo_append(const int32_t* params, const float* src, const int32_t* heads, const int32_t* rows);

/*
 * Attention of the query heads of some KV heads over the union of the segments' rows.
 *   q         [T, Hq, D] f32, or NULL with a device tensor (params DUO_ATTEND_Q_BUF)
 *   q_heads   [kv_heads]: KV head j serves query heads q_heads[j]*G .. q_heads[j]*G + G-1
 *   kv_slots  [kv_heads]: the head slot of KV head j within every segment's rows
 *   segments  [n_segments][DUO_SEG_FIELDS]
 *   positions [n_positions]: explicit row positions referenced by DUO_SEG_POS_INDEX (may be NULL when unused)
 *   out       [T, Hq, D] f32: only the rows of the covered query heads are written; or NULL with a device tensor
 *             (params DUO_ATTEND_OUT_BUF): then written in stream order, and the call does not wait for the kernels
 *   lse       [T, Hq] f32 natural log-sum-exp of the scaled scores, or NULL (a device tensor with a device out)
 * Query token t (position qpos0 + t) sees a key at position p iff p <= qpos0 + t and, with a window,
 * (p < sink || p >= qpos0 + t - recent). Scale 1/sqrt(D); a row with no visible key gets zeros and lse = -inf.
 */
DUO_API int32_t duo_attend(const int32_t* params, const float* q, const int32_t* q_heads, const int32_t* kv_slots,
                           const int32_t* segments, const int32_t* positions, float* out, float* lse);

/* Device milliseconds of the kernels of the last duo_append or duo_attend (CUDA events), or -1 when unknown. */
DUO_API double duo_last_device_ms(void);

/* ---- The model math on the device (src/model/kernels-cuda.ts) ----
 * The model kernels of a Llama-family decoder, so that a forward pass keeps every activation on the device and only
 * what the caller reads (logits, or the argmax token) crosses back.
 *  - An f32 device tensor is a buffer handle plus a uint64_t element offset into it (a view: several tensors may
 *    share one buffer); its length is implied by the shapes of the call and must lie inside the buffer
 *    (DUO_ERR_CAPACITY otherwise). Outputs may be their inputs where a prototype says so, and must not otherwise
 *    overlap an input (DUO_ERR_ARGUMENT).
 *  - A weight matrix [rows, cols] is a whole buffer of enum duo_weight_dtype, row-major as in the model file; f32
 *    vectors (norms, biases) are whole buffers too. A bias handle of 0 means no bias (handles start at 1).
 *  - The kernels are queued on the context's stream and the call returns without waiting for them; duo_read (and
 *    duo_model_argmax) wait. Host arrays (ids, cos, sin) are copied through pinned staging before the call returns.
 *  - matmul is a plain CUDA kernel with f32 accumulation (cuda/src/kernel_model.cu). On hardware the intended fast
 *    path is cuBLASLt (bf16 / f16 weights, f32 accumulation), which is not written yet; the emulation build
 *    (cuda/emu) could not run it. */

/* Weight element types of the model kernels (0..2 are the KV dtypes' codes). */
enum duo_weight_dtype {
  DUO_W_F32 = 0,
  DUO_W_F16 = 1,
  DUO_W_BF16 = 2,
  /* llama.cpp's block types (ggml-common.h), decoded as src/model/tensor-types.ts and kquants.ts do; cols a
   * multiple of the block: */
  DUO_W_Q8_0 = 3, /* 32 elements in 34 bytes: f16 d, 32 int8 q; element = q * d */
  DUO_W_Q4_0 = 4, /* 32 elements in 18 bytes: f16 d, 16 bytes of nibbles; element = (q - 8) * d */
  DUO_W_Q4_K = 5, /* 256 elements in 144 bytes: f16 d, f16 dmin, 6-bit (scale, min) x 8, nibbles */
  DUO_W_Q6_K = 6  /* 256 elements in 210 bytes: low nibbles, 2-bit highs, 16 int8 scales, f16 d */
};

/* Copy `bytes` of host memory into a buffer at byte `offset` through pinned staging, in stream order: returns once
 * src has been copied out (the caller may reuse it), without waiting for the device; later kernels see the bytes.
 * Weights are uploaded once this way. */
DUO_API int32_t duo_upload(uint32_t handle, uint64_t offset, uint64_t bytes, const void* src);

/* y [T, cols] f32 (y, y_off) = rows ids[t] of table [rows, cols] of dtype, widened to f32.
 *   ids [T] host int32, each in [0, rows); dtype: enum duo_weight_dtype */
DUO_API int32_t duo_model_embed(uint32_t y, uint64_t y_off, const int32_t* ids, int32_t T, uint32_t table,
                                int32_t rows, int32_t cols, int32_t dtype);

/* y [T, rows] (y, y_off) = x [T, cols] (x, x_off) . W^T + bias, f32 accumulation.
 *   w [rows, cols] of dtype (enum duo_weight_dtype); bias [rows] f32, or handle 0 */
DUO_API int32_t duo_model_matmul(uint32_t y, uint64_t y_off, uint32_t x, uint64_t x_off, uint32_t w, int32_t dtype,
                                 uint32_t bias, int32_t T, int32_t cols, int32_t rows);

/* y [T, n] = x [T, n] * (1 / sqrt(mean(x^2) + eps)) * w [n], per row (w: a buffer of n f32). y may be x. */
DUO_API int32_t duo_model_rmsnorm(uint32_t y, uint64_t y_off, uint32_t x, uint64_t x_off, uint32_t w, int32_t T,
                                  int32_t n, float eps);

/* RoPE, rotate-half (NeoX) layout, in place on x [T, heads, head_dim]: with h = head_dim / 2, for i < h
 * (x[i], x[i+h]) <- (x[i] cos - x[i+h] sin, x[i+h] cos + x[i] sin).
 *   cos, sin [T, head_dim / 2] host f32 tables (the model's frequencies and scaling are in them); head_dim even */
DUO_API int32_t duo_model_rope(uint32_t x, uint64_t x_off, const float* cos, const float* sin, int32_t T,
                               int32_t heads, int32_t head_dim);

/* y [n] = silu(gate [n]) * up [n], silu(g) = g / (1 + e^-g). y may be gate or up. */
DUO_API int32_t duo_model_swiglu(uint32_t y, uint64_t y_off, uint32_t gate, uint64_t gate_off, uint32_t up,
                                 uint64_t up_off, uint64_t n);

/* y [n] += x [n] (the residual add). y may be x. */
DUO_API int32_t duo_model_add(uint32_t y, uint64_t y_off, uint32_t x, uint64_t x_off, uint64_t n);

/* out[0] = index of the largest of x [n] (n >= 1): the first on ties, NaN never wins, 0 when every element is NaN.
 * Waits for the queued work (the one value crosses back). */
DUO_API int32_t duo_model_argmax(uint32_t x, uint64_t x_off, int32_t n, int32_t* out);

#ifdef __cplusplus
}
#endif

#endif /* DUO_H */
