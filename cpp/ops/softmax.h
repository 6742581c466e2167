// Softmax and log-softmax over the last dim of a row-major [rows, cols] float32 tensor,
// as torch.softmax / torch.log_softmax(x, dim=-1).
//
// Numerically stable: each row is shifted by its max before exp, and Σ exp is
// accumulated in float blocks added into a double. −inf entries (masked logits) give
// probability 0 (log-probability −inf). A row whose entries are all −inf has no finite
// max and gives NaN in every entry, as PyTorch does; a +inf or NaN entry makes its row
// NaN too. Backward passes use the saved output y only (no recomputation of exp for
// softmax; one exp per entry for log-softmax).
#pragma once
#include <cstdint>

namespace mstar {

// y[r, :] = softmax(x[r, :]) or log_softmax(x[r, :]) when `log`. y may be x (in place);
// no other overlap.
void softmax_forward(const float* x, float* y, int64_t rows, int64_t cols, bool log);

// Given y = forward output and gy = dL/dy, writes gx = dL/dx:
//   softmax:      gx = y ⊙ (gy − Σ gy ⊙ y)
//   log-softmax:  gx = gy − exp(y) · Σ gy
// gx may be gy (in place); no other overlap.
void softmax_backward(const float* y, const float* gy, float* gx, int64_t rows, int64_t cols, bool log);

}  // namespace mstar
