// Row softmax / log-softmax on CUDA (contracts in softmax.cuh).
// A row is handled by a warp (rows up to 1024 columns, eight rows per block) or by a
// whole block (longer rows). Forward makes two passes over the row: an online
// max-and-sum (Milakov & Gimelshein, "Online normalizer calculation for softmax",
// 2018), then the write; backward makes one reduction pass and one write pass.
// Everything is computed in float32 whatever the storage type.
#include "common.cuh"
#include "softmax.cuh"

namespace mstar::cuda {
namespace {

template <typename T, int kGroup>
__global__ void __launch_bounds__(kRowBlock) softmax_forward_kernel(const T* x, T* y, int64_t rows, int64_t cols,
                                                                     bool log) {
  const RowWalk<kGroup> walk;
  for (int64_t row = walk.first_row(); row < rows; row += walk.row_step()) {
    const T* xr = x + row * cols;
    MaxSum s{-INFINITY, 0.0f};
    for (int64_t c = walk.lane(); c < cols; c += kGroup) s = online_add(s, to_float(xr[c]));
    s = group_reduce<kGroup>(s, MaxSumMerge{});
    T* yr = y + row * cols;
    if (log) {
      const float shift = s.max + logf(s.sum);
      for (int64_t c = walk.lane(); c < cols; c += kGroup) yr[c] = from_float<T>(to_float(xr[c]) - shift);
    } else {
      const float inv_sum = 1.0f / s.sum;
      for (int64_t c = walk.lane(); c < cols; c += kGroup) {
        yr[c] = from_float<T>(expf(to_float(xr[c]) - s.max) * inv_sum);
      }
    }
  }
}

template <typename T, int kGroup>
__global__ void __launch_bounds__(kRowBlock) softmax_backward_kernel(const T* y, const T* gy, T* gx, int64_t rows,
                                                                      int64_t cols, bool log) {
  const RowWalk<kGroup> walk;
  for (int64_t row = walk.first_row(); row < rows; row += walk.row_step()) {
    const int64_t base = row * cols;
    // softmax needs Σ gy·y, log-softmax Σ gy.
    float dot = 0.0f;
    for (int64_t c = walk.lane(); c < cols; c += kGroup) {
      const float g = to_float(gy[base + c]);
      dot += log ? g : g * to_float(y[base + c]);
    }
    dot = group_reduce<kGroup>(dot, SumOp{});
    for (int64_t c = walk.lane(); c < cols; c += kGroup) {
      const float yv = to_float(y[base + c]);
      const float g = to_float(gy[base + c]);
      gx[base + c] = from_float<T>(log ? g - expf(yv) * dot : yv * (g - dot));
    }
  }
}

template <typename T>
void launch_forward(const DeviceSpan& x, const DeviceSpan& y, int64_t rows, int64_t cols, bool log) {
  const auto* xp = static_cast<const T*>(x.data);
  auto* yp = static_cast<T*>(y.data);
  if (cols <= kRowLongThreshold) {
    const dim3 grid(row_grid(rows, RowWalk<32>::kRowsPerBlock));
    launch("softmax_forward", softmax_forward_kernel<T, 32>, grid, dim3(kRowBlock), 0, xp, yp, rows, cols, log);
  } else {
    const dim3 grid(row_grid(rows, RowWalk<kRowBlock>::kRowsPerBlock));
    launch("softmax_forward", softmax_forward_kernel<T, kRowBlock>, grid, dim3(kRowBlock), 0, xp, yp, rows, cols, log);
  }
}

template <typename T>
void launch_backward(const DeviceSpan& y, const DeviceSpan& gy, const DeviceSpan& gx, int64_t rows, int64_t cols,
                     bool log) {
  const auto* yp = static_cast<const T*>(y.data);
  const auto* gyp = static_cast<const T*>(gy.data);
  auto* gxp = static_cast<T*>(gx.data);
  if (cols <= kRowLongThreshold) {
    const dim3 grid(row_grid(rows, RowWalk<32>::kRowsPerBlock));
    launch("softmax_backward", softmax_backward_kernel<T, 32>, grid, dim3(kRowBlock), 0, yp, gyp, gxp, rows, cols, log);
  } else {
    const dim3 grid(row_grid(rows, RowWalk<kRowBlock>::kRowsPerBlock));
    launch("softmax_backward", softmax_backward_kernel<T, kRowBlock>, grid, dim3(kRowBlock), 0, yp, gyp, gxp, rows, cols,
           log);
  }
}

void check_args(const char* op, Dtype dtype, int64_t rows, int64_t cols) {
  MSTAR_CHECK(dtype == Dtype::F32 || dtype == Dtype::BF16, Unsupported,
              op << ": CUDA supports float32 and bfloat16, not " << dtype_name(dtype));
  MSTAR_CHECK(rows >= 0 && cols >= 0, Argument, op << ": rows and cols must be >= 0");
}

}  // namespace

void softmax_forward(Dtype dtype, DeviceSpan x, DeviceSpan y, int64_t rows, int64_t cols, bool log) {
  check_args("softmaxForward", dtype, rows, cols);
  const int64_t n = mul_size(rows, cols, "softmaxForward");
  require_span(x, n, "softmaxForward: x");
  require_span(y, n, "softmaxForward: y");
  if (n == 0) return;
  if (dtype == Dtype::BF16) launch_forward<bfloat16>(x, y, rows, cols, log);
  else launch_forward<float>(x, y, rows, cols, log);
}

void softmax_backward(Dtype dtype, DeviceSpan y, DeviceSpan gy, DeviceSpan gx, int64_t rows, int64_t cols, bool log) {
  check_args("softmaxBackward", dtype, rows, cols);
  const int64_t n = mul_size(rows, cols, "softmaxBackward");
  require_span(y, n, "softmaxBackward: y");
  require_span(gy, n, "softmaxBackward: gy");
  require_span(gx, n, "softmaxBackward: gx");
  if (n == 0) return;
  if (dtype == Dtype::BF16) launch_backward<bfloat16>(y, gy, gx, rows, cols, log);
  else launch_backward<float>(y, gy, gx, rows, cols, log);
}

}  // namespace mstar::cuda
