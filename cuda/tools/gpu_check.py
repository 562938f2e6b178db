#!/usr/bin/env python3
"""GPU check of libduo_cuda.so for machines with a GPU but without Node, Bun or Deno (run by cuda/gpu-check.sh).

Drives the C API of cuda/include/duo.h through ctypes (the enum values are read from the header itself) and
  1. conformance: the op grid of test/cuda-conformance.test.ts (dtype f32/f16/bf16/int8/int4 x head dim 64/128 x G = 1/4/8 x
     T < S, T = S + R, T = S + R + 1, decode and blocks after a context x causal / window x split-KV off / forced /
     automatic), checked against a float64 numpy twin of src/backend/reference.ts:
       KV append: bytes identical to numpy's round-to-nearest-even conversion, or to the int8 / int4 records of a
       numpy twin of src/quant.ts;
       f32 and int8 KV, int4 KV on the CUDA-core kernel (T x G <= 16): |a - b| <= 1e-5 + 1e-4 |b| per element and
       NMSE <= 1e-10 (for int8 / int4 the reference attends over the records' dequantized values);
       int4 KV on the tensor-core kernel: the f16 rule below over the dequantized values (they are f16 values);
       f16 / bf16 KV: max error <= 2 x that of a naive attention in the same precision + 2 x the dtype's rounding of
       0.3 (FlashAttention's test rule); outputs are NaN-poisoned, covered heads must be written, others untouched;
  2. benchmarks (PyTorch needed for the peers): decode GB/s of one Llama-3-8B layer (32 query / 8 KV heads, D = 128,
     bf16, pages of 1024 rows) at 16K and 128K against a device-to-device copy measured in the same run, and of int8 /
     int4 caches of the same layer against the bf16 time and the byte ratio; int4 causal prefill at 8K; one
     retrieval KV head at 128K; a Duo layer (4 retrieval + 4 streaming heads, S = 64, R = 256) against the full layer
     and against the byte ratio; causal prefill TFLOP/s (D = 128, 8K and 16K tokens) against each PyTorch SDPA backend.
Kernel times are the library's CUDA-event times (duo_last_device_ms), median of repeated calls.

Usage: python3 cuda/tools/gpu_check.py [--lib PATH] [--device N] [--quick] [--no-bench] [--no-conformance]
Exit status: 0 all checks passed, 1 a check failed, 2 no CUDA device / library not loadable.
"""
import argparse
import ctypes
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

CUDA_DIR = Path(__file__).resolve().parent.parent
HEADER = CUDA_DIR / "include" / "duo.h"
DEFAULT_LIB = CUDA_DIR / "build" / "libduo_cuda.so"
C = {m.group(1): int(m.group(2)) for m in re.finditer(r"\b(DUO_[A-Z0-9_]+)\s*=\s*(-?\d+)", HEADER.read_text())}
DTYPE = {"f32": C["DUO_F32"], "f16": C["DUO_F16"], "bf16": C["DUO_BF16"], "int8": C["DUO_INT8"], "int4": C["DUO_INT4"]}
ELEM = {"f32": 4, "f16": 2, "bf16": 2}  # bytes per element of the float dtypes
QUANTIZED = ("int8", "int4")


def head_bytes(dtype, D):
    """Bytes of one head's D values of one row: D elements, or an int8 / int4 record (duo.h enum duo_dtype)."""
    return {"f32": 4 * D, "int8": D + 4, "int4": D // 2 + 4}.get(dtype, 2 * D)


class DuoError(Exception):
    def __init__(self, status, message):
        super().__init__(f"{message} (status {status})")
        self.status = status


# ---------------------------------------------------------------- the C API through ctypes

class Duo:
    I32, U32, U64, F64, P = ctypes.c_int32, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_double, ctypes.c_void_p
    SIGNATURES = {  # name: (argument types, result type), as in duo.h
        "duo_api_version": ([], I32),
        "duo_last_error": ([], ctypes.c_char_p),
        "duo_device_count": ([], I32),
        "duo_init": ([I32], I32),
        "duo_memory": ([P], I32),
        "duo_alloc": ([U64, P], I32),
        "duo_free": ([U32], I32),
        "duo_read": ([U32, U64, U64, P], I32),
        "duo_write": ([U32, U64, U64, P], I32),
        "duo_append": ([P, P, P, P], I32),
        "duo_attend": ([P, P, P, P, P, P, P, P], I32),
        "duo_last_device_ms": ([], F64),
    }

    def __init__(self, path):
        self.lib = ctypes.CDLL(str(path))
        for name, (args, res) in self.SIGNATURES.items():
            f = getattr(self.lib, name)
            f.argtypes, f.restype = args, res
        version = self.lib.duo_api_version()
        if version != C["DUO_API_VERSION"]:
            raise DuoError(-1, f"{path} has C API version {version}, duo.h says {C['DUO_API_VERSION']}")

    def error(self):
        return self.lib.duo_last_error().decode()

    def check(self, status):
        if status != C["DUO_OK"]:
            raise DuoError(status, self.error())

    @staticmethod
    def ptr(a):
        if a is None:
            return None
        assert a.flags["C_CONTIGUOUS"], "arrays handed to the library must be contiguous"
        return a.ctypes.data_as(ctypes.c_void_p)

    def device_count(self):
        return self.lib.duo_device_count()

    def init(self, device):
        self.check(self.lib.duo_init(device))

    def memory(self):
        out = np.zeros(3, np.float64)
        self.check(self.lib.duo_memory(self.ptr(out)))
        return out

    def alloc(self, nbytes):
        h = np.zeros(1, np.uint32)
        self.check(self.lib.duo_alloc(nbytes, self.ptr(h)))
        return int(h[0])

    def free(self, h):
        self.check(self.lib.duo_free(h))

    def read(self, h, offset, nbytes):
        out = np.empty(nbytes, np.uint8)
        self.check(self.lib.duo_read(h, offset, nbytes, self.ptr(out)))
        return out

    def write(self, h, offset, data):
        data = np.ascontiguousarray(data)
        self.check(self.lib.duo_write(h, offset, data.nbytes, self.ptr(data)))

    def append(self, dst, dtype, row_heads, src, heads, rows):
        """src [T, src_heads, D] f32; heads [row_heads]; rows [T] (-1 = skip)."""
        src = np.ascontiguousarray(src, np.float32)
        T, src_heads, D = src.shape
        p = np.zeros(C["DUO_APPEND_PARAMS"], np.int32)
        p[[C["DUO_APPEND_DST"], C["DUO_APPEND_DTYPE"], C["DUO_APPEND_ROW_HEADS"], C["DUO_APPEND_HEAD_DIM"],
           C["DUO_APPEND_TOKENS"], C["DUO_APPEND_SRC_HEADS"]]] = [dst, DTYPE[dtype], row_heads, D, T, src_heads]
        heads, rows = np.ascontiguousarray(heads, np.int32), np.ascontiguousarray(rows, np.int32)
        self.check(self.lib.duo_append(self.ptr(p), self.ptr(src), self.ptr(heads), self.ptr(rows)))

    def attend(self, q, G, q_heads, kv_slots, segments, qpos0, window, splits, out, lse):
        """q [T, Hq, D] f32; segments: dicts k, v, dtype, row_heads, row_start, row_count, positions (int or array);
        window (sink, recent) or None; out [T, Hq, D] / lse [T, Hq] f32 (lse may be None)."""
        q = np.ascontiguousarray(q, np.float32)
        T, Hq, D = q.shape
        seg = np.zeros((len(segments), C["DUO_SEG_FIELDS"]), np.int32)
        explicit = []
        npos = 0
        for i, s in enumerate(segments):
            f = seg[i]
            f[C["DUO_SEG_K"]], f[C["DUO_SEG_V"]], f[C["DUO_SEG_DTYPE"]] = s["k"], s["v"], DTYPE[s["dtype"]]
            f[C["DUO_SEG_ROW_HEADS"]], f[C["DUO_SEG_ROW_START"]] = s["row_heads"], s["row_start"]
            f[C["DUO_SEG_ROW_COUNT"]] = s["row_count"]
            if np.isscalar(s["positions"]):
                f[C["DUO_SEG_POS0"]], f[C["DUO_SEG_POS_INDEX"]] = s["positions"], -1
            else:
                f[C["DUO_SEG_POS_INDEX"]] = npos
                explicit.append(np.asarray(s["positions"], np.int32)[: s["row_count"]])
                npos += s["row_count"]
        positions = np.ascontiguousarray(np.concatenate(explicit), np.int32) if explicit else None
        p = np.zeros(C["DUO_ATTEND_PARAMS"], np.int32)
        values = {"TOKENS": T, "NUM_HEADS": Hq, "HEAD_DIM": D, "GROUP": G, "KV_HEADS": len(q_heads),
                  "SEGMENTS": len(segments), "POSITIONS": npos, "QPOS0": qpos0,
                  "SINK": window[0] if window else -1, "RECENT": window[1] if window else -1, "SPLITS": splits}
        for k, v in values.items():
            p[C["DUO_ATTEND_" + k]] = v
        qh, ks = np.ascontiguousarray(q_heads, np.int32), np.ascontiguousarray(kv_slots, np.int32)
        self.check(self.lib.duo_attend(self.ptr(p), self.ptr(q), self.ptr(qh), self.ptr(ks), self.ptr(seg),
                                       self.ptr(positions), self.ptr(out), self.ptr(lse)))

    def device_ms(self):
        return self.lib.duo_last_device_ms()


# ---------------------------------------------------------------- numerics: rounding, reference, naive

def round_bits(x, dtype):
    """f32 values -> storage bits of dtype (round to nearest even), as src/dtype.ts does."""
    x = np.asarray(x, np.float32)
    if dtype == "f32":
        return x.view(np.uint32)
    if dtype == "f16":
        return x.astype(np.float16).view(np.uint16)
    b = x.view(np.uint32).astype(np.uint64)
    return (((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF).astype(np.uint16)


def quantize(x, dtype):
    """f32 values [..., D] -> their int8 / int4 records [..., head_bytes] (uint8), as src/quant.ts writes them."""
    x = np.asarray(x, np.float32)
    D = x.shape[-1]
    if dtype == "int8":
        amax = np.abs(x).max(axis=-1, keepdims=True)
        scale = (amax / np.float32(127)).astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(scale == 0, 0, np.clip(np.rint(x / scale), -127, 127))  # rint: ties to even
        return np.concatenate([q.astype(np.int8).view(np.uint8), scale.view(np.uint8)], axis=-1)
    mn, mx = x.min(axis=-1, keepdims=True), x.max(axis=-1, keepdims=True)
    scale = ((mx - mn) / np.float32(15) + np.float32(1e-8)).astype(np.float32)  # each step rounded to f32
    v = ((x - mn) / scale).astype(np.float64)  # an f32 quotient
    q = np.clip(np.floor(v + 0.5), 0, 15).astype(np.uint8)  # roundf of v >= 0 (half away from zero; exact in f64)
    packed = (q[..., 0::2] << 4) | q[..., 1::2]  # the even element in the high nibble
    sz = np.concatenate([scale.astype(np.float16), mn.astype(np.float16)], axis=-1)
    return np.concatenate([packed, np.ascontiguousarray(sz).view(np.uint8)], axis=-1)


def dequantize(rec, dtype, D):
    """int8 / int4 records [..., head_bytes] -> the values attention reads, as f64 (src/quant.ts dequantizeRecord)."""
    rec = np.ascontiguousarray(rec, np.uint8)
    if dtype == "int8":
        scale = rec[..., D:].copy().view(np.float32)
        return (rec[..., :D].view(np.int8).astype(np.float32) * scale).astype(np.float64)
    sz = rec[..., D // 2:].copy().view(np.float16)
    s, z = sz[..., 0:1], sz[..., 1:2]
    q = np.empty(rec.shape[:-1] + (D,), np.uint8)
    q[..., 0::2], q[..., 1::2] = rec[..., : D // 2] >> 4, rec[..., : D // 2] & 15
    with np.errstate(over="ignore"):
        return (q.astype(np.float16) * s + z).astype(np.float64)  # f16 arithmetic: each step rounded to f16


def rounded(x, dtype):
    """What dtype storage holds for f32 values x, as f64."""
    x = np.asarray(x, np.float32)
    if dtype in QUANTIZED:
        return dequantize(quantize(x, dtype), dtype, x.shape[-1])
    if dtype == "f32":
        return x.astype(np.float64)
    if dtype == "f16":
        return x.astype(np.float16).astype(np.float64)
    return (round_bits(x, dtype).astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def attention(q, K, V, pos, qpos0, window, low=None):
    """One KV head: q [T, G, D], K/V [N, D], pos [N] -> out [T, G, D], lse [T, G] in float64 (the AttendOp rule).
    low = a dtype: the naive same-precision baseline (scores, probabilities and output rounded to it)."""
    T, G, D = q.shape
    t = qpos0 + np.arange(T)
    vis = pos[None, :] <= t[:, None]
    if window:
        vis &= (pos[None, :] < window[0]) | (pos[None, :] >= t[:, None] - window[1])
    s = np.einsum("tgd,nd->tgn", q, K) / math.sqrt(D)
    if low:
        s = rounded(s, low)
    s = np.where(vis[:, None, :], s, -np.inf)
    m = s.max(axis=-1, keepdims=True) if s.shape[-1] else np.full((T, G, 1), -np.inf)
    m = np.where(np.isfinite(m), m, 0.0)
    w = np.exp(s - m)
    total = w.sum(axis=-1)
    p = w / np.where(total > 0, total, 1.0)[..., None]
    if low:
        p = rounded(p, low)
    out = np.einsum("tgn,nd->tgd", p, V)
    if low:
        out = rounded(out, low)
    lse = np.where(total > 0, m[..., 0] + np.log(np.where(total > 0, total, 1.0)), -np.inf)
    return out, lse


# ---------------------------------------------------------------- conformance

S_, R_, PAGE, KVH = 4, 8, 64, 3
COVERED, SLOTS = np.array([2, 0], np.int32), np.array([0, 1], np.int32)
CASES = [(0, 3), (0, 12), (0, 13), (70, 1), (70, 2), (70, 13), (70, 24), (1000, 1)]  # (context, T)
BIG_CASES = [(16384, 1), (4096, 256), (0, 2048)]


def run_case(duo, rng, dtype, D, G, ctx, T, window, splits):
    """Build the layout of test/cuda-conformance.test.ts, run one attend; return (ok, error, tolerance, label) where
    error / tolerance <= 1 passes (f32: the worst per-element ratio to 1e-5 + 1e-4 |b|)."""
    Hq, P = KVH * G, ctx + T
    Kall = rng.uniform(-1, 1, (P, KVH, D)).astype(np.float32)
    Vall = rng.uniform(-1, 1, (P, KVH, D)).astype(np.float32)
    q = rng.uniform(-3, 3, (T, Hq, D)).astype(np.float32)
    row_bytes = 2 * head_bytes(dtype, D)
    stored = (lambda x: quantize(x, dtype)) if dtype in QUANTIZED else (lambda x: round_bits(x, dtype))
    store = [duo.alloc(max(1, ctx) * row_bytes) for _ in range(2)]
    ring = [duo.alloc(T * row_bytes) for _ in range(2)]
    perm = rng.permutation(T)  # ring row r holds token perm[r]
    ring_rows = np.empty(T, np.int32)
    ring_rows[perm] = np.arange(T, dtype=np.int32)
    label = f"{dtype} D={D} G={G} ctx={ctx} T={T} {'window' if window else 'causal'} splits={splits}"
    try:
        for buf, src in ((store[0], Kall), (store[1], Vall)):
            duo.append(buf, dtype, 2, src[:ctx], COVERED, np.arange(ctx, dtype=np.int32))
        for buf, src in ((ring[0], Kall), (ring[1], Vall)):
            duo.append(buf, dtype, 2, src[ctx:], COVERED, ring_rows)
        # append: exact bytes
        expect_store = stored(Kall[:ctx][:, COVERED]).tobytes()
        if ctx and duo.read(store[0], 0, len(expect_store)).tobytes() != expect_store:
            return False, math.inf, 0, label + " (append bytes differ)"
        expect_ring = stored(Vall[ctx:][perm][:, COVERED]).tobytes()
        if duo.read(ring[1], 0, len(expect_ring)).tobytes() != expect_ring:
            return False, math.inf, 0, label + " (append bytes differ in the ring)"
        segments = [dict(k=store[0], v=store[1], dtype=dtype, row_heads=2, row_start=p0, row_count=min(PAGE, ctx - p0),
                         positions=p0) for p0 in range(0, ctx, PAGE)]
        segments.append(dict(k=ring[0], v=ring[1], dtype=dtype, row_heads=2, row_start=0, row_count=T,
                             positions=(ctx + perm).astype(np.int32)))
        out = np.full((T, Hq, D), np.nan, np.float32)
        lse = np.full((T, Hq), np.nan, np.float32)
        duo.attend(q, G, COVERED, SLOTS, segments, ctx, window, splits, out, lse)
    finally:
        for h in store + ring:
            duo.free(h)

    pos = np.arange(P)
    # f32 accuracy from the CUDA-core kernel; the tensor-core kernel (f16 / bf16, and int4 query blocks of more than 16
    # packed rows: attend.cu) rounds q and the probabilities to f16 / bf16
    exact = dtype in ("f32", "int8") or (dtype == "int4" and T * G <= 16)
    low = "f16" if dtype == "int4" else dtype
    err = naive_err = lse_err = naive_lse_err = atol = nmse_num = nmse_den = f32_ratio = 0.0
    for kvh in range(KVH):
        heads = slice(kvh * G, kvh * G + G)
        if kvh not in COVERED:
            if not (np.isnan(out[:, heads]).all() and np.isnan(lse[:, heads]).all()):
                return False, math.inf, 0, label + f" (uncovered KV head {kvh} was written)"
            continue
        if np.isnan(out[:, heads]).any() or np.isnan(lse[:, heads]).any():
            return False, math.inf, 0, label + f" (rows of KV head {kvh} not written)"
        K, V = rounded(Kall[:, kvh], dtype), rounded(Vall[:, kvh], dtype)
        ref, ref_lse = attention(q[:, heads].astype(np.float64), K, V, pos, ctx, window)
        got = out[:, heads].astype(np.float64)
        err = max(err, float(np.abs(got - ref).max()))
        nmse_num += float(((got - ref) ** 2).sum())
        nmse_den += float((ref ** 2).sum())
        fin = np.isfinite(ref_lse)
        if not np.array_equal(fin, np.isfinite(lse[:, heads])):
            return False, math.inf, 0, label + " (lse -inf where the reference is finite, or the reverse)"
        lse_err = max(lse_err, float(np.abs(lse[:, heads][fin] - ref_lse[fin]).max(initial=0)))
        if exact:
            ratio = np.abs(got - ref) / (1e-5 + 1e-4 * np.abs(ref))
            f32_ratio = max(f32_ratio, float(ratio.max()))
            if (ratio > 1).any():
                i = tuple(int(x) for x in np.argwhere(ratio > 1)[0])
                return False, f32_ratio, 1.0, label + f" (first bad element {i}: {got[i]} vs {ref[i]})"
        else:
            nv, nv_lse = attention(rounded(q[:, heads], low), K, V, pos, ctx, window, low=low)
            naive_err = max(naive_err, float(np.abs(nv - ref).max()))
            naive_lse_err = max(naive_lse_err, float(np.abs(nv_lse[fin] - ref_lse[fin]).max(initial=0)))
            r = rounded(ref, low)
            atol = max(atol, 2 * float(np.abs(rounded(rounded(r + 0.3, low) - 0.3, low) - r).max()))
    if exact:
        nmse = nmse_num / nmse_den if nmse_den else nmse_num
        ok = nmse <= 1e-10 and lse_err <= 1e-4
        return ok, f32_ratio, 1.0, label + ("" if ok else f" (NMSE {nmse:.2e}, lse error {lse_err:.2e})")
    tol = 2 * naive_err + atol
    ok = err <= tol and lse_err <= 2 * naive_lse_err + 1e-3
    return ok, err, tol, label + ("" if ok else f" (error {err:.3e} > {tol:.3e} or lse error {lse_err:.2e})")


def conformance(duo, quick):
    rng = np.random.default_rng(2025)
    rows, failures, n = [], [], 0
    splits_cycle = [1, 3, 0]
    for dtype in ("f32", "f16", "bf16", "int8", "int4"):
        for D in (64, 128):
            for G in (1, 4, 8):
                worst, count = 0.0, 0
                cases = CASES[::2] if quick else CASES + ([] if dtype in ("f32", "int8", "int4") or G == 8 else BIG_CASES)
                for ctx, T in cases:
                    for window in (None, (S_, R_)):
                        for splits in ([splits_cycle[n % 3]] if quick else splits_cycle):
                            n += 1
                            ok, err, tol, label = run_case(duo, rng, dtype, D, G, ctx, T, window, splits)
                            count += 1
                            worst = max(worst, err / tol if tol else math.inf)
                            if not ok:
                                failures.append(label)
                                print("FAIL", label)  # at once: a run cut short by a time-out still shows it
                rows.append((dtype, D, G, count, worst))
                print(f"conformance {dtype:4s} D={D:3d} G={G}: {count} attends, worst error / tolerance {worst:.3f}")
    return rows, failures


# ---------------------------------------------------------------- benchmarks

def median_ms(fn, reps):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        times.append(fn())
    return statistics.median(times)


class PagedStore:
    """KV pages of the retrieval store: K and V buffers of 1024 rows x heads x 128 values of `dtype` (bf16, or int8 /
    int4 records), random contents."""

    def __init__(self, duo, rng, tokens, heads, D=128, page=1024, dtype="bf16"):
        self.duo, self.segments, self.handles = duo, [], []
        x = rng.uniform(-1, 1, (page, heads, D)).astype(np.float32)
        image = quantize(x, dtype) if dtype in QUANTIZED else round_bits(x, dtype)
        for p0 in range(0, tokens, page):
            k, v = duo.alloc(image.nbytes), duo.alloc(image.nbytes)
            duo.write(k, 0, image)
            duo.write(v, 0, image)
            self.handles += [k, v]
            self.segments.append(dict(k=k, v=v, dtype=dtype, row_heads=heads, row_start=0,
                                      row_count=min(page, tokens - p0), positions=p0))
        self.bytes = 2 * tokens * heads * head_bytes(dtype, D)

    def free(self):
        for h in self.handles:
            self.duo.free(h)


def decode_ms(duo, store, q, G, q_heads, qpos0, window=None, reps=50):
    """Median kernel time of one decode attend of the query heads of KV heads `q_heads` over `store` (slots 0..)."""
    out = np.zeros_like(q)
    q_heads = np.asarray(q_heads, np.int32)
    slots = np.arange(len(q_heads), dtype=np.int32)

    def once():
        duo.attend(q, G, q_heads, slots, store.segments, qpos0, window, 0, out, None)
        return duo.device_ms()
    return median_ms(once, reps)


def emit(rows, row):
    """Keep a result row for the final table and print it at once."""
    rows.append(row)
    print(f"{row[0]:58s} {row[1]:28s} {row[2]}")


def benchmarks(duo, torch, quick):
    rng = np.random.default_rng(7)
    rows = []
    reps = 10 if quick else 50

    copy_gbs = None
    if torch is not None:
        n = 1 << 30
        a, b = torch.empty(n, dtype=torch.uint8, device="cuda"), torch.empty(n, dtype=torch.uint8, device="cuda")
        copy_gbs = 2 * n / torch_ms(torch, lambda: b.copy_(a), reps) / 1e6
        del a, b
        emit(rows, ("device-to-device copy (torch, read + write)", f"{copy_gbs:8.0f} GB/s", ""))
    else:
        emit(rows, ("device-to-device copy", "skipped", "PyTorch with CUDA not available"))

    def of_copy(gbs):
        return f"{100 * gbs / copy_gbs:5.1f}% of copy" if copy_gbs else ""

    # Llama-3-8B layer: 32 query heads, 8 KV heads (G = 4), D = 128, bf16; decode of the token at position ctx.
    Hq, D, G = 32, 128, 4
    q = rng.uniform(-1, 1, (1, Hq, D)).astype(np.float32)
    full_ms = {}
    for ctx in (16384, 131072):
        store = PagedStore(duo, rng, ctx + 1, 8)
        full_ms[ctx] = decode_ms(duo, store, q, G, range(8), ctx, reps=reps)
        gbs = store.bytes / full_ms[ctx] / 1e6
        emit(rows, (f"decode, full layer (8 KV heads), {ctx // 1024}K", f"{1e3 * full_ms[ctx]:8.1f} us {gbs:7.0f} GB/s",
                     of_copy(gbs)))
        store.free()
    # int8 / int4 caches of the same layer: time against bf16's, beside the byte ratio (decode reads every byte once)
    for dtype, ctxs in (("int4", (16384, 131072)), ("int8", (131072,))):
        for ctx in ctxs:
            store = PagedStore(duo, rng, ctx + 1, 8, dtype=dtype)
            ms = decode_ms(duo, store, q, G, range(8), ctx, reps=reps)
            gbs = store.bytes / ms / 1e6
            ratio = head_bytes(dtype, D) / head_bytes("bf16", D)
            emit(rows, (f"decode, full layer {dtype}, {ctx // 1024}K", f"{1e3 * ms:8.1f} us {gbs:7.0f} GB/s",
                         f"{ms / full_ms[ctx]:4.2f}x bf16 time; bytes {ratio:4.2f}x ({ms / full_ms[ctx] / ratio:4.2f}x of that)"))
            store.free()
    ctx = 131072
    store = PagedStore(duo, rng, ctx + 1, 1)
    ms = decode_ms(duo, store, q, G, [0], ctx, reps=reps)
    gbs = store.bytes / ms / 1e6
    emit(rows, (f"decode, 1 retrieval KV head, {ctx // 1024}K", f"{1e3 * ms:8.1f} us {gbs:7.0f} GB/s", of_copy(gbs)))
    store.free()

    # Duo layer at 128K, r = 0.5: KV heads 0-3 retrieval (every token), 4-7 streaming (S + R + 1 keys, window mask).
    sink, recent = 64, 256
    ret = PagedStore(duo, rng, ctx + 1, 4)
    ret_ms = decode_ms(duo, ret, q, G, range(4), ctx, reps=reps)
    ring = PagedStore(duo, rng, sink + recent + 1, 4)  # one page: rows hold positions 0..63 and ctx-256..ctx
    ring.segments[0]["positions"] = np.concatenate([np.arange(sink), np.arange(ctx - recent, ctx + 1)]).astype(np.int32)
    str_ms = decode_ms(duo, ring, q, G, range(4, 8), ctx, window=(sink, recent), reps=reps)
    byte_ratio = 2 * (ctx + 1) * 8 * D * 2 / (ret.bytes + ring.bytes)
    ret.free()
    ring.free()
    emit(rows, ("decode, Duo layer 128K (4 retrieval + 4 streaming)", f"{1e3 * (ret_ms + str_ms):8.1f} us",
                 f"{full_ms[ctx] / (ret_ms + str_ms):4.2f}x faster than full; byte ratio {byte_ratio:4.2f}x"))

    for T in ((8192,) if quick else (8192, 16384)):
        flops = 2 * Hq * D * T * T  # causal: half of 4 * T^2 * D per query head
        kv = PagedStore(duo, rng, T, 8, page=T)
        qT = rng.uniform(-1, 1, (T, Hq, D)).astype(np.float32)
        out = np.zeros_like(qT)
        idx = np.arange(8, dtype=np.int32)

        def once_on(segments):
            def once():
                duo.attend(qT, G, idx, idx, segments, 0, None, 0, out, None)
                return duo.device_ms()
            return once
        ms = median_ms(once_on(kv.segments), 3 if quick else 10)
        kv.free()
        emit(rows, (f"prefill causal {T // 1024}K, duo (bf16, tensor cores)", f"{flops / ms / 1e9:8.1f} TFLOP/s",
                     f"{ms:7.2f} ms"))
        if T == 8192:  # int4 records dequantized into the f16 stages of the same kernel
            kv = PagedStore(duo, rng, T, 8, page=T, dtype="int4")
            ms4 = median_ms(once_on(kv.segments), 3 if quick else 10)
            kv.free()
            emit(rows, (f"prefill causal {T // 1024}K, duo (int4, tensor cores)", f"{flops / ms4 / 1e9:8.1f} TFLOP/s",
                         f"{ms4:7.2f} ms ({ms4 / ms:4.2f}x bf16)"))
        for name, res in sdpa(torch, T, Hq, 8, D, 3 if quick else 10):
            ok = isinstance(res, float)
            emit(rows, (f"prefill causal {T // 1024}K, torch SDPA {name}",
                         f"{flops / res / 1e9:8.1f} TFLOP/s" if ok else "n/a", f"{res:7.2f} ms" if ok else res))
    return rows


def torch_ms(torch, fn, reps):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def sdpa(torch, T, Hq, Hkv, D, reps):
    if torch is None:
        return [("(all backends)", "skipped: PyTorch with CUDA not available")]
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F
    q = torch.randn(1, Hq, T, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, Hkv, T, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, Hkv, T, D, device="cuda", dtype=torch.bfloat16)
    ke, ve = k.repeat_interleave(Hq // Hkv, dim=1), v.repeat_interleave(Hq // Hkv, dim=1)
    results = []
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                          ("math", SDPBackend.MATH)):
        try:
            with sdpa_kernel(backend):
                results.append((name, torch_ms(torch, lambda: F.scaled_dot_product_attention(q, ke, ve, is_causal=True), reps)))
        except RuntimeError as e:  # a backend that does not take these shapes on this GPU
            results.append((name, f"n/a: {str(e).splitlines()[0][:60]}"))
        torch.cuda.empty_cache()
    return results


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=os.environ.get("DUO_CUDA_LIB", str(DEFAULT_LIB)))
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a smaller grid and fewer repetitions")
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--no-conformance", action="store_true")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # every line as it is printed, also into a pipe or a log file

    try:
        duo = Duo(args.lib)
    except (OSError, DuoError) as e:
        print(f"gpu-check: cannot load {args.lib}: {e} (build it: bash cuda/build.sh)")
        return 2
    n = duo.device_count()
    if n <= 0:
        print(f"gpu-check: {args.lib} loads (C API version {C['DUO_API_VERSION']}), "
              f"but there is no CUDA device ({duo.error() if n < 0 else 'cudaGetDeviceCount found none'})")
        return 2
    try:
        duo.init(args.device)
    except DuoError as e:
        print(f"gpu-check: duo_init({args.device}) failed: {e}")
        return 2

    started = time.time()
    summary, failed = [], False
    if not args.no_conformance:
        rows, failures = conformance(duo, args.quick)
        failed = bool(failures)
        summary.append(("conformance", f"{sum(r[3] for r in rows)} attends", f"{len(failures)} failed"))
        for dtype, D, G, count, worst in rows:
            summary.append((f"  {dtype:4s} D={D:3d} G={G}", f"{count:4d} attends",
                            f"worst error / tolerance {worst:6.3f}"))
    if not args.no_bench:
        try:
            import torch
            torch = torch if torch.cuda.is_available() else None
        except ImportError:
            torch = None
        summary += benchmarks(duo, torch, args.quick)
    mem = duo.memory()
    print(f"\n== gpu-check: {args.lib} on device {args.device} ({time.time() - started:.0f} s; "
          f"{mem[2] / 2**30:.0f} GiB device memory, {mem[0]:.0f} bytes still allocated) ==")
    for name, value, note in summary:
        print(f"{name:58s} {value:28s} {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
