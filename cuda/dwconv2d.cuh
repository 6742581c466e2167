// Depthwise 2-D convolution over channels-last images, stride 1, "same" zero padding,
// forward and both backward passes: the CUDA twin of cpp/ops/dwconv2d (same contracts as
// dwconv2dForward/BackwardInput/BackwardWeight in lib/native.ts):
//
//   y[b, r, x, c] = bias[c] + Σ_{i<kh, j<kw} w[c, i, j] · x[b, r + i − kh/2, x + j − kw/2, c]
//
// (TransMIL's PPEG convs and the Nyström residual conv). float32 only, like the CPU
// kernel. Every call handles output rows [row_begin, row_end) of every image, and each
// buffer holds only image rows [row0, row0 + rows), pixels `stride` elements apart, so
// row chunks of a long sequence and views into a wider buffer work in place.
#pragma once
#include <cstdint>

#include "types.cuh"

namespace mstar::cuda {

// Element (b, r, x, c) is data[((b·rows + r − row0)·W + x)·stride + c].
struct DwConvBuffer {
  DeviceSpan data;
  int64_t row0 = 0;
  int64_t rows = 0;
  int64_t stride = 0;  // >= C
};

struct DwConv2dParams {
  int64_t batch = 0, height = 0, width = 0, channels = 0;  // B, H, W, C
  int64_t kernel_h = 1, kernel_w = 1;                      // odd
  int64_t row_begin = 0, row_end = 0;                      // output rows handled by this call
  DeviceSpan weight;  // [C, kh, kw]
  DeviceSpan bias;    // [C], optional (forward only)
};

// y rows [row_begin, row_end) = conv(x) + bias (written). x must hold the rows the taps
// reach inside the image: [row_begin − kh/2, row_end + kh/2) ∩ [0, H).
void dwconv2d_forward(const DwConv2dParams& p, const DwConvBuffer& x, const DwConvBuffer& y);

// gx rows [row_begin, row_end) = Σ_{i,j} w[c, i, j] · gy[r − i + kh/2, x − j + kw/2] (written):
// the forward with mirrored taps, which is the transposed convolution here.
void dwconv2d_backward_input(const DwConv2dParams& p, const DwConvBuffer& gy, const DwConvBuffer& gx);

// g_weight [C, kh, kw] += Σ over output rows [row_begin, row_end) of gy · x(shifted);
// g_bias [C] += Σ gy. Either may be absent. Summed over fixed pixel chunks, then the chunks
// in order: no atomics, so every run gives the same bits.
void dwconv2d_backward_weight(const DwConv2dParams& p, const DwConvBuffer& x, const DwConvBuffer& gy,
                              DeviceSpan g_weight, DeviceSpan g_bias);

}  // namespace mstar::cuda
