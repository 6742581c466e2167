// Layer norm forward and backward (see layernorm.h). Rows are split across the thread
// pool; within a row the kernels use the vector helpers of simd_math.h, dispatched on
// the SIMD level at run time. The parameter gradients are reduced over rows through
// per-block double partials (no atomics, no races, thread-count independent).
#include "layernorm.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <utility>

#include "../core/error.h"
#include "../core/memory.h"
#include "../core/thread_pool.h"
#include "simd_math.h"

namespace mstar {
namespace {

template <class V>
void layernorm_forward_rows(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                            float* rstd, int64_t row_begin, int64_t row_end, int64_t cols, double eps) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    // Corrected two-pass statistics: a first mean m1 from float blocks may be off by
    // ~|mean|·1e-7·√cols; the second pass sums d = x − m1 and d², both small when
    // |mean| ≫ std, and Σd / cols is exactly the correction m1 still needs.
    const double inv_cols = 1.0 / static_cast<double>(cols);
    const double m1 = simd::map_sum<V>(cols, [&](auto at) { return at.load(xr); }) * inv_cols;
    // x − m1 as (x − hi) − lo with m1 = hi + lo: x − hi is exact near the mean
    // (Sterbenz), so the centred values keep full precision.
    auto centring = [&](double m) {
      const float hi = static_cast<float>(m);
      return std::make_pair(V::set1(hi), V::set1(static_cast<float>(m - hi)));
    };
    const auto c1 = centring(m1);
    const auto sums = simd::map_sums<V, 2>(cols, [&](auto at) {
      auto d = V::sub(V::sub(at.load(xr), c1.first), c1.second);
      return simd::Vecs<V, 2>{{d, V::mul(d, d)}};
    });
    const double shift = sums[0] * inv_cols;
    const double mean_d = m1 + shift;
    const double var = std::max(0.0, sums[1] * inv_cols - shift * shift);
    const double rstd_d = 1.0 / std::sqrt(var + eps);
    mean[r] = static_cast<float>(mean_d);
    rstd[r] = static_cast<float>(rstd_d);
    const auto c2 = centring(mean_d);
    const auto scale = V::set1(static_cast<float>(rstd_d));
    simd::map_each<V>(cols, [&](auto at) {
      auto v = V::mul(V::sub(V::sub(at.load(xr), c2.first), c2.second), scale);
      if (gamma != nullptr) v = V::mul(v, at.load(gamma));
      if (beta != nullptr) v = V::add(v, at.load(beta));
      at.store(yr, v);
    });
  }
}
MSTAR_SIMD_DISPATCH(layernorm_forward_range, layernorm_forward_rows)

// gx for rows [row_begin, row_end); when not null, partial_gamma / partial_beta [cols]
// (double) accumulate Σ gy·xhat and Σ gy over these rows.
template <class V>
void layernorm_backward_rows(const float* x, const float* gamma, const float* mean, const float* rstd,
                             const float* gy, float* gx, double* partial_gamma, double* partial_beta,
                             int64_t row_begin, int64_t row_end, int64_t cols) {
  const double inv_cols = 1.0 / static_cast<double>(cols);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* xr = x + r * cols;
    const float* gyr = gy + r * cols;
    float* gxr = gx + r * cols;
    const float mean_r = mean[r], rstd_r = rstd[r];
    const auto mu = V::set1(mean_r), rs = V::set1(rstd_r);
    auto xhat = [&](auto at) { return V::mul(V::sub(at.load(xr), mu), rs); };
    auto g = [&](auto at) { return gamma != nullptr ? V::mul(at.load(gyr), at.load(gamma)) : at.load(gyr); };
    const auto sums = simd::map_sums<V, 2>(cols, [&](auto at) {
      auto gv = g(at);
      return simd::Vecs<V, 2>{{gv, V::mul(gv, xhat(at))}};
    });
    const double mean_g = sums[0] * inv_cols, mean_g_xhat = sums[1] * inv_cols;
    // Parameter partials before gx is written, so that gx may overwrite gy. Plain loops:
    // compiled inside the target entry point, they are vectorized for its ISA.
    if (partial_gamma != nullptr) {
      for (int64_t c = 0; c < cols; ++c) {
        partial_gamma[c] += static_cast<double>(gyr[c]) * static_cast<double>((xr[c] - mean_r) * rstd_r);
      }
    }
    if (partial_beta != nullptr) {
      for (int64_t c = 0; c < cols; ++c) partial_beta[c] += static_cast<double>(gyr[c]);
    }
    const auto c1 = V::set1(static_cast<float>(mean_g)), c2 = V::set1(static_cast<float>(mean_g_xhat));
    simd::map_each<V>(cols, [&](auto at) { at.store(gxr, V::mul(rs, V::fnmadd(xhat(at), c2, V::sub(g(at), c1)))); });
  }
}
MSTAR_SIMD_DISPATCH(layernorm_backward_range, layernorm_backward_rows)

// Row blocks of the parameter-gradient reduction: enough to feed every thread, few
// enough that the partials stay small (≤ kMaxPartials doubles); a function of the shape
// only, never of the thread count, so the summation order is fixed.
constexpr int64_t kMaxBlocks = 64;
constexpr int64_t kMaxPartials = int64_t{1} << 21;  // 16 MiB

int64_t block_rows_for(int64_t rows, int64_t cols, int64_t partials_per_row) {
  const int64_t max_blocks =
      std::max<int64_t>(1, std::min<int64_t>(kMaxBlocks, kMaxPartials / (cols * partials_per_row)));
  return std::max(simd::rows_per_task(cols), (rows + max_blocks - 1) / max_blocks);
}

}  // namespace

void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* rstd,
                       int64_t rows, int64_t cols, double eps) {
  MSTAR_CHECK(rows == 0 || cols > 0, Shape, "layerNormForward: cols must be >= 1, got " << cols);
  MSTAR_CHECK(eps > 0, Argument, "layerNormForward: eps must be > 0, got " << eps);
  parallel_for(rows, simd::rows_per_task(cols), [&](int64_t begin, int64_t end) {
    layernorm_forward_range(x, gamma, beta, y, mean, rstd, begin, end, cols, eps);
  });
}

void layernorm_backward(const float* x, const float* gamma, const float* mean, const float* rstd, const float* gy,
                        float* gx, float* g_gamma, float* g_beta, int64_t rows, int64_t cols) {
  MSTAR_CHECK(rows == 0 || cols > 0, Shape, "layerNormBackward: cols must be >= 1, got " << cols);
  if (rows == 0) return;
  const int64_t partials_per_row = (g_gamma != nullptr ? 1 : 0) + (g_beta != nullptr ? 1 : 0);
  if (partials_per_row == 0) {
    parallel_for(rows, simd::rows_per_task(cols), [&](int64_t begin, int64_t end) {
      layernorm_backward_range(x, gamma, mean, rstd, gy, gx, static_cast<double*>(nullptr),
                               static_cast<double*>(nullptr), begin, end, cols);
    });
    return;
  }
  const int64_t block_rows = block_rows_for(rows, cols, partials_per_row);
  const int64_t blocks = (rows + block_rows - 1) / block_rows;
  // Block b's partials: [b][gamma cols | beta cols] (only the ones asked for).
  const int64_t block_stride = cols * partials_per_row;
  Workspace<double> partials(static_cast<size_t>(blocks * block_stride), /*zero=*/true);
  const int64_t beta_offset = g_gamma != nullptr ? cols : 0;
  parallel_for(blocks, 1, [&](int64_t block_begin, int64_t block_end) {
    for (int64_t b = block_begin; b < block_end; ++b) {
      double* block = partials.data() + b * block_stride;
      layernorm_backward_range(x, gamma, mean, rstd, gy, gx, g_gamma != nullptr ? block : nullptr,
                               g_beta != nullptr ? block + beta_offset : nullptr, b * block_rows,
                               std::min(rows, (b + 1) * block_rows), cols);
    }
  });
  // Add the partials in block order, columns in parallel.
  parallel_for(cols, std::max<int64_t>(1, simd::kMinTaskElements / blocks), [&](int64_t c_begin, int64_t c_end) {
    auto reduce = [&](float* out, int64_t offset) {
      for (int64_t c = c_begin; c < c_end; ++c) {
        double total = out[c];
        for (int64_t b = 0; b < blocks; ++b) total += partials[static_cast<size_t>(b * block_stride + offset + c)];
        out[c] = static_cast<float>(total);
      }
    };
    if (g_gamma != nullptr) reduce(g_gamma, 0);
    if (g_beta != nullptr) reduce(g_beta, beta_offset);
  });
}

}  // namespace mstar
