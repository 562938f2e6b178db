/* Scalar twins of bench_simd.c: the same sums and the same 48 lanes of mul+add chains per step, one lane at a time. */
#include "duo.h"

float duo_bench_read(const void *ptr, uint32_t bytes) {
  const float *p = (const float *)ptr;
  const uint32_t n = bytes / 4;
  float a = 0.0f, b = 0.0f, c = 0.0f, d = 0.0f;
  for (uint32_t i = 0; i < n; i += 4) { a += p[i]; b += p[i + 1]; c += p[i + 2]; d += p[i + 3]; }
  return (a + b) + (c + d);
}

float duo_bench_mad(int32_t iters) {
  float x[48];
  for (int j = 0; j < 48; j++) x[j] = 0.1f + 0.02f * (float)j;
  for (int i = 0; i < iters; i++)
    for (int j = 0; j < 48; j++) x[j] = 0.001f + x[j] * 0.999f;
  float s = 0.0f;
  for (int j = 0; j < 48; j++) s += x[j];
  return s;
}
