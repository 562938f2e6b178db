/* duo_append: copy token rows into a KV buffer (plain bulk copies for f32, k_convert for f16/bf16, k_quantize for the
 * records of int8/int4); tiled buffers get
 * each converted row scattered into its tile (duo.h). */
#include "duo.h"
#include "kernels.h"
#include "quant.h"

/* Convert one row (D floats) into its tile, 8 elements at a time. K64: element d at +d*8; V64: 8-element runs,
 * run d/8 at +(d/8)*64*8. Returns the number of Inf/NaN values written. */
static int32_t tile_append(uint8_t *base, uint32_t at, const float *s, int32_t layout, int32_t dtype, uint32_t D) {
  const uint32_t es = dtype == DUO_F32 ? 4 : 2;
  uint8_t tmp[32];
  int32_t nonfinite = 0;
  for (uint32_t d = 0; d < D; d += 8) {
    if (dtype == DUO_F32) {
      __builtin_memcpy(tmp, s + d, 32);
      nonfinite += k_nonfinite(s + d, 8);
    } else nonfinite += k_convert(tmp, s + d, dtype, 8);
    if (layout == DUO_K64)
      for (uint32_t k = 0; k < 8; k++) __builtin_memcpy(base + (at + (d + k) * 8) * es, tmp + k * es, es);
    else __builtin_memcpy(base + (at + d * DUO_TILE) * es, tmp, 8 * es);
  }
  return nonfinite;
}

int32_t duo_append(void *dst, int32_t dtype, int32_t row_heads, int32_t head_dim, const float *src, int32_t src_heads,
                   const int32_t *heads, const int32_t *rows, int32_t n, int32_t layout, int32_t buffer_rows) {
  const int tiled = layout != DUO_NHD;
  if (dtype < DUO_F32 || dtype > DUO_INT4 || (is_quantized(dtype) && layout != DUO_NHD) || row_heads < 0 || head_dim <= 0 || head_dim % 4 || src_heads < 0 || n < 0 ||
      layout < DUO_NHD || layout > DUO_V64 || (tiled && (head_dim % 8 || buffer_rows <= 0 || buffer_rows % DUO_TILE)))
    return DUO_E_ARG;
  const int32_t *hs = heads, *rs = rows;
  if (tiled) /* a row past the buffer would land in the next head's tiles: refuse before writing anything */
    for (int32_t t = 0; t < n; t++)
      if (rs[t] >= buffer_rows) return DUO_E_ARG;
  const uint32_t blocks = tiled ? (uint32_t)buffer_rows / DUO_TILE : 0;
  const uint32_t es = dtype == DUO_F32 ? 4 : 2, D = (uint32_t)head_dim;
  int32_t nonfinite = 0;
  for (int32_t t = 0; t < n; t++) {
    if (rs[t] < 0) continue;
    for (int32_t j = 0; j < row_heads;) {
      const float *s = src + ((uint32_t)t * src_heads + hs[j]) * D;
      if (tiled) {
        uint32_t at = tile_row_start(layout, (uint32_t)rs[t], (uint32_t)j, blocks, D);
        nonfinite += tile_append((uint8_t *)dst, at, s, layout, dtype, D);
        j++;
        continue;
      }
      if (is_quantized(dtype)) { /* one record per head */
        nonfinite += k_quantize((uint8_t *)(uintptr_t)(dst + ((uint32_t)rs[t] * row_heads + j) * kv_head_bytes(dtype, D)), s, dtype, (int)D);
        j++;
        continue;
      }
      int32_t len = 1; /* a run of consecutive source heads is one contiguous copy */
      while (j + len < row_heads && hs[j + len] == hs[j] + len) len++;
      uint8_t *d = (uint8_t *)dst + ((uint32_t)rs[t] * row_heads + j) * D * es;
      if (dtype == DUO_F32) {
        __builtin_memcpy(d, s, len * D * 4);
        nonfinite += k_nonfinite(s, (int)(len * D));
      } else nonfinite += k_convert(d, s, dtype, (int)(len * D));
      j += len;
    }
  }
  return nonfinite;
}
