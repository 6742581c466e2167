// Fused optimizer steps over flat float32 parameter buffers, one pass per step.
//
// adamw_step follows torch.optim.AdamW (Loshchilov & Hutter 2019, decoupled weight
// decay) in its CPU default (amsgrad=False, maximize=False, foreach=False, fused=False),
// operation by operation and with the same float32 roundings:
//   p *= 1 − lr·wd                         (skipped when wd = 0, as torch does)
//   m = lerp(m, g, 1 − β1)                 (torch's exp_avg.lerp_; = β1 m + (1−β1) g)
//   v = v·β2 + ((1 − β2)·g)·g              (exp_avg_sq.mul_(β2).addcmul_(g, g, 1 − β2); fused)
//   denom = sqrt(v) / sqrt(1 − β2^step) + eps
//   p += (−lr / (1 − β1^step))·m / denom   (addcdiv_)
// Scalar coefficients are computed in double, as Python does, then rounded to float.
//
// sgd_step follows torch.optim.SGD (momentum, dampening, nesterov, weight decay):
//   d = g + wd·p;  buf = first ? d : momentum·buf + (1 − dampening)·d
//   d = nesterov ? d + momentum·buf : buf   (only when momentum ≠ 0)
//   p += −lr·d
//
// Where torch's vectorized CPU kernels fuse a multiply-add (lerp, addcmul, add with
// alpha) the AVX levels use FMA too; elsewhere contraction is off. On AVX2 / AVX-512,
// SGD and AdamW's moments m, v then equal torch 2.13's bit for bit (test/optim.test.ts
// checks a fixture made by real torch). AdamW's parameter can differ in the last bit:
// torch's CPU sqrt (MKL VML) is not correctly rounded (≤ 0.75 ulp) and ours is. The
// portable level computes the same expressions without FMA (a few float ulps apart).
#pragma once
#include <cstdint>

namespace mstar {

struct AdamWHyperparams {
  double lr;            // ≥ 0
  double beta1;         // [0, 1)
  double beta2;         // [0, 1)
  double eps;           // > 0
  double weight_decay;  // ≥ 0
  int64_t step;         // ≥ 1: the step being taken (1 on the first call)
};

// param, m, v updated in place; all [n]; no overlap between them or with grad.
void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWHyperparams& h);

struct SgdHyperparams {
  double lr;            // ≥ 0
  double momentum;      // ≥ 0
  double dampening;     // [0, 1]
  double weight_decay;  // ≥ 0
  bool nesterov;        // needs momentum > 0 and dampening = 0
  bool first;           // first step: the buffer is set to the (decayed) gradient
};

// param (and momentum_buffer, needed when momentum ≠ 0, else ignored) updated in place.
void sgd_step(float* param, const float* grad, float* momentum_buffer, int64_t n, const SgdHyperparams& h);

}  // namespace mstar
