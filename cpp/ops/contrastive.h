// Symmetric InfoNCE (the CLIP loss) over paired embeddings, tiled so that the n×n
// similarity matrix is never formed: memory is O(rows_per_tile·n + n·d).
//
// a, b [n, d]: row i of a and row i of b are a positive pair; every other row of the
// other side is a negative (usually both sides are L2-normalized first). scale =
// exp(logit_scale) > 0 is the learnable inverse temperature.
//   S = scale · a bᵀ                                        [n, n], never stored whole
//   loss = ½ · mean_i (lse_j S_ij − S_ii) + ½ · mean_j (lse_i S_ij − S_jj)
// = ½ (cross_entropy(S, arange(n)) + cross_entropy(Sᵀ, arange(n))), as open_clip's ClipLoss.
// Sums of exponentials are accumulated in double; results do not depend on the thread count.
#pragma once
#include <cstdint>

namespace mstar {

struct ContrastiveParams {
  const float* a = nullptr;  // [n, d]
  const float* b = nullptr;  // [n, d]
  int64_t n = 0, d = 0;
  float scale = 1.0f;        // exp(logit_scale), finite and > 0
  int64_t tile_rows = 0;     // rows of S per tile; 0 picks one (about 64 MB of S)
};

// Throws Error(Shape/Argument) unless the sizes and scale are valid.
void contrastive_check(const ContrastiveParams& p);

// Returns the loss; writes the row and column log-sum-exps lse_rows[i] = lse_j S_ij and
// lse_cols[j] = lse_i S_ij ([n] each), which the backward reuses.
double contrastive_forward(const ContrastiveParams& p, float* lse_rows, float* lse_cols);

// With G = g_loss / (2n) · (softmax_rows(S) + softmax_cols(S) − 2·I):
//   grad_a = scale · G b,  grad_b = scale · Gᵀ a  ([n, d] each, written);
// returns Σ_ij G_ij S_ij, the gradient of the loss with respect to logit_scale.
double contrastive_backward(const ContrastiveParams& p, const float* lse_rows, const float* lse_cols, float g_loss,
                            float* grad_a, float* grad_b);

}  // namespace mstar
