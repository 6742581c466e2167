// Tiled (flash) attention forward on tensor cores: the CUDA twin of the tiled forward in
// cpp/ops/attention (same contract as attentionForward in lib/native.ts).
#pragma once
#include <cstdint>

#include "types.cuh"

namespace mstar::cuda {

// Element strides of one tensor: [batch, head, token]; the head dim is contiguous.
struct AttentionStrides {
  int64_t batch = 0, head = 0, row = 0;
};

struct AttentionParams {
  Dtype dtype = Dtype::BF16;  // of q, k, v and out; lse is float32
  int64_t batch = 0, heads = 0, q_len = 0, k_len = 0, head_dim = 0;  // B, H, Nq, Nk, D
  DeviceSpan q, k, v, out;
  DeviceSpan lse;       // float32 [B, H, Nq], contiguous
  DeviceSpan key_mask;  // uint8 [B, Nk], 1 = attend; data == nullptr: attend to all keys
  AttentionStrides q_strides, k_strides, v_strides, out_strides;
  float scale = 1.0f;
};

//   out[b,h,i,:] = Σ_j softmax_j(scale · q[b,h,i,:]·k[b,h,j,:] | key_mask[b,j]) · v[b,h,j,:]
//   lse[b,h,i]   = log Σ_j exp(scale · q·k) over attended keys (−∞ when none; out is then 0)
// bfloat16 storage with float32 softmax and accumulation, head dims 64 and 128 (others,
// and float32 storage, are ERR_UNSUPPORTED: the CPU kernel handles them). Never
// materializes [Nq, Nk]: memory is O(tile), any Nk works. out must not overlap k or v.
void attention_forward(const AttentionParams& params);

}  // namespace mstar::cuda
