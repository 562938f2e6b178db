#!/usr/bin/env python3
"""GPU check of the model kernels of libduo_cuda.so (duo_upload, duo_model_*), for machines without Node (run by
cuda/gpu-check.sh; the TypeScript twin is test/cuda-model-kernels.test.ts, which runs on the emulation build).

Drives the C API of cuda/include/duo.h through ctypes (enum values read from the header) and
  1. conformance against float64 numpy on random data, outputs NaN-poisoned inside a larger buffer: matmul (f32, f16,
     bf16, q8_0 weights; q4_0 / q4_k / q6_k as random blocks; decode and prefill shapes, x aligned and not) within (max(cols/32, 8 cols/256) + 34) u
     sum|x w| per element (u = 2^-24, the kernel's f32 summation bound), embed exact, rmsnorm within 8u relative,
     RoPE within 4u (|a| + |b|), SwiGLU within 1e-6 relative (+1e-30), add exact, argmax exact;
  1b. device tensors (duo.h API 3): duo_append from a device src writes the host src's bytes, and duo_attend with
     device q / out / lse (at offsets inside NaN-poisoned buffers, no wait before the read) gives the host call's
     outputs bit for bit, decode and prefill shapes, split-KV on;
  2. with --bench: the weight bytes per second of decode GEMVs (one token) at Llama-3-8B shapes in bf16, and of a
     512-token prefill matmul, host wall time over repeated calls ended by a read (compare with the copy bandwidth
     gpu_check.py prints in the same run).

Usage: python3 cuda/tools/model_check.py [--lib PATH] [--device N] [--quick] [--bench]
  --quick: small shapes only (the emulation build: --lib cuda/build/libduo_cuda_emu.so)
Exit status: 0 all checks passed, 1 a check failed, 2 no CUDA device / library not loadable.
"""
import argparse
import ctypes
import re
import sys
import time
from pathlib import Path

import numpy as np

CUDA_DIR = Path(__file__).resolve().parent.parent
HEADER = CUDA_DIR / "include" / "duo.h"
C = {m.group(1): int(m.group(2)) for m in re.finditer(r"\b(DUO_[A-Z0-9_]+)\s*=\s*(-?\d+)", HEADER.read_text())}
WEIGHT = {name: C[f"DUO_W_{name.upper()}"] for name in ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k"]}
BLOCK = {"q8_0": 32, "q4_0": 32, "q4_k": 256, "q6_k": 256}  # elements per block of the block types
U = 2.0**-24
PAD = 5  # poisoned f32 elements on each side of every output

I32, U32, U64, F32, P = ctypes.c_int32, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_float, ctypes.c_void_p
SIGNATURES = {  # as in duo.h
    "duo_api_version": ([], I32),
    "duo_last_error": ([], ctypes.c_char_p),
    "duo_device_count": ([], I32),
    "duo_init": ([I32], I32),
    "duo_alloc": ([U64, P], I32),
    "duo_free": ([U32], I32),
    "duo_read": ([U32, U64, U64, P], I32),
    "duo_upload": ([U32, U64, U64, P], I32),
    "duo_model_embed": ([U32, U64, P, I32, U32, I32, I32, I32], I32),
    "duo_model_matmul": ([U32, U64, U32, U64, U32, I32, U32, I32, I32, I32], I32),
    "duo_model_rmsnorm": ([U32, U64, U32, U64, U32, I32, I32, F32], I32),
    "duo_model_rope": ([U32, U64, P, P, I32, I32, I32], I32),
    "duo_model_swiglu": ([U32, U64, U32, U64, U32, U64, U64], I32),
    "duo_model_add": ([U32, U64, U32, U64, U64], I32),
    "duo_model_argmax": ([U32, U64, I32, P], I32),
    "duo_append": ([P, P, P, P], I32),
    "duo_attend": ([P, P, P, P, P, P, P, P], I32),
}


class Lib:
    def __init__(self, path, device):
        self.lib = ctypes.CDLL(str(path))
        for name, (args, res) in SIGNATURES.items():
            f = getattr(self.lib, name)
            f.argtypes, f.restype = args, res
        if self.lib.duo_api_version() != C["DUO_API_VERSION"]:
            raise RuntimeError(f"{path}: API version {self.lib.duo_api_version()}, duo.h says {C['DUO_API_VERSION']}")
        self.ok(self.lib.duo_init(device))
        self.held = []

    def ok(self, status):
        if status != 0:
            raise RuntimeError(f"{self.lib.duo_last_error().decode()} (status {status})")

    def call(self, name, *args):
        self.ok(getattr(self.lib, name)(*args))

    def buffer(self, host):
        """A device buffer holding the bytes of numpy array `host`; its handle."""
        h = ctypes.c_uint32()
        self.ok(self.lib.duo_alloc(max(host.nbytes, 4), ctypes.byref(h)))
        self.held.append(h.value)
        self.ok(self.lib.duo_upload(h.value, 0, host.nbytes, host.ctypes.data))
        return h.value

    def poisoned(self, n):
        """(handle, offset) of n f32 elements at PAD inside a NaN-filled buffer."""
        return self.buffer(np.full(n + 2 * PAD, np.nan, np.float32)), PAD

    def read(self, handle, offset, n, what):
        """The n f32 elements at offset; checks that the padding around a poisoned output is still NaN."""
        out = np.empty(n + 2 * PAD, np.float32)
        self.ok(self.lib.duo_read(handle, 4 * (offset - PAD), out.nbytes, out.ctypes.data))
        if not (np.isnan(out[:PAD]).all() and np.isnan(out[-PAD:]).all()):
            raise AssertionError(f"{what}: wrote outside its output")
        return out[PAD:-PAD]

    def free_all(self):
        for h in self.held:
            self.lib.duo_free(h)
        self.held = []


def to_bf16_bits(x):
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def weight_bytes(w, dtype):
    """(raw bytes as in a model file, the values the kernels compute with as float64) of f32 matrix w."""
    if dtype == "f32":
        return w.astype(np.float32), w.astype(np.float64)
    if dtype == "f16":
        h = w.astype(np.float16)
        return h, h.astype(np.float64)
    if dtype == "bf16":
        b = to_bf16_bits(w)
        return b, (b.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if dtype == "q8_0":  # f16 scale, then 32 int8
        blocks = w.astype(np.float32).reshape(-1, 32)
        d = (np.abs(blocks).max(axis=1) / 127).astype(np.float16)
        safe = np.where(d == 0, 1, d.astype(np.float32))
        q = np.clip(np.rint(blocks / safe[:, None]), -127, 127).astype(np.int8)
        raw = np.concatenate([d.view(np.uint8).reshape(-1, 2), q.view(np.uint8)], axis=1)
        return raw, (q.astype(np.float64) * d.astype(np.float64)[:, None]).reshape(w.shape)
    return random_blocks(dtype, w.size, w.shape)


def f16(raw, at):
    """The f16 at byte `at` of every block row of raw, as float32."""
    return raw[:, at:at + 2].copy().view(np.float16)[:, 0].astype(np.float32)


def random_blocks(dtype, n, shape):
    """Random q4_0 / q4_k / q6_k blocks for n weights (random bytes, finite f16 scales) and their values, decoded as
    src/model/tensor-types.ts and kquants.ts do (f32 rounding at each step)."""
    rng = np.random.default_rng(n)
    size = {"q4_0": 18, "q4_k": 144, "q6_k": 210}[dtype]
    raw = rng.integers(0, 256, (n // BLOCK[dtype], size), dtype=np.uint8)
    scale_at = {"q4_0": [0], "q4_k": [0, 2], "q6_k": [208]}[dtype]
    for at, lo, hi in zip(scale_at, [0.001, -0.01], [0.01, 0]):
        raw[:, at:at + 2] = rng.uniform(lo, hi, len(raw)).astype(np.float16).view(np.uint8).reshape(-1, 2)
    f32 = np.float32
    if dtype == "q4_0":
        qs = raw[:, 2:].astype(np.int32)
        vals = np.concatenate([qs & 15, qs >> 4], axis=1).astype(f32) - 8
        vals = vals * f16(raw, 0)[:, None]
    elif dtype == "q4_k":
        d, dmin, s = f16(raw, 0), f16(raw, 2), raw[:, 4:16].astype(np.int32)
        parts = []
        for j in range(8):
            sc = s[:, j] & 63 if j < 4 else (s[:, j + 4] & 15) | ((s[:, j - 4] >> 6) << 4)
            mn = s[:, j + 4] & 63 if j < 4 else (s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4)
            d1, m1 = (d * sc.astype(f32)).astype(f32), (dmin * mn.astype(f32)).astype(f32)
            q = (raw[:, 16 + 32 * (j >> 1):48 + 32 * (j >> 1)].astype(np.int32) >> (4 * (j & 1))) & 15
            parts.append(((d1[:, None] * q.astype(f32)).astype(f32) - m1[:, None]).astype(f32))
        vals = np.concatenate(parts, axis=1)
    else:
        d, sc = f16(raw, 208), raw[:, 192:208].view(np.int8).astype(f32)
        vals = np.empty((len(raw), 256), f32)
        for h in range(2):
            for g in range(4):
                for l in range(32):
                    low = (raw[:, 64 * h + l + 32 * (g & 1)].astype(np.int32) >> (4 * (g >> 1))) & 15
                    high = (raw[:, 128 + 32 * h + l].astype(np.int32) >> (2 * g)) & 3
                    ds = (d * sc[:, 8 * h + l // 16 + 2 * g]).astype(f32)
                    vals[:, 128 * h + 32 * g + l] = ds * ((low | (high << 4)) - 32).astype(f32)
    return raw, vals.astype(np.float64).reshape(shape)


def check(failures, ok, what):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        failures.append(what)


def conformance(lib, quick, failures):
    rng = np.random.default_rng(1)
    rand = lambda *shape, scale=1.0: (rng.uniform(-scale, scale, shape)).astype(np.float32)
    shapes = [(1, 64, 40, 0), (11, 72, 33, 1), (3, 40, 9, 0), (2, 256, 7, 1)]
    if not quick:
        shapes += [(1, 4096, 4096, 0), (1, 4096, 1000, 3), (64, 4096, 512, 0), (9, 14336, 64, 0)]
    for dtype in WEIGHT:
        for T, cols, rows, xoff in shapes:
            if cols % BLOCK.get(dtype, 1):
                continue
            x, w, b = rand(T, cols), rand(rows, cols), rand(rows)
            raw, wv = weight_bytes(w, dtype)
            hx = lib.buffer(np.concatenate([np.zeros(xoff, np.float32), x.ravel()]))
            hw, hb = lib.buffer(raw), lib.buffer(b)
            hy, yoff = lib.poisoned(T * rows)
            lib.call("duo_model_matmul", hy, yoff, hx, xoff, hw, WEIGHT[dtype], hb, T, cols, rows)
            got = lib.read(hy, yoff, T * rows, "matmul").reshape(T, rows).astype(np.float64)
            x64 = x.astype(np.float64)
            want = x64 @ wv.T + b
            mag = np.abs(x64) @ np.abs(wv).T + np.abs(b)
            lanes = max(-(-cols // 32), 8 * -(-cols // 256))
            err = np.abs(got - want) / ((lanes + 34) * U * mag)
            check(failures, bool(np.all(err <= 1)), f"matmul {dtype} T={T} cols={cols} rows={rows} x at +{xoff} (worst {err.max():.2f} of the bound)")
            lib.free_all()
    for dtype in WEIGHT:  # embed: exact
        rows, cols, ids = 50, 256, np.array([3, 0, 49, 3], np.int32)
        raw, wv = weight_bytes(rand(rows, cols, scale=3), dtype)
        hy, yoff = lib.poisoned(len(ids) * cols)
        lib.call("duo_model_embed", hy, yoff, ids.ctypes.data, len(ids), lib.buffer(raw), rows, cols, WEIGHT[dtype])
        got = lib.read(hy, yoff, len(ids) * cols, "embed").reshape(len(ids), cols)
        check(failures, bool(np.array_equal(got.astype(np.float64), wv[ids])), f"embed {dtype}")
        lib.free_all()
    for T, n in [(2, 300), (1, 4096)]:  # rmsnorm
        x, w = rand(T, n, scale=5), rand(n, scale=2)
        hy, yoff = lib.poisoned(T * n)
        lib.call("duo_model_rmsnorm", hy, yoff, lib.buffer(x), 0, lib.buffer(w), T, n, 1e-5)
        got = lib.read(hy, yoff, T * n, "rmsnorm").reshape(T, n).astype(np.float64)
        x64 = x.astype(np.float64)
        want = x64 / np.sqrt((x64**2).mean(axis=1, keepdims=True) + 1e-5) * w
        check(failures, bool(np.all(np.abs(got - want) <= 8 * U * np.abs(want))), f"rmsnorm T={T} n={n}")
        lib.free_all()
    T, heads, D = 5, 4, 128  # rope
    half = D // 2
    ang = (np.arange(T)[:, None] + 1000) * (500000.0 ** (-np.arange(half) / half))[None, :]
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    x = rand(T, heads, D, scale=4)
    hx, xoff = lib.poisoned(x.size)
    lib.ok(lib.lib.duo_upload(hx, 4 * xoff, x.nbytes, x.ctypes.data))
    lib.call("duo_model_rope", hx, xoff, cos.ctypes.data, sin.ctypes.data, T, heads, D)
    got = lib.read(hx, xoff, x.size, "rope").reshape(T, heads, D).astype(np.float64)
    a, b = x[..., :half].astype(np.float64), x[..., half:].astype(np.float64)
    c, s = cos.astype(np.float64)[:, None, :], sin.astype(np.float64)[:, None, :]
    tol = 4 * U * (np.abs(a) + np.abs(b))
    ok = np.all(np.abs(got[..., :half] - (a * c - b * s)) <= tol) and np.all(np.abs(got[..., half:] - (b * c + a * s)) <= tol)
    check(failures, bool(ok), f"rope T={T} heads={heads} D={D}")
    lib.free_all()
    n = 5000  # swiglu, add, argmax
    g, u = rand(n, scale=12), rand(n, scale=3)
    g[:4] = [0, -100, 100, -88]
    hy, yoff = lib.poisoned(n)
    lib.call("duo_model_swiglu", hy, yoff, lib.buffer(g), 0, lib.buffer(u), 0, n)
    got = lib.read(hy, yoff, n, "swiglu").astype(np.float64)
    g64 = g.astype(np.float64)
    with np.errstate(over="ignore"):
        want = g64 / (1 + np.exp(-g64)) * u
    check(failures, bool(np.all(np.abs(got - want) <= 1e-6 * np.abs(want) + 1e-30)), f"swiglu n={n}")
    y0, x0 = rand(n, scale=100), rand(n, scale=100)
    hy = lib.buffer(y0)
    lib.call("duo_model_add", hy, 0, lib.buffer(x0), 0, n)
    out = np.empty(n, np.float32)
    lib.ok(lib.lib.duo_read(hy, 0, out.nbytes, out.ctypes.data))
    check(failures, bool(np.array_equal(out, y0 + x0)), f"add n={n}")
    lib.free_all()
    for what, v in [("random 128256", rand(128256)), ("ties", np.array([1, 5, 2, 5], np.float32)),
                    ("NaN", np.array([np.nan, 1, np.nan, 3, 2], np.float32)), ("all NaN", np.full(300, np.nan, np.float32))]:
        want = 0 if np.isnan(v).all() else int(np.nanargmax(v))
        out = ctypes.c_int32(-1)
        lib.call("duo_model_argmax", lib.buffer(v), 0, len(v), ctypes.byref(out))
        check(failures, out.value == want, f"argmax {what}: {out.value} (want {want})")
        lib.free_all()


def device_tensors(lib, failures):
    rng = np.random.default_rng(2)
    D, rows, Hkv, Hq, G = 64, 200, 2, 8, 2
    i32 = lambda *v: np.array(v, np.int32)
    ptr = lambda a: None if a is None else a.ctypes.data
    k_src = rng.uniform(-1, 1, (rows, Hkv, D)).astype(np.float32)
    kv = [lib.buffer(np.zeros(rows * D, np.float32)) for _ in range(2)]  # one head per row, f32
    src_h, src_off = lib.buffer(np.concatenate([np.full(3, np.nan, np.float32), k_src.ravel()])), 3
    for i, device in enumerate([False, True]):
        p = np.zeros(C["DUO_APPEND_PARAMS"], np.int32)
        for f, v in dict(DST=kv[i], DTYPE=C["DUO_F32"], ROW_HEADS=1, HEAD_DIM=D, TOKENS=rows, SRC_HEADS=Hkv).items():
            p[C[f"DUO_APPEND_{f}"]] = v
        if device:
            p[C["DUO_APPEND_SRC_BUF"]], p[C["DUO_APPEND_SRC_OFF_LO"]] = src_h, src_off
        lib.call("duo_append", ptr(p), None if device else ptr(k_src), ptr(i32(1)), ptr(np.arange(rows, dtype=np.int32)))
    a, b = (np.empty(rows * D, np.float32) for _ in kv)
    for h, x in zip(kv, (a, b)):
        lib.call("duo_read", h, 0, x.nbytes, x.ctypes.data)
    a, b = a.view(np.uint32), b.view(np.uint32)
    check(failures, np.array_equal(a, b), "device tensors: append from a device src writes the host src's values")
    seg = i32(kv[0], kv[0], C["DUO_F32"], 1, 0, rows, 0, -1)
    for T in [1, 5, 40]:
        q = rng.uniform(-2, 2, (T, Hq, D)).astype(np.float32)
        p = np.zeros(C["DUO_ATTEND_PARAMS"], np.int32)
        for f, v in dict(TOKENS=T, NUM_HEADS=Hq, HEAD_DIM=D, GROUP=G, KV_HEADS=1, SEGMENTS=1, QPOS0=rows - T, SINK=-1,
                         RECENT=-1, SPLITS=0).items():
            p[C[f"DUO_ATTEND_{f}"]] = v
        out, lse = np.full(T * Hq * D, np.nan, np.float32), np.full(T * Hq, np.nan, np.float32)
        lib.call("duo_attend", ptr(p), ptr(q), ptr(i32(2)), ptr(i32(0)), ptr(seg), None, ptr(out), ptr(lse))
        qh, qo = lib.buffer(np.concatenate([np.zeros(7, np.float32), q.ravel()])), 7
        (oh, oo), (lh, lo) = lib.poisoned(T * Hq * D), lib.poisoned(T * Hq)
        for f, v in dict(Q_BUF=qh, Q_OFF_LO=qo, OUT_BUF=oh, OUT_OFF_LO=oo, LSE_BUF=lh, LSE_OFF_LO=lo).items():
            p[C[f"DUO_ATTEND_{f}"]] = v
        lib.call("duo_attend", ptr(p), None, ptr(i32(2)), ptr(i32(0)), ptr(seg), None, None, None)
        same = np.array_equal(lib.read(oh, oo, T * Hq * D, "out").view(np.uint32), out.view(np.uint32)) and \
            np.array_equal(lib.read(lh, lo, T * Hq, "lse").view(np.uint32), lse.view(np.uint32))
        check(failures, same, f"device tensors: attend T={T} with device q / out / lse equals the host call bit for bit")


def bench(lib):
    """Weight GB/s of bf16 matmuls at Llama-3-8B shapes: host wall time of `reps` queued calls ended by a read."""
    rng = np.random.default_rng(2)
    print("  bf16 weights, f32 activations; GB/s = weight bytes / time per call", flush=True)
    for T, cols, rows, reps in [(1, 4096, 14336, 200), (1, 14336, 4096, 200), (1, 4096, 32000, 100), (512, 4096, 4096, 10)]:
        w = rng.integers(0x3000, 0x3F80, (rows, cols), dtype=np.uint16)  # bf16 bits of values in (0, 1): cheap to make
        hw, hx = lib.buffer(w), lib.buffer(rng.uniform(-1, 1, (T, cols)).astype(np.float32))
        hy = lib.buffer(np.zeros(T * rows, np.float32))
        one = np.empty(1, np.float32)
        times = []
        for _ in range(3):
            lib.ok(lib.lib.duo_read(hy, 0, 4, one.ctypes.data))
            t0 = time.perf_counter()
            for _ in range(reps):
                lib.call("duo_model_matmul", hy, 0, hx, 0, hw, WEIGHT["bf16"], 0, T, cols, rows)
            lib.ok(lib.lib.duo_read(hy, 0, 4, one.ctypes.data))
            times.append((time.perf_counter() - t0) / reps)
        t = min(times)
        print(f"  matmul T={T:<4} {rows} x {cols}: {t * 1e6:9.1f} us  {w.nbytes / t / 1e9:7.1f} GB/s  {2 * T * rows * cols / t / 1e12:6.2f} TFLOP/s", flush=True)
        lib.free_all()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=str(CUDA_DIR / "build" / "libduo_cuda.so"))
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bench", action="store_true")
    args = ap.parse_args()
    try:
        lib = Lib(args.lib, args.device)
    except (OSError, RuntimeError) as e:
        print(f"model_check: {e}", flush=True)
        return 2
    failures = []
    print("model_check: conformance", flush=True)
    conformance(lib, args.quick, failures)
    device_tensors(lib, failures)
    if args.bench:
        print("model_check: bench", flush=True)
        bench(lib)
    print(f"model_check: {'passed' if not failures else f'{len(failures)} FAILED: ' + '; '.join(failures)}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
