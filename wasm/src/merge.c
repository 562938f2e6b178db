/* duo_merge: the log-sum-exp merge of two normalised attention states (reference.ts mergeState). The attention
 * driver merges its split-KV chunks with the unnormalised form of the same rule (attend.c merge_partial). */
#include "duo.h"
#include "kernels.h"
#include "math.h"

void duo_merge(float *out, float *ls, const float *oa, const float *la, const float *ob, const float *lb, int32_t n,
               int32_t head_dim) {
  for (int32_t i = 0; i < n; i++) {
    double a = la[i], b = lb[i], m = a > b ? a : b;
    float *y = out + (uint32_t)i * head_dim;
    if (m == -__builtin_inf()) {
      ls[i] = -__builtin_inff();
      __builtin_memset(y, 0, (uint32_t)head_dim * 4);
      continue;
    }
    double wa = exp_f64(a - m), wb = exp_f64(b - m), s = wa + wb;
    ls[i] = (float)(m + log_f64(s));
    k_axpby(y, oa + (uint32_t)i * head_dim, (float)(wa / s), ob + (uint32_t)i * head_dim, (float)(wb / s), head_dim);
  }
}
