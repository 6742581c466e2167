// Scaled dot-product attention on the CPU: the tiled (flash) forward and backward,
// and the naive anchor that materializes the scores. See attention.cc.
//
//   out[b,h,i,:] = Σ_j softmax_j(scale · q[b,h,i,:]·k[b,h,j,:] | key_mask[b,j]) · v[b,h,j,:]
//   lse[b,h,i]   = log Σ_j exp(scale · q·k)   over attended keys (−∞ when none)
//
// Tensors are addressed as base + b·batch + h·head + n·row + d (element strides, the head
// dim contiguous), so [B,H,N,D], [B,N,H,D] and a fused qkv [B,N,3,H,D] are all used in place.
#pragma once
#include <cstdint>

namespace mstar {

struct AttentionStrides {
  int64_t batch;  // elements between batch entries
  int64_t head;   // elements between heads
  int64_t row;    // elements between tokens
};

struct AttentionParams {
  int64_t batch = 0, heads = 0, q_len = 0, k_len = 0, head_dim = 0;  // B, H, Nq, Nk, D (D >= 1)
  const float* q = nullptr;  // [B,H,Nq,D] via q_strides
  const float* k = nullptr;  // [B,H,Nk,D] via k_strides
  const float* v = nullptr;  // [B,H,Nk,D] via v_strides
  AttentionStrides q_strides{}, k_strides{}, v_strides{}, out_strides{};
  float* out = nullptr;              // [B,H,Nq,D]: written by the forwards, read by the backward
  float* lse = nullptr;              // [B,H,Nq] contiguous: written by the tiled forward, read by the backward
  const uint8_t* key_mask = nullptr; // [B,Nk], 1 = attend; nullptr = attend to every key
  float scale = 1.0f;
  // Backward only. grad_out has out's layout; grad_q/k/v have q/k/v's layouts and are
  // overwritten. Each element is written exactly once by one thread and none is read, so
  // grad_q/k/v may share one buffer (a fused gqkv) as long as their elements are disjoint.
  const float* grad_out = nullptr;
  float* grad_q = nullptr;
  float* grad_k = nullptr;
  float* grad_v = nullptr;
};

// Tiled forward (FlashAttention-2): writes out and lse. Workspace O(threads · block · D).
void attention_forward(const AttentionParams& p);
// The anchor: materializes the [Nq, Nk] scores of one (b, h) at a time. Writes out only.
void attention_naive_forward(const AttentionParams& p);
// Tiled backward (FlashAttention-2 recomputation from lse): writes grad_q, grad_k, grad_v.
void attention_backward(const AttentionParams& p);

}  // namespace mstar
