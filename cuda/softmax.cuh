// Row softmax and log-softmax, forward and backward: the CUDA twin of cpp/ops/softmax
// (same contracts as softmaxForward/softmaxBackward in lib/native.ts).
#pragma once
#include <cstdint>

#include "types.cuh"

namespace mstar::cuda {

// y = softmax(x) (or log-softmax when `log`) over the last dim of [rows, cols]; x, y in
// `dtype`. -Infinity entries get probability 0; a row that is entirely -Infinity gives
// NaN, as in torch.
void softmax_forward(Dtype dtype, DeviceSpan x, DeviceSpan y, int64_t rows, int64_t cols, bool log);

// From the forward output y and the output gradient gy:
//   softmax:     gx = y · (gy − Σ gy·y)
//   log-softmax: gx = gy − exp(y) · Σ gy
void softmax_backward(Dtype dtype, DeviceSpan y, DeviceSpan gy, DeviceSpan gx, int64_t rows, int64_t cols, bool log);

}  // namespace mstar::cuda
