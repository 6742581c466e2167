// Tiled symmetric InfoNCE (see contrastive.h). Row tiles of S are computed by the GEMM;
// row log-sum-exps are finished per tile, column log-sum-exps are merged across tiles
// online (running max and rescaled sum, as in flash attention). The backward recomputes
// each tile of S, turns it into G in place and feeds two GEMMs; grad_b accumulates over
// the tiles in order, so the result is deterministic.
#include "contrastive.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../core/error.h"
#include "../core/memory.h"
#include "../core/thread_pool.h"
#include "gemm.h"

namespace mstar {
namespace {

constexpr int64_t kTileElements = int64_t{16} << 20;  // 64 MB of float S per tile

int64_t tile_rows_for(const ContrastiveParams& p) {
  if (p.tile_rows > 0) return std::min(p.tile_rows, p.n);
  return std::clamp<int64_t>(kTileElements / std::max<int64_t>(p.n, 1), 1, p.n);
}

// s [rows, n] = scale · a[r0 : r0 + rows] · bᵀ
void similarity_tile(const ContrastiveParams& p, int64_t r0, int64_t rows, float* s) {
  GemmParams g;
  g.a = p.a + r0 * p.d;
  g.b = p.b;
  g.c = s;
  g.m = rows;
  g.n = p.n;
  g.k = p.d;
  g.trans_b = true;
  g.lda = p.d;
  g.ldb = p.d;
  g.ldc = p.n;
  g.alpha = p.scale;
  gemm(g);
}

// lse of one row of `count` values `stride` apart.
double log_sum_exp(const float* v, int64_t count, int64_t stride) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < count; ++j) m = std::max(m, v[j * stride]);
  if (!std::isfinite(m)) return m;  // all −inf, or +inf (NaN propagates below otherwise)
  double sum = 0.0;
  for (int64_t j = 0; j < count; ++j) sum += std::exp(static_cast<double>(v[j * stride]) - m);
  return m + std::log(sum);
}

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
  for (int64_t r0 = 0; r0 < n; r0 += tile) {
    const int64_t rows = std::min(tile, n - r0);
    similarity_tile(p, r0, rows, s.data());
    parallel_for(rows, 8, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        lse_rows[r0 + i] = static_cast<float>(log_sum_exp(s.data() + i * n, n, 1));
        diagonal[r0 + i] = s.data()[i * n + r0 + i];
      }
    });
    // Merge this tile's column statistics into the running ones.
    parallel_for(n, 256, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) {
        float m = col_max[j];
        for (int64_t i = 0; i < rows; ++i) m = std::max(m, s.data()[i * n + j]);
        if (!std::isfinite(m)) {
          col_max[j] = m;
          continue;
        }
        double sum = std::isfinite(col_max[j]) ? col_sum[j] * std::exp(static_cast<double>(col_max[j]) - m) : 0.0;
        for (int64_t i = 0; i < rows; ++i) sum += std::exp(static_cast<double>(s.data()[i * n + j]) - m);
        col_max[j] = m;
        col_sum[j] = sum;
      }
    });
  }
  double total = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    lse_cols[j] = std::isfinite(col_max[j]) ? static_cast<float>(col_max[j] + std::log(col_sum[j])) : col_max[j];
    total += static_cast<double>(lse_rows[j]) + static_cast<double>(lse_cols[j]) - 2.0 * diagonal[j];
  }
  return total / (2.0 * static_cast<double>(n));
}

double contrastive_backward(const ContrastiveParams& p, const float* lse_rows, const float* lse_cols, float g_loss,
                            float* grad_a, float* grad_b) {
  contrastive_check(p);
  MSTAR_CHECK(p.a && p.b && lse_rows && lse_cols && grad_a && grad_b, Argument, "contrastive_backward: null buffer");
  const int64_t n = p.n, d = p.d, tile = tile_rows_for(p);
  const double coefficient = static_cast<double>(g_loss) / (2.0 * static_cast<double>(n));
  Workspace<float> s(static_cast<size_t>(tile * n));
  std::vector<double> row_dot(tile);
  double scale_grad = 0.0;
  for (int64_t r0 = 0; r0 < n; r0 += tile) {
    const int64_t rows = std::min(tile, n - r0);
    similarity_tile(p, r0, rows, s.data());
    // S → G in place, and Σ_j G_ij S_ij per row.
    parallel_for(rows, 8, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        float* row = s.data() + i * n;
        const double lse_row = lse_rows[r0 + i];
        double dot = 0.0;
        for (int64_t j = 0; j < n; ++j) {
          const double v = row[j];
          double grad = std::exp(v - lse_row) + std::exp(v - static_cast<double>(lse_cols[j]));
          if (j == r0 + i) grad -= 2.0;
          grad *= coefficient;
          dot += grad * v;
          row[j] = static_cast<float>(grad);
        }
        row_dot[i] = dot;
      }
    });
    for (int64_t i = 0; i < rows; ++i) scale_grad += row_dot[i];
    GemmParams ga;  // grad_a[r0 : r0 + rows] = scale · G · b
    ga.a = s.data();
    ga.b = p.b;
    ga.c = grad_a + r0 * d;
    ga.m = rows;
    ga.n = d;
    ga.k = n;
    ga.lda = n;
    ga.ldb = d;
    ga.ldc = d;
    ga.alpha = p.scale;
    gemm(ga);
    GemmParams gb;  // grad_b (+)= scale · Gᵀ · a[r0 : r0 + rows]
    gb.a = s.data();
    gb.b = p.a + r0 * d;
    gb.c = grad_b;
    gb.m = n;
    gb.n = d;
    gb.k = rows;
    gb.trans_a = true;
    gb.lda = n;
    gb.ldb = d;
    gb.ldc = d;
    gb.alpha = p.scale;
    gb.beta = r0 == 0 ? 0.0f : 1.0f;
    gemm(gb);
  }
  return scale_grad;
}

}  // namespace mstar
