// Per-row cross entropy over logits [rows, cols] with class targets [rows], as
// torch.nn.functional.cross_entropy(logits, targets, reduction='none', ignore_index=-1):
//   losses[r] = logsumexp(logits[r, :]) − logits[r, targets[r]]
// computed stably (shift by the row max, Σ exp in float blocks added into a double,
// the loss itself assembled in double). A target of −1 ignores its row: loss 0 and
// zero gradient. Any other target outside [0, cols) is an ERR_RANGE error naming the
// row, raised before anything is written.
// Extremes follow PyTorch: a −inf logit at the target gives +inf; a row of all −inf
// (or with +inf / NaN) gives NaN.
#pragma once
#include <cstdint>

namespace mstar {

// losses [rows] (written).
void cross_entropy_forward(const float* logits, const int32_t* targets, float* losses, int64_t rows, int64_t cols);

// g_logits[r, :] = g_losses[r] · (softmax(logits[r, :]) − onehot(targets[r])), or 0 for
// an ignored row. g_logits may be logits (in place); no other overlap.
void cross_entropy_backward(const float* logits, const int32_t* targets, const float* g_losses, float* g_logits,
                            int64_t rows, int64_t cols);

}  // namespace mstar
