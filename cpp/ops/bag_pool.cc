// Fused attention pooling over ragged bags (see bag_pool.h). Forward directly above
// backward. Loops are plain and branch-free in their inner dimension so that
// MSTAR_SIMD_DISPATCH compiles them for SSE2, AVX2 and AVX-512.
#include "bag_pool.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../core/memory.h"
#include "../core/thread_pool.h"
#include "vec_math.h"

namespace mstar {
namespace {

constexpr int64_t kColBlock = 64;   // pooled columns per task
constexpr int64_t kRowBlock = 256;  // rows summed in float before adding into double

bool valid(const BagPoolParams& p, int64_t t) { return p.mask == nullptr || p.mask[t] != 0; }

// Softmax of scores[:, k] over the valid rows of one bag, written to attn[:, k].
void bag_softmax(const BagPoolParams& p, int64_t b) {
  const int64_t begin = p.offsets[b], end = p.offsets[b + 1], K = p.heads;
  for (int64_t k = 0; k < K; ++k) {
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t t = begin; t < end; ++t)
      if (valid(p, t)) m = std::max(m, p.scores[t * K + k]);
    double sum = 0.0;
    for (int64_t t = begin; t < end; ++t) {
      const float e = valid(p, t) && m != -std::numeric_limits<float>::infinity() ? std::exp(p.scores[t * K + k] - m) : 0.0f;
      p.attn[t * K + k] = e;
      sum += e;
    }
    // A bag with no valid instance (or only −inf scores) pools to zero, like a query
    // whose keys are all masked in the attention kernel.
    const float inv = sum > 0.0 ? static_cast<float>(1.0 / sum) : 0.0f;
    for (int64_t t = begin; t < end; ++t) p.attn[t * K + k] *= inv;
  }
}

// acc[c] += w · row[c] over one column block.
MSTAR_INLINE void axpy_block(float* __restrict acc, const float* __restrict row, float w, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] += w * row[c];
}

template <class V>
void pool_block_body(const BagPoolParams* pp, int64_t b, int64_t k, int64_t c0, int64_t c1) {
  const BagPoolParams& p = *pp;
  const int64_t n = c1 - c0, K = p.heads;
  double total[kColBlock] = {};
  float acc[kColBlock];
  for (int64_t r0 = p.offsets[b]; r0 < p.offsets[b + 1]; r0 += kRowBlock) {
    const int64_t r1 = std::min(r0 + kRowBlock, p.offsets[b + 1]);
    for (int64_t c = 0; c < n; ++c) acc[c] = 0.0f;
    for (int64_t t = r0; t < r1; ++t) axpy_block(acc, p.h + t * p.h_stride + c0, p.attn[t * K + k], n);
    for (int64_t c = 0; c < n; ++c) total[c] += acc[c];
  }
  float* out = p.pooled + (b * K + k) * p.dim + c0;
  for (int64_t c = 0; c < n; ++c) out[c] = static_cast<float>(total[c]);
}
MSTAR_SIMD_DISPATCH(pool_block, pool_block_body)

}  // namespace

void bag_pool_forward(const BagPoolParams& p) {
  if (p.bags <= 0) return;
  parallel_for(p.bags, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) bag_softmax(p, b);
  });
  if (p.dim <= 0) return;
  const int64_t col_blocks = (p.dim + kColBlock - 1) / kColBlock;
  const int64_t tasks = p.bags * p.heads * col_blocks;
  parallel_for(tasks, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t cb = i % col_blocks, bk = i / col_blocks;
      const int64_t c0 = cb * kColBlock, c1 = std::min(c0 + kColBlock, p.dim);
      pool_block(&p, bk / p.heads, bk % p.heads, c0, c1);
    }
  });
}

namespace {

MSTAR_INLINE float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Rows [t0, t1) of the backward; `b` is the bag of row t0.
template <class V>
void backward_rows_body(const BagPoolParams* pp, const double* centre, int64_t t0, int64_t t1, int64_t b) {
  const BagPoolParams& p = *pp;
  const int64_t K = p.heads, L = p.dim;
  for (int64_t t = t0; t < t1; ++t) {
    while (t >= p.offsets[b + 1]) ++b;
    const float* g = p.grad_pooled + b * K * L;
    if (p.grad_h != nullptr) {
      float* gh = p.grad_h + t * L;
      for (int64_t c = 0; c < L; ++c) gh[c] = 0.0f;
      for (int64_t k = 0; k < K; ++k) axpy_block(gh, g + k * L, p.attn[t * K + k], L);
    }
    if (p.grad_scores != nullptr) {
      for (int64_t k = 0; k < K; ++k) {
        const float a = p.attn[t * K + k];
        // a = 0 for masked rows: their gradient is exactly zero (no h read needed).
        p.grad_scores[t * K + k] =
            a == 0.0f ? 0.0f : static_cast<float>(a * (static_cast<double>(dot(p.h + t * p.h_stride, g + k * L, L)) - centre[b * K + k]));
      }
    }
  }
}
MSTAR_SIMD_DISPATCH(backward_rows, backward_rows_body)

}  // namespace

void bag_pool_backward(const BagPoolParams& p) {
  if (p.bags <= 0 || p.total <= 0) return;
  const int64_t K = p.heads, L = p.dim;
  // centre[b, k] = M[b, k, :]·g[b, k, :] = Σ_t a[t, k] (h[t]·g[b, k]): the softmax's mean term.
  std::vector<double> centre(static_cast<size_t>(p.bags * K), 0.0);
  for (int64_t i = 0; i < p.bags * K; ++i) {
    double s = 0.0;
    for (int64_t c = 0; c < L; ++c) s += static_cast<double>(p.pooled[i * L + c]) * p.grad_pooled[i * L + c];
    centre[i] = s;
  }
  parallel_for(p.total, 64, [&](int64_t t0, int64_t t1) {
    // First bag whose end is beyond t0 (empty bags are skipped by the inner while).
    const int64_t b = std::upper_bound(p.offsets, p.offsets + p.bags + 1, t0) - p.offsets - 1;
    backward_rows(&p, centre.data(), t0, t1, std::max<int64_t>(b, 0));
  });
}

}  // namespace mstar
