// LayerNorm over the last dim, forward and backward: the CUDA twin of cpp/ops/layernorm
// (same contracts as layerNormForward/layerNormBackward in lib/native.ts).
#pragma once
#include <cstdint>

#include "types.cuh"

namespace mstar::cuda {

// y = (x − mean) · rstd · gamma + beta over the last dim of [rows, cols], with
// rstd = 1/sqrt(var + eps) (biased variance). x and y are in `dtype`; gamma, beta
// ([cols], optional: absent means 1 and 0) and the saved mean, rstd ([rows]) are float32,
// as under torch autocast. cols == 0 writes nothing.
void layernorm_forward(Dtype dtype, DeviceSpan x, DeviceSpan gamma, DeviceSpan beta, DeviceSpan y, DeviceSpan mean,
                       DeviceSpan rstd, int64_t rows, int64_t cols, float eps);

// gx (dtype, written) from x, gy (dtype) and the saved mean/rstd. g_gamma and g_beta
// (float32 [cols], optional) are accumulated (+=), summed over rows in a fixed order so
// the result is the same on every run.
void layernorm_backward(Dtype dtype, DeviceSpan x, DeviceSpan gamma, DeviceSpan mean, DeviceSpan rstd, DeviceSpan gy,
                        DeviceSpan gx, DeviceSpan g_gamma, DeviceSpan g_beta, int64_t rows, int64_t cols);

}  // namespace mstar::cuda
