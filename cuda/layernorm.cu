// LayerNorm forward and backward on CUDA (contracts in layernorm.cuh), following the
// llm.c kernels (dev/cuda/layernorm_forward.cu, layernorm_backward.cu) in spirit:
//   forward:  one warp (cols <= 1024) or one block per row; two-pass statistics (mean,
//             then Σ(x − mean)²), which stays accurate when |mean| >> std;
//   backward: the same row groups compute gx = rstd · (g − mean(g) − x̂ · mean(g · x̂)),
//             g = gy · gamma; the parameter gradients are column sums over rows, done
//             deterministically in two kernels: per-chunk partial sums (a 32-column ×
//             8-row block per chunk of rows), then a fixed-order sum over chunks that
//             is added into g_gamma / g_beta. No atomics, so runs are bit-identical.
#include <algorithm>

#include "common.cuh"
#include "layernorm.cuh"

namespace mstar::cuda {
namespace {

template <typename T, int kGroup>
__global__ void __launch_bounds__(kRowBlock)
    layernorm_forward_kernel(const T* x, const float* gamma, const float* beta, T* y, float* mean, float* rstd,
                             int64_t rows, int64_t cols, float eps) {
  const RowWalk<kGroup> walk;
  const float inv_cols = 1.0f / static_cast<float>(cols);
  for (int64_t row = walk.first_row(); row < rows; row += walk.row_step()) {
    const T* xr = x + row * cols;
    float sum = 0.0f;
    for (int64_t c = walk.lane(); c < cols; c += kGroup) sum += to_float(xr[c]);
    const float mu = group_reduce<kGroup>(sum, SumOp{}) * inv_cols;
    float squares = 0.0f;
    for (int64_t c = walk.lane(); c < cols; c += kGroup) {
      const float d = to_float(xr[c]) - mu;
      squares += d * d;
    }
    const float rs = 1.0f / sqrtf(group_reduce<kGroup>(squares, SumOp{}) * inv_cols + eps);
    T* yr = y + row * cols;
    for (int64_t c = walk.lane(); c < cols; c += kGroup) {
      float v = (to_float(xr[c]) - mu) * rs;
      if (gamma != nullptr) v *= gamma[c];
      if (beta != nullptr) v += beta[c];
      yr[c] = from_float<T>(v);
    }
    if (walk.lane() == 0) {
      mean[row] = mu;
      rstd[row] = rs;
    }
  }
}

template <typename T, int kGroup>
__global__ void __launch_bounds__(kRowBlock)
    layernorm_backward_kernel(const T* x, const float* gamma, const float* mean, const float* rstd, const T* gy, T* gx,
                              int64_t rows, int64_t cols) {
  const RowWalk<kGroup> walk;
  const float inv_cols = 1.0f / static_cast<float>(cols);
  for (int64_t row = walk.first_row(); row < rows; row += walk.row_step()) {
    const int64_t base = row * cols;
    const float mu = mean[row];
    const float rs = rstd[row];
    // Σ g and Σ g·x̂ in one reduction.
    Float2 sums{0.0f, 0.0f};
    for (int64_t c = walk.lane(); c < cols; c += kGroup) {
      const float xhat = (to_float(x[base + c]) - mu) * rs;
      const float g = to_float(gy[base + c]) * (gamma != nullptr ? gamma[c] : 1.0f);
      sums.x += g;
      sums.y += g * xhat;
    }
    sums = group_reduce<kGroup>(sums, Sum2Op{});
    const float mean_g = sums.x * inv_cols;
    const float mean_gx = sums.y * inv_cols;
    for (int64_t c = walk.lane(); c < cols; c += kGroup) {
      const float xhat = (to_float(x[base + c]) - mu) * rs;
      const float g = to_float(gy[base + c]) * (gamma != nullptr ? gamma[c] : 1.0f);
      gx[base + c] = from_float<T>(rs * (g - mean_g - xhat * mean_gx));
    }
  }
}

// Parameter gradients, stage 1: block (x: 32 columns, y: 8 row lanes) sums its chunk of
// rows; partial_*[chunk][col].
constexpr int kColTile = 32;
constexpr int kRowLanes = 8;
constexpr int kMaxChunks = 1024;
constexpr int64_t kMinRowsPerChunk = 32;

template <typename T>
__global__ void __launch_bounds__(kColTile* kRowLanes)
    layernorm_param_partial_kernel(const T* x, const float* mean, const float* rstd, const T* gy, float* partial_gamma,
                                   float* partial_beta, int64_t rows, int64_t cols, int64_t rows_per_chunk) {
  const int64_t col = int64_t{blockIdx.x} * kColTile + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t row_begin = chunk * rows_per_chunk;
  const int64_t row_end = row_begin + rows_per_chunk < rows ? row_begin + rows_per_chunk : rows;
  float sum_gamma = 0.0f, sum_beta = 0.0f;
  if (col < cols) {
    for (int64_t r = row_begin + threadIdx.y; r < row_end; r += kRowLanes) {
      const float g = to_float(gy[r * cols + col]);
      sum_gamma += g * (to_float(x[r * cols + col]) - mean[r]) * rstd[r];
      sum_beta += g;
    }
  }
  __shared__ float shared_gamma[kRowLanes][kColTile + 1];
  __shared__ float shared_beta[kRowLanes][kColTile + 1];
  shared_gamma[threadIdx.y][threadIdx.x] = sum_gamma;
  shared_beta[threadIdx.y][threadIdx.x] = sum_beta;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    for (int lane = 1; lane < kRowLanes; ++lane) {
      sum_gamma += shared_gamma[lane][threadIdx.x];
      sum_beta += shared_beta[lane][threadIdx.x];
    }
    partial_gamma[chunk * cols + col] = sum_gamma;
    partial_beta[chunk * cols + col] = sum_beta;
  }
}

// Stage 2: g_gamma[col] += Σ_chunk partial_gamma[chunk][col] (chunks in order).
__global__ void layernorm_param_finalize_kernel(const float* partial_gamma, const float* partial_beta,
                                                float* g_gamma, float* g_beta, int64_t chunks, int64_t cols) {
  for (int64_t col = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; col < cols;
       col += int64_t{gridDim.x} * blockDim.x) {
    float sum_gamma = 0.0f, sum_beta = 0.0f;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      sum_gamma += partial_gamma[chunk * cols + col];
      sum_beta += partial_beta[chunk * cols + col];
    }
    if (g_gamma != nullptr) g_gamma[col] += sum_gamma;
    if (g_beta != nullptr) g_beta[col] += sum_beta;
  }
}

template <typename T>
void run_forward(const DeviceSpan& x, const DeviceSpan& gamma, const DeviceSpan& beta, const DeviceSpan& y,
                 const DeviceSpan& mean, const DeviceSpan& rstd, int64_t rows, int64_t cols, float eps) {
  const auto* xp = static_cast<const T*>(x.data);
  auto* yp = static_cast<T*>(y.data);
  const auto* gp = static_cast<const float*>(gamma.data);
  const auto* bp = static_cast<const float*>(beta.data);
  auto* mp = static_cast<float*>(mean.data);
  auto* rp = static_cast<float*>(rstd.data);
  if (cols <= kRowLongThreshold) {
    launch("layernorm_forward", layernorm_forward_kernel<T, 32>, dim3(row_grid(rows, RowWalk<32>::kRowsPerBlock)),
           dim3(kRowBlock), 0, xp, gp, bp, yp, mp, rp, rows, cols, eps);
  } else {
    launch("layernorm_forward", layernorm_forward_kernel<T, kRowBlock>,
           dim3(row_grid(rows, RowWalk<kRowBlock>::kRowsPerBlock)), dim3(kRowBlock), 0, xp, gp, bp, yp, mp, rp, rows,
           cols, eps);
  }
}

template <typename T>
void run_backward(const DeviceSpan& x, const DeviceSpan& gamma, const DeviceSpan& mean, const DeviceSpan& rstd,
                  const DeviceSpan& gy, const DeviceSpan& gx, const DeviceSpan& g_gamma, const DeviceSpan& g_beta,
                  int64_t rows, int64_t cols) {
  const auto* xp = static_cast<const T*>(x.data);
  const auto* gp = static_cast<const float*>(gamma.data);
  const auto* mp = static_cast<const float*>(mean.data);
  const auto* rp = static_cast<const float*>(rstd.data);
  const auto* gyp = static_cast<const T*>(gy.data);
  auto* gxp = static_cast<T*>(gx.data);
  if (cols <= kRowLongThreshold) {
    launch("layernorm_backward", layernorm_backward_kernel<T, 32>, dim3(row_grid(rows, RowWalk<32>::kRowsPerBlock)),
           dim3(kRowBlock), 0, xp, gp, mp, rp, gyp, gxp, rows, cols);
  } else {
    launch("layernorm_backward", layernorm_backward_kernel<T, kRowBlock>,
           dim3(row_grid(rows, RowWalk<kRowBlock>::kRowsPerBlock)), dim3(kRowBlock), 0, xp, gp, mp, rp, gyp, gxp,
           rows, cols);
  }
  if (g_gamma.data == nullptr && g_beta.data == nullptr) return;

  const int64_t rows_per_chunk = std::max(kMinRowsPerChunk, ceil_div(rows, kMaxChunks));
  const int64_t chunks = ceil_div(rows, rows_per_chunk);
  const int64_t partial_elems = mul_size(chunks, cols, "layerNormBackward");
  DeviceScratch partial(static_cast<size_t>(mul_size(partial_elems, 2 * sizeof(float), "layerNormBackward")));
  float* partial_gamma = partial.as<float>();
  float* partial_beta = partial_gamma + partial_elems;
  launch("layernorm_param_partial", layernorm_param_partial_kernel<T>,
         dim3(static_cast<unsigned>(ceil_div(cols, kColTile)), static_cast<unsigned>(chunks)),
         dim3(kColTile, kRowLanes), 0, xp, mp, rp, gyp, partial_gamma, partial_beta, rows, cols, rows_per_chunk);
  launch("layernorm_param_finalize", layernorm_param_finalize_kernel, dim3(grid_for(cols, 256)), dim3(256), 0,
         static_cast<const float*>(partial_gamma), static_cast<const float*>(partial_beta),
         static_cast<float*>(g_gamma.data), static_cast<float*>(g_beta.data), chunks, cols);
}

void check_args(const char* op, Dtype dtype, int64_t rows, int64_t cols) {
  MSTAR_CHECK(dtype == Dtype::F32 || dtype == Dtype::BF16, Unsupported,
              op << ": CUDA supports float32 and bfloat16, not " << dtype_name(dtype));
  MSTAR_CHECK(rows >= 0 && cols >= 0, Argument, op << ": rows and cols must be >= 0");
  // Rows are walked in 64-bit; the column count goes into grid.x as 32-column tiles.
  MSTAR_CHECK(cols < (int64_t{1} << 31), Unsupported, op << ": cols above 2^31 are not supported on CUDA");
}

}  // namespace

void layernorm_forward(Dtype dtype, DeviceSpan x, DeviceSpan gamma, DeviceSpan beta, DeviceSpan y, DeviceSpan mean,
                       DeviceSpan rstd, int64_t rows, int64_t cols, float eps) {
  check_args("layerNormForward", dtype, rows, cols);
  MSTAR_CHECK(eps >= 0.0f, Argument, "layerNormForward: eps must be >= 0");
  const int64_t n = mul_size(rows, cols, "layerNormForward");
  if (n == 0) return;
  require_span(x, n, "layerNormForward: x");
  require_span(y, n, "layerNormForward: y");
  if (gamma.data != nullptr) require_span(gamma, cols, "layerNormForward: gamma");
  if (beta.data != nullptr) require_span(beta, cols, "layerNormForward: beta");
  require_span(mean, rows, "layerNormForward: mean");
  require_span(rstd, rows, "layerNormForward: rstd");
  if (dtype == Dtype::BF16) run_forward<bfloat16>(x, gamma, beta, y, mean, rstd, rows, cols, eps);
  else run_forward<float>(x, gamma, beta, y, mean, rstd, rows, cols, eps);
}

void layernorm_backward(Dtype dtype, DeviceSpan x, DeviceSpan gamma, DeviceSpan mean, DeviceSpan rstd, DeviceSpan gy,
                        DeviceSpan gx, DeviceSpan g_gamma, DeviceSpan g_beta, int64_t rows, int64_t cols) {
  check_args("layerNormBackward", dtype, rows, cols);
  const int64_t n = mul_size(rows, cols, "layerNormBackward");
  if (n == 0) return;
  require_span(x, n, "layerNormBackward: x");
  require_span(gy, n, "layerNormBackward: gy");
  require_span(gx, n, "layerNormBackward: gx");
  if (gamma.data != nullptr) require_span(gamma, cols, "layerNormBackward: gamma");
  if (g_gamma.data != nullptr) require_span(g_gamma, cols, "layerNormBackward: gGamma");
  if (g_beta.data != nullptr) require_span(g_beta, cols, "layerNormBackward: gBeta");
  require_span(mean, rows, "layerNormBackward: mean");
  require_span(rstd, rows, "layerNormBackward: rstd");
  if (dtype == Dtype::BF16) run_backward<bfloat16>(x, gamma, mean, rstd, gy, gx, g_gamma, g_beta, rows, cols);
  else run_backward<float>(x, gamma, mean, rstd, gy, gx, g_gamma, g_beta, rows, cols);
}

}  // namespace mstar::cuda
