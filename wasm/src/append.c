/* duo_append: copy token rows into a KV buffer (plain bulk copies for f32, k_convert for f16/bf16). */
#include "duo.h"
#include "kernels.h"

int32_t duo_append(uint32_t dst, int32_t dtype, int32_t row_heads, int32_t head_dim, uint32_t src, int32_t src_heads,
                   uint32_t heads, uint32_t rows, int32_t n) {
  if (dtype < DUO_F32 || dtype > DUO_BF16 || row_heads < 0 || head_dim <= 0 || head_dim % 4 || src_heads < 0 || n < 0)
    return DUO_E_ARG;
  const int32_t *hs = (const int32_t *)(uintptr_t)heads, *rs = (const int32_t *)(uintptr_t)rows;
  const uint32_t es = dtype == DUO_F32 ? 4 : 2, D = (uint32_t)head_dim;
  int32_t nonfinite = 0;
  for (int32_t t = 0; t < n; t++) {
    if (rs[t] < 0) continue;
    for (int32_t j = 0; j < row_heads;) {
      int32_t len = 1; /* a run of consecutive source heads is one contiguous copy */
      while (j + len < row_heads && hs[j + len] == hs[j] + len) len++;
      uint8_t *d = (uint8_t *)(uintptr_t)(dst + ((uint32_t)rs[t] * row_heads + j) * D * es);
      const float *s = (const float *)(uintptr_t)(src + ((uint32_t)t * src_heads + hs[j]) * D * 4);
      if (dtype == DUO_F32) {
        __builtin_memcpy(d, s, len * D * 4);
        nonfinite += k_nonfinite(s, (int)(len * D));
      } else nonfinite += k_convert(d, s, dtype, (int)(len * D));
      j += len;
    }
  }
  return nonfinite;
}
