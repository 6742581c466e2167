// Cross entropy over the last dim (see cross_entropy.h): log-softmax and negative
// log-likelihood fused per row, so the [rows, cols] log-probabilities are never
// stored. Rows are independent and split across the thread pool; within a row the
// kernels use the vector helpers of simd_math.h, dispatched at run time.
#include "cross_entropy.h"

#include <cmath>
#include <sstream>

#include "../core/error.h"
#include "../core/thread_pool.h"
#include "simd_math.h"

namespace mstar {
namespace {

constexpr int32_t kIgnoreIndex = -1;

// Checked up front so that a bad target leaves every output untouched.
void check_targets(const int32_t* targets, int64_t rows, int64_t cols, const char* op) {
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t t = targets[r];
    MSTAR_CHECK(t == kIgnoreIndex || (t >= 0 && t < cols), Range,
                op << ": targets[" << r << "] = " << t << " is outside [0, " << cols << ") for row " << r
                   << "; use " << kIgnoreIndex << " to ignore a row");
  }
}

// Σ_{j≠t} exp(x_j − max) over a row, in double; when `numerators` is not null every
// exp(x_j − max) with j ≠ t is stored there too. The target is left out of the sum
// because the quantities that matter near convergence, loss = log(1 + Σ_{j≠t}) when
// the target is the max and p_t − 1 = −Σ_{j≠t}/Σ, are tiny: summed next to e_t ≈ 1
// in float, the other terms would be lost below its rounding.
template <class V>
double exp_sum_except(const float* xr, float* numerators, int64_t cols, int64_t t, float max) {
  const auto shift = V::set1(max);
  auto range_sum = [&](int64_t begin, int64_t end) {
    const float* xs = xr + begin;
    float* es = numerators == nullptr ? nullptr : numerators + begin;
    return simd::map_sum<V>(end - begin, [&](auto at) {
      auto e = V::exp(V::sub(at.load(xs), shift));
      if (es != nullptr) at.store(es, e);
      return e;
    });
  };
  return range_sum(0, t) + range_sum(t + 1, cols);
}

template <class V>
void cross_entropy_forward_rows(const float* logits, const int32_t* targets, float* losses, int64_t row_begin,
                                int64_t row_end, int64_t cols) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int32_t t = targets[r];
    if (t == kIgnoreIndex) {
      losses[r] = 0.0f;
      continue;
    }
    const float* xr = logits + r * cols;
    const float max = simd::row_max<V>(xr, cols);
    const double sum = simd::exp_scalar(xr[t] - max) + exp_sum_except<V>(xr, nullptr, cols, t, max);
    // logsumexp − x_t = (max − x_t) + log Σ: the difference is exact in double.
    losses[r] = static_cast<float>((static_cast<double>(max) - static_cast<double>(xr[t])) + std::log(sum));
  }
}
MSTAR_SIMD_DISPATCH(cross_entropy_forward_range, cross_entropy_forward_rows)

template <class V>
void cross_entropy_backward_rows(const float* logits, const int32_t* targets, const float* g_losses,
                                 float* g_logits, int64_t row_begin, int64_t row_end, int64_t cols) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int32_t t = targets[r];
    float* gr = g_logits + r * cols;
    if (t == kIgnoreIndex) {
      std::fill(gr, gr + cols, 0.0f);
      continue;
    }
    const float* xr = logits + r * cols;
    const float max = simd::row_max<V>(xr, cols);
    // Numerators go straight into g_logits (all but the target's), then one scaling pass.
    const double others = exp_sum_except<V>(xr, gr, cols, t, max);
    const double sum = simd::exp_scalar(xr[t] - max) + others;
    const double g = g_losses[r];
    const auto scale = V::set1(static_cast<float>(g / sum));
    simd::map_each<V>(cols, [&](auto at) { at.store(gr, V::mul(at.load(gr), scale)); });
    // g·(p_t − 1) = −g·Σ_{j≠t}/Σ: no cancellation when p_t → 1.
    gr[t] = static_cast<float>(-g * (others / sum));
  }
}
MSTAR_SIMD_DISPATCH(cross_entropy_backward_range, cross_entropy_backward_rows)

}  // namespace

void cross_entropy_forward(const float* logits, const int32_t* targets, float* losses, int64_t rows, int64_t cols) {
  check_targets(targets, rows, cols, "crossEntropyForward");
  parallel_for(rows, simd::rows_per_task(cols), [&](int64_t begin, int64_t end) {
    cross_entropy_forward_range(logits, targets, losses, begin, end, cols);
  });
}

void cross_entropy_backward(const float* logits, const int32_t* targets, const float* g_losses, float* g_logits,
                            int64_t rows, int64_t cols) {
  check_targets(targets, rows, cols, "crossEntropyBackward");
  parallel_for(rows, simd::rows_per_task(cols), [&](int64_t begin, int64_t end) {
    cross_entropy_backward_range(logits, targets, g_losses, g_logits, begin, end, cols);
  });
}

}  // namespace mstar
