// Fused AdamW and SGD steps over flat float32 device buffers: the CUDA twin of
// cpp/ops/optim (same contracts as adamwStep/sgdStep in lib/native.ts).
//
// Same formulas, same operation order and the same float32 roundings as the CPU kernels
// on the AVX levels (FMA where torch fuses a multiply-add, correctly rounded sqrt and
// division, no other contraction); scalar coefficients are computed on the host in
// double, then rounded to float, by the same expressions. So on AVX2 / AVX-512 hosts
// the device results equal the CPU's bit for bit.
//
// adamw_step (torch.optim.AdamW, amsgrad=False):
//   p *= 1 − lr·wd                         (skipped when wd = 0)
//   m = lerp(m, g, 1 − β1)
//   v = v·β2 + ((1 − β2)·g)·g
//   p += (−lr / (1 − β1^step))·m / (sqrt(v) / sqrt(1 − β2^step) + eps)
// sgd_step (torch.optim.SGD):
//   d = g + wd·p;  buf = first ? d : momentum·buf + (1 − dampening)·d
//   d = nesterov ? d + momentum·buf : buf   (only when momentum ≠ 0)
//   p += −lr·d
#pragma once
#include <cstdint>

#include "types.cuh"

namespace mstar::cuda {

struct AdamWParams {
  DeviceSpan param, grad, m, v;  // float32 [n] each; param, m, v updated in place
  int64_t n = 0;
  double lr = 0;            // >= 0
  double beta1 = 0.9;       // [0, 1)
  double beta2 = 0.999;     // [0, 1)
  double eps = 1e-8;        // > 0
  double weight_decay = 0;  // >= 0
  int64_t step = 1;         // >= 1: the step being taken
};

// Checks the hyper-parameters (ERR_ARGUMENT), the extents (ERR_SHAPE) and that no
// updated buffer overlaps another operand (ERR_ARGUMENT), then queues one kernel.
void adamw_step(const AdamWParams& p);

struct SgdParams {
  DeviceSpan param, grad;  // float32 [n]; param updated in place
  DeviceSpan momentum_buffer;  // float32 [n], updated; needed when momentum ≠ 0, else ignored
  int64_t n = 0;
  double lr = 0;            // >= 0
  double momentum = 0;      // >= 0
  double dampening = 0;     // [0, 1]
  double weight_decay = 0;  // >= 0
  bool nesterov = false;    // needs momentum > 0 and dampening = 0
  bool first = false;       // first step: the buffer is set to the (decayed) gradient
};

void sgd_step(const SgdParams& p);

}  // namespace mstar::cuda
