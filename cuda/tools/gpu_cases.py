#!/usr/bin/env python3
"""Attention cases beyond gpu_check.py's grid, for the GPU machine (cuda/gpu-check.sh) or the emulation build: the
twins of test/cuda-cases.test.ts (non-finite values in masked key rows, rows that see no key while others see many
tiles, f16 + bf16 + f32 segments in one call, segment cuts around a 64-row query tile's last token, a random fuzz),
and, with --big-offsets, element offsets past 2^31 in one KV buffer (4.3 GB: GPU only).

Checked against gpu_check.py's float64 reference: f32 KV |a - b| <= 1e-5 + 1e-4 |b|, f16 / bf16 KV |a - b| <= 2e-2;
lse within 1e-4 / 1e-2; where the reference is not finite the output must not be finite either. Every failure is
printed when it happens; the last line counts them.

Usage: python3 cuda/tools/gpu_cases.py [--lib PATH] [--fuzz N] [--seed S] [--big-offsets]
Exit status: 0 all passed, 1 a case failed, 2 no device / library.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_check as gc  # noqa: E402

ROW_START = 3


def reference(q, K, V, pos, qpos0, window):
    """gpu_check's float64 attention, with masked keys skipped as src/backend/reference.ts does: a non-finite V
    value reaches only the rows that see its key (there p x Inf, never 0 x Inf)."""
    finite = np.isfinite(V)
    out, lse = gc.attention(q, K, np.where(finite, V, 0), pos, qpos0, window)
    t = qpos0 + np.arange(q.shape[0])
    vis = pos[None, :] <= t[:, None]
    if window:
        vis &= (pos[None, :] < window[0]) | (pos[None, :] >= t[:, None] - window[1])
    for n, d in np.argwhere(~finite):
        out[vis[:, n], :, d] += V[n, d]
    return out, lse


def run(duo, label, q, G, segs, qpos0, window, splits, fails):
    """segs: [(dtype, positions [N], K [N, KVH, D], V [N, KVH, D])]; every KV head h of q's Hq = KVH * G is covered."""
    T, Hq, D = q.shape
    KVH = Hq // G
    heads = np.arange(KVH, dtype=np.int32)
    segments, handles = [], []
    try:
        for dtype, pos, K, V in segs:
            N = len(pos)
            rows = np.arange(ROW_START, ROW_START + N, dtype=np.int32)
            kb, vb = (duo.alloc((ROW_START + N) * KVH * D * gc.ELEM[dtype]) for _ in range(2))
            handles += [kb, vb]
            duo.append(kb, dtype, KVH, K, heads, rows)
            duo.append(vb, dtype, KVH, V, heads, rows)
            consecutive = N > 0 and np.array_equal(pos, pos[0] + np.arange(N))
            segments.append(dict(k=kb, v=vb, dtype=dtype, row_heads=KVH, row_start=ROW_START, row_count=N,
                                 positions=int(pos[0]) if consecutive else np.asarray(pos, np.int32)))
        out = np.full((T, Hq, D), np.nan, np.float32)
        lse = np.full((T, Hq), np.nan, np.float32)
        duo.attend(q, G, heads, heads, segments, qpos0, window, splits, out, lse)
    except gc.DuoError as e:
        fails.append(label)
        print(f"FAIL {label}: {e}")
        return
    finally:
        for h in handles:
            duo.free(h)
    pos = np.concatenate([p for _, p, _, _ in segs])
    K = np.concatenate([gc.rounded(k, d) for d, _, k, _ in segs])
    V = np.concatenate([gc.rounded(v, d) for d, _, _, v in segs])
    low = any(d != "f32" for d, _, _, _ in segs)
    for h in range(KVH):
        with np.errstate(invalid="ignore", over="ignore"):
            ref, ref_lse = reference(q[:, h * G:(h + 1) * G].astype(np.float64), K[:, h], V[:, h], pos, qpos0, window)
        got, gl = out[:, h * G:(h + 1) * G].astype(np.float64), lse[:, h * G:(h + 1) * G]
        fin = np.isfinite(ref)
        tol = 2e-2 if low else 1e-5 + 1e-4 * np.abs(np.where(fin, ref, 0))
        bad = np.where(fin, ~(np.abs(got - np.where(fin, ref, 0)) <= tol), np.isfinite(got))
        lfin = np.isfinite(ref_lse)
        lbad = np.where(lfin, ~(np.abs(gl - np.where(lfin, ref_lse, 0)) <= (1e-2 if low else 1e-4)), gl != ref_lse)
        if bad.any() or lbad.any():
            i = tuple(int(x) for x in np.argwhere(bad)[0]) if bad.any() else None
            what = f"out{i}: {got[i]} vs {ref[i]}" if i else "lse differs"
            fails.append(label)
            print(f"FAIL {label}: KV head {h}: {what}")
            return


def cases(duo, fuzz, seed, fails):
    rng = np.random.default_rng(seed)

    def rnd(*shape, s=1.0):
        return (rng.uniform(-1, 1, shape) * s).astype(np.float32)

    def keys(dtype, pos, KVH, D):
        return (dtype, np.asarray(pos), rnd(len(pos), KVH, D), rnd(len(pos), KVH, D))

    # non-finite V in key rows masked for some or all query rows (future key, causal diagonal, window gap)
    for dtype, T, G, window, hot in (("f32", 1, 4, None, 105), ("f32", 4, 1, None, 101), ("f16", 1, 4, None, 109),
                                      ("f16", 40, 4, None, 145), ("bf16", 40, 4, None, 120),
                                      ("f16", 40, 1, (4, 8), 18), ("bf16", 3, 2, (4, 8), 18)):
        KVH, D, ctx = 2, 64, 100
        k = keys(dtype, np.arange(ctx + T + 10), KVH, D)
        k[3][hot] = 1e6 if dtype == "f16" else np.inf
        for splits in (1, 0):
            run(duo, f"non-finite masked V {dtype} T={T} G={G} window={window} splits={splits}",
                rnd(T, KVH * G, D, s=3), G, [k], ctx, window, splits, fails)
    # rows that see no key (keys at 10..209, queries from 0) while others see many tiles
    for dtype in ("f32", "f16", "bf16"):
        for T, G in ((20, 1), (20, 4), (300, 1)):
            for splits in (1, 3, 0):
                run(duo, f"empty rows {dtype} T={T} G={G} splits={splits}", rnd(T, 2 * G, 64, s=3), G,
                    [keys(dtype, np.arange(10, 210), 2, 64)], 0, None, splits, fails)
    # f16 + bf16 + f32 segments in one call
    for T in (1, 40):
        for splits in (1, 3, 0):
            segs = [keys("f16", np.arange(0, 300), 2, 128), keys("bf16", np.arange(300, 700), 2, 128),
                    keys("f32", np.arange(700, 760), 2, 128)]
            run(duo, f"mixed dtypes T={T} splits={splits}", rnd(T, 8, 128, s=3), 4, segs, 760 - T + (T == 1), None,
                splits, fails)
    # segments cut around the last token of a 64-row query tile
    for dtype in ("f16", "bf16", "f32"):
        for G in (1, 4):
            for cut in (63, 64, 15):
                segs = [keys(dtype, np.arange(0, cut), 1, 64), keys(dtype, np.arange(cut, 128), 1, 64)]
                run(duo, f"tile cut {dtype} G={G} cut={cut}", rnd(128, G, 64, s=3), G, segs, 0, None, 1, fails)
    # random configurations
    fz = np.random.default_rng(seed + 1)
    for i in range(fuzz):
        dtype = ["f32", "f16", "bf16"][fz.integers(3)]
        D, G, KVH = [64, 128][fz.integers(2)], [1, 2, 4, 8, 16][fz.integers(5)], int(fz.integers(1, 3))
        ctx, T = int(fz.integers(0, 400)), int(fz.integers(1, 90))
        P = ctx + T
        window = None if fz.integers(2) else (int(fz.integers(0, 40)), int(fz.integers(0, 120)))
        splits = int([0, 1, 2, 5][fz.integers(4)])
        cuts = sorted(set(int(c) for c in fz.integers(1, P, int(fz.integers(0, 5))))) if P > 1 else []
        bounds, segs = [0] + cuts + [P], []
        for a, b in zip(bounds[:-1], bounds[1:]):
            pos = np.arange(a, b)
            segs.append(keys(dtype, fz.permutation(pos) if fz.integers(3) == 0 else pos, KVH, D))
        run(duo, f"fuzz {i}: {dtype} D={D} G={G} KVH={KVH} ctx={ctx} T={T} window={window} splits={splits} "
            f"cuts={cuts}", rnd(T, KVH * G, D, s=3), G, segs, ctx, window, splits, fails)


def big_offsets(duo, fails):
    """One bf16 buffer of 262164 rows x 64 heads x 128: the last head's elements sit past 2^31."""
    H, D, R0, N = 64, 128, 262100, 64
    buf = duo.alloc((R0 + N) * H * D * 2)
    try:
        rng = np.random.default_rng(3)
        src = rng.uniform(-1, 1, (N, H, D)).astype(np.float32)
        duo.append(buf, "bf16", H, src, np.arange(H, dtype=np.int32), np.arange(R0, R0 + N, dtype=np.int32))
        print(f"big offsets: largest element index {((R0 + N - 1) * H + H - 1) * D} (2^31 = {2 ** 31})")
        K = gc.rounded(src[:, H - 1], "bf16")
        for T, G in ((1, 4), (64, 4)):
            q = rng.uniform(-3, 3, (T, G, D)).astype(np.float32)
            out = np.full((T, G, D), np.nan, np.float32)
            seg = [dict(k=buf, v=buf, dtype="bf16", row_heads=H, row_start=R0, row_count=N, positions=0)]
            duo.attend(q, G, np.array([0], np.int32), np.array([H - 1], np.int32), seg, N - T, None, 0, out, None)
            ref, _ = gc.attention(q.astype(np.float64), K, K, np.arange(N), N - T, None)
            err = float(np.abs(out - ref).max())
            ok = err <= 2e-2
            print(f"{'ok' if ok else 'FAIL'} big offsets T={T} G={G}: max error {err:.3g}")
            if not ok:
                fails.append(f"big offsets T={T}")
        tail = duo.read(buf, (R0 + N - 1) * H * D * 2, H * D * 2).view(np.uint16)
        if not np.array_equal(tail, gc.round_bits(src[-1], "bf16").ravel()):
            fails.append("big offsets: last row bytes")
            print("FAIL big offsets: the last row's bytes differ")
    finally:
        duo.free(buf)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=os.environ.get("DUO_CUDA_LIB", str(gc.DEFAULT_LIB)))
    ap.add_argument("--fuzz", type=int, default=60, help="random configurations (default 60)")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--big-offsets", action="store_true", help="also offsets past 2^31 (allocates 4.3 GB)")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    np.seterr(over="ignore", invalid="ignore")  # the non-finite cases overflow on purpose (f16 rounding, Inf - Inf)
    try:
        duo = gc.Duo(args.lib)
        duo.init(0)
    except (OSError, gc.DuoError) as e:
        print(f"gpu_cases: cannot use {args.lib}: {e}")
        return 2
    fails = []
    cases(duo, args.fuzz, args.seed, fails)
    if args.big_offsets:
        big_offsets(duo, fails)
    print(f"gpu_cases: {len(fails)} failures")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
