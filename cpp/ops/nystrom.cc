// Row-group sums and broadcasts for Nyström landmarks (see nystrom.h).
#include "nystrom.h"

#include <algorithm>

#include "../core/thread_pool.h"
#include "vec_math.h"

namespace mstar {
namespace {

MSTAR_INLINE void add_row(float* __restrict out, const float* __restrict in, int64_t n) {
  for (int64_t c = 0; c < n; ++c) out[c] += in[c];
}
MSTAR_INLINE void scaled_row(float* __restrict out, const float* __restrict in, float alpha, int64_t n, bool accumulate) {
  if (accumulate) {
    for (int64_t c = 0; c < n; ++c) out[c] += alpha * in[c];
  } else {
    for (int64_t c = 0; c < n; ++c) out[c] = alpha * in[c];
  }
}

// Groups [g0, g1) of the rows in range: each group's rows are added in row order.
template <class V>
void group_sum_body(const float* x, int64_t x_stride, int64_t row_begin, int64_t row_end, int64_t cols,
                                 int64_t group, float* out, int64_t g0, int64_t g1) {
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t r0 = std::max(row_begin, g * group), r1 = std::min(row_end, (g + 1) * group);
    for (int64_t r = r0; r < r1; ++r) add_row(out + g * cols, x + (r - row_begin) * x_stride, cols);
  }
}
MSTAR_SIMD_DISPATCH(group_sum_groups, group_sum_body)

template <class V>
void broadcast_body(const float* g, int64_t row_begin, int64_t cols, int64_t group, float alpha, float* out,
                                 int64_t out_stride, bool accumulate, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) scaled_row(out + (r - row_begin) * out_stride, g + (r / group) * cols, alpha, cols, accumulate);
}
MSTAR_SIMD_DISPATCH(broadcast_rows, broadcast_body)

}  // namespace

void group_row_sum(const float* x, int64_t x_stride, int64_t row_begin, int64_t row_end, int64_t cols, int64_t group,
                   float* out) {
  if (row_end <= row_begin || cols <= 0 || group <= 0) return;
  const int64_t g_first = row_begin / group, g_last = (row_end - 1) / group + 1;
  // One task per group range: every group is summed by one thread in row order.
  parallel_for(g_last - g_first, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, group * cols)),
               [&](int64_t a, int64_t b) { group_sum_groups(x, x_stride, row_begin, row_end, cols, group, out, g_first + a, g_first + b); });
}

void group_row_broadcast(const float* g, int64_t row_begin, int64_t row_end, int64_t cols, int64_t group, float alpha,
                         float* out, int64_t out_stride, bool accumulate) {
  if (row_end <= row_begin || cols <= 0 || group <= 0) return;
  parallel_for(row_end - row_begin, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, cols)), [&](int64_t a, int64_t b) {
    broadcast_rows(g, row_begin, cols, group, alpha, out, out_stride, accumulate, row_begin + a, row_begin + b);
  });
}

}  // namespace mstar
