// Softmax / log-softmax over the last dim (see softmax.h). Rows are independent and
// split across the thread pool; within a row the kernels are vectorized through the
// generic helpers of simd_math.h and dispatched on the SIMD level at run time.
#include "softmax.h"

#include <cmath>

#include "../core/thread_pool.h"
#include "simd_math.h"

namespace mstar {
namespace {

template <class V>
void softmax_forward_rows(const float* x, float* y, int64_t row_begin, int64_t row_end, int64_t cols, bool log) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    // Shifting by the max keeps every exp argument ≤ 0 (no overflow) and makes the
    // largest term exactly 1, so the sum is ≥ 1 and its log is well conditioned.
    const auto shift = V::set1(simd::row_max<V>(xr, cols));
    if (log) {
      const double sum = simd::map_sum<V>(cols, [&](auto at) { return V::exp(V::sub(at.load(xr), shift)); });
      // (x − max) − log Σ rather than x − (max + log Σ): with logits near ±1e4 the
      // float rounding of max + log Σ alone would cost ~1e-3 absolute.
      const auto log_sum = V::set1(static_cast<float>(std::log(sum)));
      simd::map_each<V>(cols, [&](auto at) { at.store(yr, V::sub(V::sub(at.load(xr), shift), log_sum)); });
    } else {
      // Store the numerators on the way, then scale: one exp per entry.
      const double sum = simd::map_sum<V>(cols, [&](auto at) {
        auto e = V::exp(V::sub(at.load(xr), shift));
        at.store(yr, e);
        return e;
      });
      const auto inv_sum = V::set1(static_cast<float>(1.0 / sum));
      simd::map_each<V>(cols, [&](auto at) { at.store(yr, V::mul(at.load(yr), inv_sum)); });
    }
  }
}
MSTAR_SIMD_DISPATCH(softmax_forward_range, softmax_forward_rows)

template <class V>
void softmax_backward_rows(const float* y, const float* gy, float* gx, int64_t row_begin, int64_t row_end,
                           int64_t cols, bool log) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* yr = y + r * cols;
    const float* gyr = gy + r * cols;
    float* gxr = gx + r * cols;
    if (log) {
      const auto sum_gy = V::set1(static_cast<float>(simd::map_sum<V>(cols, [&](auto at) { return at.load(gyr); })));
      // exp(y) is the softmax probability; exp(−inf) = 0 leaves masked entries at gy.
      simd::map_each<V>(cols, [&](auto at) { at.store(gxr, V::fnmadd(V::exp(at.load(yr)), sum_gy, at.load(gyr))); });
    } else {
      const auto dot = V::set1(static_cast<float>(
          simd::map_sum<V>(cols, [&](auto at) { return V::mul(at.load(gyr), at.load(yr)); })));
      simd::map_each<V>(cols, [&](auto at) { at.store(gxr, V::mul(at.load(yr), V::sub(at.load(gyr), dot))); });
    }
  }
}
MSTAR_SIMD_DISPATCH(softmax_backward_range, softmax_backward_rows)

}  // namespace

void softmax_forward(const float* x, float* y, int64_t rows, int64_t cols, bool log) {
  if (rows <= 0 || cols <= 0) return;
  parallel_for(rows, simd::rows_per_task(cols),
               [&](int64_t begin, int64_t end) { softmax_forward_range(x, y, begin, end, cols, log); });
}

void softmax_backward(const float* y, const float* gy, float* gx, int64_t rows, int64_t cols, bool log) {
  if (rows <= 0 || cols <= 0) return;
  parallel_for(rows, simd::rows_per_task(cols),
               [&](int64_t begin, int64_t end) { softmax_backward_range(y, gy, gx, begin, end, cols, log); });
}

}  // namespace mstar
