// Layer normalization over the last dim of a row-major [rows, cols] float32 tensor, as
// torch.nn.functional.layer_norm(x, [cols], gamma, beta, eps) (Ba et al. 2016):
//   mean = Σ x / cols,  var = Σ (x − mean)² / cols  (biased, like PyTorch)
//   rstd = 1 / sqrt(var + eps),  y = (x − mean) · rstd · gamma + beta
// Statistics use the corrected two-pass algorithm with double totals (float blocks
// summed into a double; the mean kept as a float pair hi + lo while centring), so a
// large common offset (|mean| ≫ std) costs no precision. gamma / beta may be null (1 / 0).
#pragma once
#include <cstdint>

namespace mstar {

// y [rows, cols]; mean, rstd [rows] saved for the backward pass. Needs cols ≥ 1 when
// rows > 0 and eps > 0. y may be x (in place); no other overlap.
void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* rstd,
                       int64_t rows, int64_t cols, double eps);

// With xhat = (x − mean)·rstd and g = gy·gamma:
//   gx = rstd · (g − mean_c(g) − xhat · mean_c(g·xhat))            (written)
//   g_gamma[c] += Σ_rows gy·xhat,  g_beta[c] += Σ_rows gy           (accumulated; may be null)
// Rows are split into blocks whose size depends on rows and cols only; each block sums
// its own double partials and the partials are added in block order, so the parameter
// gradients are identical for any thread count. gx may be gy (in place); no other overlap.
void layernorm_backward(const float* x, const float* gamma, const float* mean, const float* rstd, const float* gy,
                        float* gx, float* g_gamma, float* g_beta, int64_t rows, int64_t cols);

}  // namespace mstar
