// Fused attention pooling over bags of instances (multiple-instance learning), the
// pooling step of attention-based MIL (Ilse, Tomczak & Welling 2018, "Attention-based
// Deep Multiple Instance Learning", eq. 8-9), as mSTAR's DAttention and CLAM's heads
// use it:
//
//   a[t, k]    = softmax over the valid instances t of bag b of s[t, k]
//   M[b, k, :] = Σ_t a[t, k] · h[t, :]
//
// Bags are ragged: instances of all bags are concatenated ([T, ...]) and
// offsets[b] .. offsets[b+1] delimit bag b. A padded batch [B, N, ...] is the special
// case offsets = 0, N, 2N, ... with a mask marking the real instances. Masked
// instances get a = 0 and no gradient; a bag without valid instances pools to 0.
//
// Memory: the forward writes a (T·K floats) and M; the backward reads them back:
//   g_h[t, :] = Σ_k a[t, k] · g[b, k, :]
//   g_s[t, k] = a[t, k] · (h[t, :]·g[b, k, :] − M[b, k, :]·g[b, k, :])
// so nothing of size T·L is stored beyond h itself, and nothing of size T² ever exists.
// Sums over instances accumulate float blocks into doubles; the work split depends on
// the sizes only, so results are identical for any thread count.
#pragma once
#include <cstdint>

namespace mstar {

struct BagPoolParams {
  int64_t bags = 0;     // B
  int64_t total = 0;    // T, instances over all bags
  int64_t heads = 1;    // K, attention branches
  int64_t dim = 0;      // L, instance feature size
  const int64_t* offsets = nullptr;  // [B + 1], offsets[0] = 0, non-decreasing, offsets[B] = T
  const uint8_t* mask = nullptr;     // [T], 1 = valid instance; nullptr = all valid
  const float* scores = nullptr;     // [T, K] attention logits
  const float* h = nullptr;          // [T, L] with row stride h_stride (>= L)
  int64_t h_stride = 0;
  float* attn = nullptr;             // [T, K] softmax weights: written by forward, read by backward
  float* pooled = nullptr;           // [B, K, L]: written by forward, read by backward
  // Backward only.
  const float* grad_pooled = nullptr;  // [B, K, L]
  float* grad_h = nullptr;             // [T, L] contiguous, written (may be null)
  float* grad_scores = nullptr;        // [T, K], written (may be null)
};

void bag_pool_forward(const BagPoolParams& p);
void bag_pool_backward(const BagPoolParams& p);

}  // namespace mstar
