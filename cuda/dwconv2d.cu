// Depthwise 2-D convolution on CUDA (contracts in dwconv2d.cuh).
//   forward / input gradient: one thread per output element, channels fastest so a warp
//             reads 32 neighbouring channels of a pixel; the weights are first transposed
//             to taps-major [kh·kw, C] so their loads coalesce the same way. The input
//             gradient is the forward with the taps mirrored and no bias.
//   weight gradient: blocks of 32 channels × 8 pixel lanes sum gy · x(shifted) over a
//             chunk of output pixels for one tap (grid.z; the bias is one more "tap" whose
//             input is 1), then a second kernel adds the chunks in order into g_weight and
//             g_bias (deterministic, as in layernorm.cu).
// Memory beyond the outputs: the transposed weights (kh·kw·C floats) and the chunk
// partial sums (at most kMaxChunks·(kh·kw + 1)·C floats).
#include <algorithm>
#include <string>

#include "common.cuh"
#include "dwconv2d.cuh"

namespace mstar::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxChunks = 64;
constexpr int64_t kMinPixelsPerChunk = 256;

// Sizes as the kernels see them.
struct Geometry {
  int64_t batch, height, width, channels, kernel_h, kernel_w;
  int64_t row_begin, rows;  // output rows [row_begin, row_begin + rows)
};

struct Image {
  float* data;
  int64_t row0, rows, stride;
  __device__ __forceinline__ float* pixel(const Geometry& g, int64_t b, int64_t r, int64_t x) const {
    return data + ((b * rows + (r - row0)) * g.width + x) * stride;
  }
};

// wt[t, c] = w[c, t] for the taps t of a [C, taps] weight.
__global__ void transpose_weights_kernel(const float* weight, float* wt, int64_t channels, int64_t taps) {
  const int64_t n = channels * taps;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = i % channels, t = i / channels;
    wt[i] = weight[c * taps + t];
  }
}

// One output element per thread and step: the forward (flip = false) or the input
// gradient (flip = true: taps mirrored, no bias).
__global__ void dwconv2d_kernel(Geometry g, const float* wt, const float* bias, Image in, Image out, bool flip) {
  const int64_t n = g.batch * g.rows * g.width * g.channels;
  const int64_t ph = g.kernel_h / 2, pw = g.kernel_w / 2;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = i % g.channels;
    int64_t rest = i / g.channels;
    const int64_t x = rest % g.width;
    rest /= g.width;
    const int64_t r = g.row_begin + rest % g.rows, b = rest / g.rows;
    float acc = bias != nullptr ? bias[c] : 0.0f;
    for (int64_t ti = 0; ti < g.kernel_h; ++ti) {
      const int64_t rr = flip ? r - ti + ph : r + ti - ph;
      if (rr < 0 || rr >= g.height) continue;
      for (int64_t tj = 0; tj < g.kernel_w; ++tj) {
        const int64_t xx = flip ? x - tj + pw : x + tj - pw;
        if (xx < 0 || xx >= g.width) continue;
        acc += wt[(ti * g.kernel_w + tj) * g.channels + c] * in.pixel(g, b, rr, xx)[c];
      }
    }
    out.pixel(g, b, r, x)[c] = acc;
  }
}

// partial[chunk, z, c] = Σ over the chunk's output pixels of gy · x shifted by tap
// first_tap + z (tap kh·kw is the bias: x taken as 1). Block (kSumCols channels,
// kSumLanes pixel lanes); grid (channel tiles, chunks, taps handled).
__global__ void __launch_bounds__(kSumCols* kSumLanes)
    dwconv2d_weight_partial_kernel(Geometry g, Image x, Image gy, float* partial, int64_t pixels_per_chunk,
                                   int64_t first_tap) {
  const int64_t c = int64_t{blockIdx.x} * kSumCols + threadIdx.x;
  const int64_t chunk = blockIdx.y, z = blockIdx.z, tap = first_tap + z;
  const int64_t taps = g.kernel_h * g.kernel_w;
  const int64_t di = tap / g.kernel_w - g.kernel_h / 2, dj = tap % g.kernel_w - g.kernel_w / 2;
  const int64_t pixels = g.batch * g.rows * g.width;
  const int64_t begin = chunk * pixels_per_chunk;
  const int64_t end = begin + pixels_per_chunk < pixels ? begin + pixels_per_chunk : pixels;
  float sum = 0.0f;
  if (c < g.channels) {
    for (int64_t q = begin + threadIdx.y; q < end; q += kSumLanes) {
      const int64_t col = q % g.width, rest = q / g.width;
      const int64_t r = g.row_begin + rest % g.rows, b = rest / g.rows;
      const float grad = gy.pixel(g, b, r, col)[c];
      if (tap == taps) {
        sum += grad;
        continue;
      }
      const int64_t rr = r + di, xx = col + dj;
      if (rr < 0 || rr >= g.height || xx < 0 || xx >= g.width) continue;
      sum += grad * x.pixel(g, b, rr, xx)[c];
    }
  }
  sum = sum_over_lanes(sum);
  if (threadIdx.y == 0 && c < g.channels) partial[(chunk * gridDim.z + z) * g.channels + c] = sum;
}

// g_weight[c, tap] / g_bias[c] += Σ_chunk partial[chunk, z, c], chunks in order.
__global__ void dwconv2d_weight_finalize_kernel(const float* partial, float* g_weight, float* g_bias, int64_t chunks,
                                                int64_t channels, int64_t taps, int64_t first_tap, int64_t tap_count) {
  const int64_t n = channels * tap_count;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = i % channels, z = i / channels, tap = first_tap + z;
    float sum = 0.0f;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) sum += partial[(chunk * tap_count + z) * channels + c];
    if (tap < taps) g_weight[c * taps + tap] += sum;
    else g_bias[c] += sum;
  }
}

Geometry checked_geometry(const char* op, const DwConv2dParams& p) {
  MSTAR_CHECK(p.batch >= 0 && p.height >= 0 && p.width >= 0 && p.channels >= 0, Argument,
              op << ": B, H, W and C must be >= 0");
  MSTAR_CHECK(p.kernel_h >= 1 && p.kernel_w >= 1 && p.kernel_h % 2 == 1 && p.kernel_w % 2 == 1, Shape,
              op << ": kernel sizes must be odd and >= 1, got " << p.kernel_h << "x" << p.kernel_w);
  mul_size(mul_size(mul_size(p.batch, p.height, op), p.width, op), p.channels, op);
  MSTAR_CHECK(p.row_begin >= 0 && p.row_begin <= p.row_end && p.row_end <= p.height, Range,
              op << ": rows [" << p.row_begin << ", " << p.row_end << ") are not inside [0, H = " << p.height << ")");
  const int64_t taps = mul_size(p.kernel_h, p.kernel_w, op);
  require_span(p.weight, mul_size(p.channels, taps, op), (std::string(op) + ": weight").c_str());
  return {p.batch, p.height, p.width, p.channels, p.kernel_h, p.kernel_w, p.row_begin, p.row_end - p.row_begin};
}

// Checks that `buf` holds image rows [need_begin, need_end) ∩ [0, H) and every element of
// its pixels; returns it as the kernels see it.
Image checked_image(const char* op, const char* name, const DwConv2dParams& p, const DwConvBuffer& buf,
                    int64_t need_begin, int64_t need_end) {
  MSTAR_CHECK(buf.row0 >= 0 && buf.rows >= 0, Argument, op << ": " << name << " row0 and rows must be >= 0");
  MSTAR_CHECK(buf.stride >= p.channels, Shape, op << ": " << name << " stride must be >= C");
  MSTAR_CHECK(add_size(buf.row0, buf.rows, op) <= p.height, Range,
              op << ": " << name << " rows extend beyond the image height");
  need_begin = std::max<int64_t>(need_begin, 0);
  need_end = std::min(need_end, p.height);
  MSTAR_CHECK(need_begin >= need_end || (need_begin >= buf.row0 && need_end <= buf.row0 + buf.rows), Range,
              op << ": " << name << " holds rows [" << buf.row0 << ", " << buf.row0 + buf.rows
                 << ") but the call needs rows [" << need_begin << ", " << need_end << ")");
  const int64_t pixels = mul_size(mul_size(p.batch, buf.rows, op), p.width, op);
  require_span(buf.data, strided_extent({{pixels, buf.stride}, {p.channels, 1}}, op),
               (std::string(op) + ": " + name).c_str());
  return {static_cast<float*>(buf.data.data), buf.row0, buf.rows, buf.stride};
}

bool nothing_to_do(const Geometry& g) { return g.batch == 0 || g.rows == 0 || g.width == 0 || g.channels == 0; }

// Forward and input gradient: the same kernel on taps-major weights.
void run_conv(const char* op, const DwConv2dParams& p, const Geometry& g, const Image& in, const Image& out,
              bool flip) {
  if (nothing_to_do(g)) return;
  const int64_t taps = g.kernel_h * g.kernel_w;
  const int64_t weights = mul_size(g.channels, taps, op);
  DeviceScratch wt(static_cast<size_t>(mul_size(weights, sizeof(float), op)));
  launch("dwconv2d_transpose_weights", transpose_weights_kernel, dim3(grid_for(weights, kThreads)), dim3(kThreads), 0,
         static_cast<const float*>(p.weight.data), wt.as<float>(), g.channels, taps);
  const int64_t n = mul_size(mul_size(mul_size(g.batch, g.rows, op), g.width, op), g.channels, op);
  launch(flip ? "dwconv2d_backward_input" : "dwconv2d_forward", dwconv2d_kernel, dim3(grid_for(n, kThreads)),
         dim3(kThreads), 0, g, static_cast<const float*>(wt.as<float>()),
         flip ? nullptr : static_cast<const float*>(p.bias.data), in, out, flip);
}

}  // namespace

void dwconv2d_forward(const DwConv2dParams& p, const DwConvBuffer& x, const DwConvBuffer& y) {
  const char* op = "dwconv2dForward";
  const Geometry g = checked_geometry(op, p);
  const int64_t ph = p.kernel_h / 2;
  if (p.bias.data != nullptr) require_span(p.bias, p.channels, "dwconv2dForward: bias");
  const Image in = checked_image(op, "x", p, x, p.row_begin - ph, p.row_end + ph);
  const Image out = checked_image(op, "y", p, y, p.row_begin, p.row_end);
  run_conv(op, p, g, in, out, false);
}

void dwconv2d_backward_input(const DwConv2dParams& p, const DwConvBuffer& gy, const DwConvBuffer& gx) {
  const char* op = "dwconv2dBackwardInput";
  const Geometry g = checked_geometry(op, p);
  const int64_t ph = p.kernel_h / 2;
  const Image in = checked_image(op, "gy", p, gy, p.row_begin - ph, p.row_end + ph);
  const Image out = checked_image(op, "gx", p, gx, p.row_begin, p.row_end);
  run_conv(op, p, g, in, out, true);
}

void dwconv2d_backward_weight(const DwConv2dParams& p, const DwConvBuffer& x, const DwConvBuffer& gy,
                              DeviceSpan g_weight, DeviceSpan g_bias) {
  const char* op = "dwconv2dBackwardWeight";
  const Geometry g = checked_geometry(op, p);
  const int64_t ph = p.kernel_h / 2, taps = p.kernel_h * p.kernel_w;
  const Image xi = checked_image(op, "x", p, x, p.row_begin - ph, p.row_end + ph);
  const Image gi = checked_image(op, "gy", p, gy, p.row_begin, p.row_end);
  if (g_weight.data != nullptr) {
    require_span(g_weight, mul_size(p.channels, taps, op), "dwconv2dBackwardWeight: gWeight");
  }
  if (g_bias.data != nullptr) require_span(g_bias, p.channels, "dwconv2dBackwardWeight: gBias");
  if (nothing_to_do(g) || (g_weight.data == nullptr && g_bias.data == nullptr)) return;
  // Taps [first_tap, first_tap + tap_count) of kh·kw weight taps and the bias "tap".
  const int64_t first_tap = g_weight.data != nullptr ? 0 : taps;
  const int64_t tap_count = (g_bias.data != nullptr ? taps + 1 : taps) - first_tap;
  MSTAR_CHECK(tap_count <= 65535, Unsupported, op << ": kernels above 65534 taps are not supported on CUDA");
  MSTAR_CHECK(ceil_div(g.channels, kSumCols) < (int64_t{1} << 31), Unsupported, op << ": too many channels");

  const int64_t pixels = g.batch * g.rows * g.width;
  const int64_t pixels_per_chunk = std::max(kMinPixelsPerChunk, ceil_div(pixels, kMaxChunks));
  const int64_t chunks = ceil_div(pixels, pixels_per_chunk);
  const int64_t partial_elems = mul_size(mul_size(chunks, tap_count, op), g.channels, op);
  DeviceScratch partial(static_cast<size_t>(mul_size(partial_elems, sizeof(float), op)));
  launch("dwconv2d_weight_partial", dwconv2d_weight_partial_kernel,
         dim3(static_cast<unsigned>(ceil_div(g.channels, kSumCols)), static_cast<unsigned>(chunks),
              static_cast<unsigned>(tap_count)),
         dim3(kSumCols, kSumLanes), 0, g, xi, gi, partial.as<float>(), pixels_per_chunk, first_tap);
  launch("dwconv2d_weight_finalize", dwconv2d_weight_finalize_kernel,
         dim3(grid_for(g.channels * tap_count, kThreads)), dim3(kThreads), 0,
         static_cast<const float*>(partial.as<float>()), static_cast<float*>(g_weight.data),
         static_cast<float*>(g_bias.data), chunks, g.channels, taps, first_tap, tap_count);
}

}  // namespace mstar::cuda
