// Tiled symmetric InfoNCE (see contrastive.h). Row tiles of S are computed by the GEMM;
// row log-sum-exps are finished per tile, column log-sum-exps are merged across tiles
// online (running max and rescaled sum, as in flash attention). The backward recomputes
// each tile of S, turns it into G in place and feeds two GEMMs; grad_b accumulates over
// the tiles in order, so the result is deterministic. The element-wise passes over a tile
// (exp, max, sums) are vectorized through simd_math.h and dispatched on the SIMD level.
#include "contrastive.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../core/error.h"
#include "../core/memory.h"
#include "../core/thread_pool.h"
#include "gemm.h"
#include "simd_math.h"

namespace mstar {
namespace {

constexpr int64_t kTileElements = int64_t{16} << 20;  // 64 MB of float S per tile

int64_t tile_rows_for(const ContrastiveParams& p) {
  if (p.tile_rows > 0) return std::min(p.tile_rows, p.n);
  return std::clamp<int64_t>(kTileElements / std::max<int64_t>(p.n, 1), 1, p.n);
}

// c [m×n] = alpha · op(a) · op(b) + beta · c over dense row-major operands:
// a [m×k] (or [k×m] when trans_a), b [k×n] (or [n×k] when trans_b).
void dense_gemm(const float* a, bool trans_a, const float* b, bool trans_b, float* c, int64_t m, int64_t n, int64_t k,
                float alpha, float beta = 0.0f) {
  GemmParams g;
  g.a = a, g.b = b, g.c = c;
  g.m = m, g.n = n, g.k = k;
  g.trans_a = trans_a, g.trans_b = trans_b;
  g.lda = trans_a ? m : k, g.ldb = trans_b ? k : n, g.ldc = n;
  g.alpha = alpha, g.beta = beta;
  gemm(g);
}

// s [rows, n] = scale · a[r0 : r0 + rows] · bᵀ
void similarity_tile(const ContrastiveParams& p, int64_t r0, int64_t rows, float* s) {
  dense_gemm(p.a + r0 * p.d, false, p.b, true, s, rows, p.n, p.d, p.scale);
}

// lse_out[i] = lse_j s[i, j] and diagonal[i] = s[i, r0 + i] for tile rows [i0, i1).
template <class V>
void row_stats_kernel(const float* s, int64_t n, int64_t r0, int64_t i0, int64_t i1, float* lse_out, double* diagonal) {
  for (int64_t i = i0; i < i1; ++i) {
    const float* row = s + i * n;
    diagonal[i] = row[r0 + i];
    const float m = simd::row_max<V>(row, n);
    const auto shift = V::set1(m);
    const double sum = simd::map_sum<V>(n, [&](auto at) { return V::exp(V::sub(at.load(row), shift)); });
    lse_out[i] = static_cast<float>(m + std::log(sum));
  }
}
MSTAR_SIMD_DISPATCH(row_stats, row_stats_kernel)

// For columns [j0, j1) of a tile of `rows` rows: tile_max[j] = max_i s[i, j] and
// tile_sum[j] = Σ_i exp(s[i, j] − tile_max[j]) (float: at most one tile of terms).
template <class V>
void column_stats_kernel(const float* s, int64_t n, int64_t rows, int64_t j0, int64_t j1, float* tile_max, float* tile_sum) {
  simd::map_each<V>(j1 - j0, [&](auto at) {
    const float* base = s + j0;
    auto m = at.load(base);
    for (int64_t i = 1; i < rows; ++i) m = V::max(m, at.load(base + i * n));
    auto sum = V::zero();
    for (int64_t i = 0; i < rows; ++i) sum = V::add(sum, V::exp(V::sub(at.load(base + i * n), m)));
    at.store(tile_max + j0, m);
    at.store(tile_sum + j0, sum);
  });
}
MSTAR_SIMD_DISPATCH(column_stats, column_stats_kernel)

// Tile rows [i0, i1) of S → G in place (see contrastive.h), row_dot[i] = Σ_j G_ij S_ij.
template <class V>
void gradient_rows_kernel(float* s, int64_t n, int64_t r0, int64_t i0, int64_t i1, const float* lse_rows,
                          const float* lse_cols, float coefficient, double* row_dot) {
  const auto c = V::set1(coefficient);
  for (int64_t i = i0; i < i1; ++i) {
    float* row = s + i * n;
    const float diagonal = row[r0 + i];
    const auto lse_row = V::set1(lse_rows[r0 + i]);
    double dot = simd::map_sum<V>(n, [&](auto at) {
      const auto v = at.load(row);
      const auto g = V::mul(c, V::add(V::exp(V::sub(v, lse_row)), V::exp(V::sub(v, at.load(lse_cols)))));
      at.store(row, g);
      return V::mul(g, v);
    });
    row[r0 + i] -= 2.0f * coefficient;  // − 2·I on the diagonal
    dot -= 2.0 * static_cast<double>(coefficient) * diagonal;
    row_dot[i] = dot;
  }
}
MSTAR_SIMD_DISPATCH(gradient_rows, gradient_rows_kernel)

}  // namespace

void contrastive_check(const ContrastiveParams& p) {
  MSTAR_CHECK(p.n >= 1 && p.d >= 1, Shape, "contrastive: n and d must be positive, got n=" << p.n << ", d=" << p.d);
  MSTAR_CHECK(p.n <= (int64_t{1} << 31) && p.d <= (int64_t{1} << 31) && p.n * p.d <= (int64_t{1} << 46), Shape,
              "contrastive: n=" << p.n << ", d=" << p.d << " is too large");
  MSTAR_CHECK(std::isfinite(p.scale) && p.scale > 0, Argument, "contrastive: scale must be finite and > 0, got " << p.scale);
  MSTAR_CHECK(p.tile_rows >= 0, Argument, "contrastive: tile_rows must be >= 0");
}

double contrastive_forward(const ContrastiveParams& p, float* lse_rows, float* lse_cols) {
  contrastive_check(p);
  MSTAR_CHECK(p.a && p.b && lse_rows && lse_cols, Argument, "contrastive_forward: null buffer");
  const int64_t n = p.n, tile = tile_rows_for(p);
  Workspace<float> s(static_cast<size_t>(tile * n));
  std::vector<float> col_max(n, -std::numeric_limits<float>::infinity());
  std::vector<double> col_sum(n, 0.0);
  std::vector<double> diagonal(n);
  std::vector<float> tile_max(n), tile_sum(n);
  for (int64_t r0 = 0; r0 < n; r0 += tile) {
    const int64_t rows = std::min(tile, n - r0);
    similarity_tile(p, r0, rows, s.data());
    parallel_for(rows, simd::rows_per_task(n),
                 [&](int64_t i0, int64_t i1) { row_stats(s.data(), n, r0, i0, i1, lse_rows + r0, diagonal.data() + r0); });
    // Merge this tile's column statistics into the running ones (online log-sum-exp).
    parallel_for(n, 256, [&](int64_t j0, int64_t j1) {
      column_stats(s.data(), n, rows, j0, j1, tile_max.data(), tile_sum.data());
      for (int64_t j = j0; j < j1; ++j) {
        const float m = std::max(col_max[j], tile_max[j]);
        col_sum[j] = col_sum[j] * std::exp(static_cast<double>(col_max[j]) - m) +
                     static_cast<double>(tile_sum[j]) * std::exp(static_cast<double>(tile_max[j]) - m);
        col_max[j] = m;
      }
    });
  }
  double total = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    lse_cols[j] = static_cast<float>(col_max[j] + std::log(col_sum[j]));
    total += static_cast<double>(lse_rows[j]) + static_cast<double>(lse_cols[j]) - 2.0 * diagonal[j];
  }
  return total / (2.0 * static_cast<double>(n));
}

double contrastive_backward(const ContrastiveParams& p, const float* lse_rows, const float* lse_cols, float g_loss,
                            float* grad_a, float* grad_b) {
  contrastive_check(p);
  MSTAR_CHECK(p.a && p.b && lse_rows && lse_cols && grad_a && grad_b, Argument, "contrastive_backward: null buffer");
  const int64_t n = p.n, d = p.d, tile = tile_rows_for(p);
  const float coefficient = static_cast<float>(static_cast<double>(g_loss) / (2.0 * static_cast<double>(n)));
  Workspace<float> s(static_cast<size_t>(tile * n));
  std::vector<double> row_dot(tile);
  double scale_grad = 0.0;
  for (int64_t r0 = 0; r0 < n; r0 += tile) {
    const int64_t rows = std::min(tile, n - r0);
    similarity_tile(p, r0, rows, s.data());
    // S → G in place, and Σ_j G_ij S_ij per row.
    parallel_for(rows, simd::rows_per_task(n), [&](int64_t i0, int64_t i1) {
      gradient_rows(s.data(), n, r0, i0, i1, lse_rows, lse_cols, coefficient, row_dot.data());
    });
    for (int64_t i = 0; i < rows; ++i) scale_grad += row_dot[i];
    // grad_a[r0 : r0 + rows] = scale · G · b;  grad_b (+)= scale · Gᵀ · a[r0 : r0 + rows]
    dense_gemm(s.data(), false, p.b, false, grad_a + r0 * d, rows, d, n, p.scale);
    dense_gemm(s.data(), true, p.a + r0 * d, false, grad_b, n, d, rows, p.scale, r0 == 0 ? 0.0f : 1.0f);
  }
  return scale_grad;
}

}  // namespace mstar
