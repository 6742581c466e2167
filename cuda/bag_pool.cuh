// Fused attention pooling over ragged bags of instances, forward and backward: the CUDA
// twin of cpp/ops/bag_pool (same contracts as bagPoolForward/bagPoolBackward in
// lib/native.ts; attention-based MIL, Ilse et al. 2018, eq. 8-9):
//
//   a[t, k]    = softmax over the valid instances t of bag b of s[t, k]
//   M[b, k, :] = Σ_t a[t, k] · h[t, :]
//
// float32 only, like the CPU kernel. Bag offsets stay on the host (they are small and
// decide which memory the kernels touch, so they are checked before any launch); the
// mask and every tensor are device buffers.
#pragma once
#include <cstdint>
#include <vector>

#include "types.cuh"

namespace mstar::cuda {

struct BagPoolParams {
  int64_t bags = 0;   // B
  int64_t total = 0;  // T, instances over all bags
  int64_t heads = 1;  // K, attention branches
  int64_t dim = 0;    // L, instance feature size
  int64_t h_stride = 0;          // row stride of h (>= L)
  std::vector<int64_t> offsets;  // host [B + 1]: 0 = o[0] <= o[1] <= ... <= o[B] = T
  DeviceSpan mask;               // uint8 [T] (elems = bytes), 1 = valid; absent = all valid
  DeviceSpan scores;             // [T, K] attention logits
  DeviceSpan h;                  // [T, L] with row stride h_stride
  DeviceSpan attn;               // [T, K]: written by forward, read by backward
  DeviceSpan pooled;             // [B, K, L]: written by forward, read by backward
  // Backward only.
  DeviceSpan grad_pooled;  // [B, K, L]
  DeviceSpan grad_h;       // [T, L] contiguous, written (optional)
  DeviceSpan grad_scores;  // [T, K], written (optional)
};

// attn = masked softmax of scores within each bag (0 for masked instances; a bag with no
// valid instance, or only −Infinity scores, gets attn 0 and pools to 0); pooled = Σ attn·h.
// The pooling sums fixed row chunks and then the chunks in order: no atomics, so every
// run gives the same bits.
void bag_pool_forward(const BagPoolParams& p);

// From the forward's attn and pooled and the output gradient g = grad_pooled:
//   grad_h[t, :]      = Σ_k a[t, k] · g[b, k, :]
//   grad_scores[t, k] = a[t, k] · (h[t, :]·g[b, k, :] − M[b, k, :]·g[b, k, :])   (0 where a = 0)
// Either output may be absent. The mask is checked like the forward's but not read: attn
// is already 0 on masked instances.
void bag_pool_backward(const BagPoolParams& p);

}  // namespace mstar::cuda
