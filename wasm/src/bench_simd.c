/* Machine ceilings for bench/wasm-kernels.ts (twin: bench_scalar.c). */
#include "duo.h"
#include "simd.h"

/* Streaming read: 64 bytes per step into 4 independent sums. Where the decode kernels ask for lines ahead of their
 * reads (the native x86 sets: attend_simd.c PREFETCH_AHEAD), so does the ceiling, or decode from DRAM would outrun
 * it: one core streamed 256 MiB at 12.9 GB/s without, and decoded one layer at 16.1 GB/s with (shared VM). */
float duo_bench_read(const void *ptr, uint32_t bytes) {
  const float *p = (const float *)ptr;
  const uint32_t n = bytes / 4;
  VF a = VF_ZERO, b = VF_ZERO, c = VF_ZERO, d = VF_ZERO;
  for (uint32_t i = 0; i < n; i += 16) {
#ifdef VW_PREFETCH
    VW_PREFETCH(p + i + 512); /* 2 KiB ahead */
#endif
    a = VF_ADD(a, VF_LOAD(p + i)); b = VF_ADD(b, VF_LOAD(p + i + 4));
    c = VF_ADD(c, VF_LOAD(p + i + 8)); d = VF_ADD(d, VF_LOAD(p + i + 12));
  }
  return vf_hsum(VF_ADD(VF_ADD(a, b), VF_ADD(c, d)));
}

/* Multiply-add throughput, register resident: 12 independent chains x <- x * m + c (12 chains cover the latency of a
 * dependent mul + add on two pipes each); the same mul-then-add pair the attention kernels issue. */
float duo_bench_mad(int32_t iters) {
  VF m = VF_SPLAT(0.999f), c = VF_SPLAT(0.001f);
  VF x0 = VF_SPLAT(0.1f), x1 = VF_SPLAT(0.2f), x2 = VF_SPLAT(0.3f), x3 = VF_SPLAT(0.4f), x4 = VF_SPLAT(0.5f);
  VF x5 = VF_SPLAT(0.6f), x6 = VF_SPLAT(0.7f), x7 = VF_SPLAT(0.8f), x8 = VF_SPLAT(0.9f), x9 = VF_SPLAT(1.1f);
  VF x10 = VF_SPLAT(1.2f), x11 = VF_SPLAT(1.3f);
  for (int i = 0; i < iters; i++) {
    x0 = VF_MAD(c, x0, m); x1 = VF_MAD(c, x1, m); x2 = VF_MAD(c, x2, m); x3 = VF_MAD(c, x3, m);
    x4 = VF_MAD(c, x4, m); x5 = VF_MAD(c, x5, m); x6 = VF_MAD(c, x6, m); x7 = VF_MAD(c, x7, m);
    x8 = VF_MAD(c, x8, m); x9 = VF_MAD(c, x9, m); x10 = VF_MAD(c, x10, m); x11 = VF_MAD(c, x11, m);
  }
  VF s = VF_ADD(VF_ADD(VF_ADD(x0, x1), VF_ADD(x2, x3)), VF_ADD(VF_ADD(x4, x5), VF_ADD(x6, x7)));
  return vf_hsum(VF_ADD(s, VF_ADD(VF_ADD(x8, x9), VF_ADD(x10, x11))));
}
