// AdamW's per-step coefficients, rounded to float32 the way torch rounds them for its
// kernels. Shared by the CPU step (cpp/ops/optim.cc) and the CUDA step (cuda/optim.cu),
// so both apply the same float32 constants. Header-only, host code.
#pragma once
#include <cmath>

namespace mstar {

struct AdamWCoefficients {
  bool decay;           // weight_decay ≠ 0
  float decay_factor;   // 1 − lr·wd
  // torch's vectorized lerp(m, g, w): fma(w, g − m, m) when |w| < 0.5, else
  // fma(w − 1, g − m, g) — exact at both ends of the weight range.
  float lerp_coeff;
  bool lerp_from_m;
  float beta2;
  float one_minus_beta2;
  float bias_correction2_sqrt;
  float eps;
  float neg_step_size;  // −lr / (1 − β1^step)
};

// H: any struct with lr, beta1, beta2, eps, weight_decay (double) and step (≥ 1).
template <class H>
AdamWCoefficients adamw_coefficients(const H& h) {
  AdamWCoefficients c;
  const double step = static_cast<double>(h.step);
  c.decay = h.weight_decay != 0.0;
  c.decay_factor = static_cast<float>(1.0 - h.lr * h.weight_decay);
  const float w = static_cast<float>(1.0 - h.beta1);
  c.lerp_from_m = std::fabs(w) < 0.5f;
  c.lerp_coeff = c.lerp_from_m ? w : w - 1.0f;
  c.beta2 = static_cast<float>(h.beta2);
  c.one_minus_beta2 = static_cast<float>(1.0 - h.beta2);
  c.bias_correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(h.beta2, step)));
  c.eps = static_cast<float>(h.eps);
  c.neg_step_size = static_cast<float>(-(h.lr / (1.0 - std::pow(h.beta1, step))));
  return c;
}

}  // namespace mstar
