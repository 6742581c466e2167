// Depthwise 2-D convolution over channels-last images, stride 1, "same" zero padding
// (kernel_h/2, kernel_w/2; odd kernels), as torch.nn.Conv2d(C, C, (kh, kw),
// padding=(kh//2, kw//2), groups=C) applied to the [B, C, H, W] view of [B, H, W, C]:
//
//   y[b, r, x, c] = bias[c] + Σ_{i<kh, j<kw} w[c, i, j] · x[b, r + i − kh/2, x + j − kw/2, c]
//
// Two mSTAR aggregator pieces are this op (TransMIL, Shao et al. 2021; nystrom-attention):
// - PPEG: depthwise 7×7, 5×5 and 3×3 convs of the token grid [1, √N, √N, 512];
// - the Nyström residual: Conv2d(heads, heads, (33, 1), groups=heads) over values
//   [1, heads, n, d], which is this op on [1, n, 1, heads·d] with every channel of a
//   head sharing that head's 33 taps.
//
// Row ranges make the op usable on row chunks of a long sequence: each call handles
// output rows [row_begin, row_end) of every batch image, and each buffer holds only
// rows [row0, row0 + rows) of the image (pixel stride `stride` >= C elements, so a view
// into a wider buffer, e.g. the v columns of a fused qkv, is read in place). Rows of the
// image outside [0, H) are zero padding; rows inside the image that a call needs must
// be in the buffer (the binding checks).
//
// Memory: none beyond a transposed copy of the weights (kh·kw·C floats) and, for the
// weight gradient, per-task accumulators. The weight gradient is split over channel
// blocks only, so its summation order, and therefore its value, is the same for any
// thread count.
#pragma once
#include <cstdint>

namespace mstar {

struct DwConvBuffer {
  float* data = nullptr;  // element (b, r, x, c) at data[((b·rows + r − row0)·W + x)·stride + c]
  int64_t row0 = 0;
  int64_t rows = 0;
  int64_t stride = 0;
};

struct DwConv2dParams {
  int64_t batch = 0, height = 0, width = 0, channels = 0;  // B, H, W, C
  int64_t kernel_h = 1, kernel_w = 1;                      // odd
  int64_t row_begin = 0, row_end = 0;                      // rows handled by this call
  const float* weight = nullptr;  // [C, kh, kw]
  const float* bias = nullptr;    // [C] or nullptr (forward only)
};

// y rows [row_begin, row_end) = conv(x) + bias (written).
void dwconv2d_forward(const DwConv2dParams& p, const DwConvBuffer& x, const DwConvBuffer& y);
// gx rows [row_begin, row_end) = Σ_{i,j} w[c, i, j] · gy[r − i + kh/2, x − j + kw/2] (written).
void dwconv2d_backward_input(const DwConv2dParams& p, const DwConvBuffer& gy, const DwConvBuffer& gx);
// g_weight[c, i, j] += Σ over output rows [row_begin, row_end) of gy · x(shifted);
// g_bias[c] += Σ gy (either may be nullptr).
void dwconv2d_backward_weight(const DwConv2dParams& p, const DwConvBuffer& x, const DwConvBuffer& gy, float* g_weight,
                              float* g_bias);

}  // namespace mstar
