// Symmetric InfoNCE (the CLIP loss) over paired embeddings, tiled so that the n×n
// similarity matrix is never formed: the CUDA twin of cpp/ops/contrastive (same contracts
// as contrastiveForward/contrastiveBackward in lib/native.ts). float32 only, like the CPU.
//
// a, b [n, d]: row i of a and row i of b are a positive pair. scale = exp(logit_scale) > 0.
//   S = scale · a bᵀ                                        [n, n], computed tile by tile
//   loss = ½ · mean_i (lse_j S_ij − S_ii) + ½ · mean_j (lse_i S_ij − S_jj)
// Device memory beyond the operands: one tile of S (tile_rows·n floats) and O(n) statistics.
// Every reduction runs in a fixed order (no atomics): the same inputs give the same bits.
#pragma once
#include <cstdint>

#include "types.cuh"

namespace mstar::cuda {

struct ContrastiveParams {
  DeviceSpan a, b;          // float32 [n, d]
  int64_t n = 0, d = 0;     // >= 1 each
  float scale = 1.0f;       // finite and > 0
  int64_t tile_rows = 0;    // rows of S per tile; 0 picks one (about 64 MB of S)
  DeviceSpan lse_rows;      // float32 [n]: written by the forward, read by the backward
  DeviceSpan lse_cols;      // float32 [n]: same
  // Backward only.
  float g_loss = 1.0f;      // upstream gradient of the loss
  DeviceSpan grad_a, grad_b;  // float32 [n, d], written
};

// Returns the loss; writes lse_rows[i] = lse_j S_ij and lse_cols[j] = lse_i S_ij. Waits
// for the device (the loss comes back to the host).
double contrastive_forward(const ContrastiveParams& p);

// With G = g_loss / (2n) · (softmax_rows(S) + softmax_cols(S) − 2·I):
//   grad_a = scale · G b,  grad_b = scale · Gᵀ a
// (grad_b accumulated over the row tiles in order); returns Σ_ij G_ij S_ij, the gradient
// of the loss with respect to logit_scale. Waits for the device.
double contrastive_backward(const ContrastiveParams& p);

}  // namespace mstar::cuda
