// Depthwise 2-D convolution, channels-last, stride 1, same padding (see dwconv2d.h).
// Forward directly above the two backward passes. Inner loops run over channels
// (contiguous) and are compiled for each SIMD level by MSTAR_SIMD_DISPATCH.
#include "dwconv2d.h"

#include <algorithm>
#include <vector>

#include "../core/memory.h"
#include "../core/thread_pool.h"
#include "vec_math.h"

namespace mstar {
namespace {

// Weights [C, kh, kw] → taps-major [kh·kw, C] so the channel loop is contiguous.
void transpose_weights(const DwConv2dParams& p, float* wt) {
  const int64_t taps = p.kernel_h * p.kernel_w;
  for (int64_t c = 0; c < p.channels; ++c)
    for (int64_t t = 0; t < taps; ++t) wt[t * p.channels + c] = p.weight[c * taps + t];
}

MSTAR_INLINE const float* pixel(const DwConvBuffer& buf, const DwConv2dParams& p, int64_t b, int64_t r, int64_t x) {
  return buf.data + ((b * buf.rows + (r - buf.row0)) * p.width + x) * buf.stride;
}

MSTAR_INLINE void madd(float* __restrict out, const float* __restrict w, const float* __restrict in, int64_t n) {
  for (int64_t c = 0; c < n; ++c) out[c] += w[c] * in[c];
}

// One output row of the forward (flip = false) or of the input gradient (flip = true:
// taps mirrored, which is the transposed convolution for stride 1 and same padding).
template <class V>
void conv_row_body(const DwConv2dParams* pp, const float* wt, const DwConvBuffer* in, const DwConvBuffer* out,
                                int64_t b, int64_t r, bool flip) {
  const DwConv2dParams& p = *pp;
  const int64_t C = p.channels, kh = p.kernel_h, kw = p.kernel_w, ph = kh / 2, pw = kw / 2;
  for (int64_t x = 0; x < p.width; ++x) {
    float* o = const_cast<float*>(pixel(*out, p, b, r, x));
    if (!flip && p.bias != nullptr) {
      for (int64_t c = 0; c < C; ++c) o[c] = p.bias[c];
    } else {
      for (int64_t c = 0; c < C; ++c) o[c] = 0.0f;
    }
    for (int64_t i = 0; i < kh; ++i) {
      const int64_t rr = flip ? r - i + ph : r + i - ph;
      if (rr < 0 || rr >= p.height) continue;
      for (int64_t j = 0; j < kw; ++j) {
        const int64_t xx = flip ? x - j + pw : x + j - pw;
        if (xx < 0 || xx >= p.width) continue;
        madd(o, wt + (i * kw + j) * C, pixel(*in, p, b, rr, xx), C);
      }
    }
  }
}
MSTAR_SIMD_DISPATCH(conv_row, conv_row_body)

void conv_rows(const DwConv2dParams& p, const DwConvBuffer& in, const DwConvBuffer& out, bool flip) {
  const int64_t rows = p.row_end - p.row_begin;
  if (p.batch <= 0 || rows <= 0 || p.width <= 0 || p.channels <= 0) return;
  Workspace<float> wt(static_cast<size_t>(p.kernel_h * p.kernel_w * p.channels));
  transpose_weights(p, wt.data());
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, p.width * p.kernel_h * p.kernel_w));
  parallel_for(p.batch * rows, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) conv_row(&p, wt.data(), &in, &out, i / rows, p.row_begin + i % rows, flip);
  });
}

}  // namespace

void dwconv2d_forward(const DwConv2dParams& p, const DwConvBuffer& x, const DwConvBuffer& y) { conv_rows(p, x, y, false); }

void dwconv2d_backward_input(const DwConv2dParams& p, const DwConvBuffer& gy, const DwConvBuffer& gx) {
  conv_rows(p, gy, gx, true);
}

namespace {

constexpr int64_t kChannelBlock = 32;

// Weight (and bias) gradient of channels [c0, c0 + n) over output rows
// [row_begin, row_end): float sums over blocks of about 256 pixels, added into doubles.
template <class V>
void weight_grad_body(const DwConv2dParams* pp, const DwConvBuffer* x, const DwConvBuffer* gy, int64_t c0, int64_t n,
                                   double* total, double* total_bias, float* acc, float* acc_bias) {
  const DwConv2dParams& p = *pp;
  const int64_t kh = p.kernel_h, kw = p.kernel_w, ph = kh / 2, pw = kw / 2, taps = kh * kw;
  const int64_t block_rows = std::max<int64_t>(1, 256 / std::max<int64_t>(1, p.width));
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t r0 = p.row_begin; r0 < p.row_end; r0 += block_rows) {
      const int64_t r1 = std::min(r0 + block_rows, p.row_end);
      for (int64_t i = 0; i < taps * n; ++i) acc[i] = 0.0f;
      for (int64_t c = 0; c < n; ++c) acc_bias[c] = 0.0f;
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t xcol = 0; xcol < p.width; ++xcol) {
          const float* g = pixel(*gy, p, b, r, xcol) + c0;
          for (int64_t c = 0; c < n; ++c) acc_bias[c] += g[c];
          for (int64_t i = 0; i < kh; ++i) {
            const int64_t rr = r + i - ph;
            if (rr < 0 || rr >= p.height) continue;
            for (int64_t j = 0; j < kw; ++j) {
              const int64_t xx = xcol + j - pw;
              if (xx < 0 || xx >= p.width) continue;
              madd(acc + (i * kw + j) * n, g, pixel(*x, p, b, rr, xx) + c0, n);
            }
          }
        }
      }
      for (int64_t i = 0; i < taps * n; ++i) total[i] += acc[i];
      for (int64_t c = 0; c < n; ++c) total_bias[c] += acc_bias[c];
    }
  }
}
MSTAR_SIMD_DISPATCH(weight_grad, weight_grad_body)

}  // namespace

void dwconv2d_backward_weight(const DwConv2dParams& p, const DwConvBuffer& x, const DwConvBuffer& gy, float* g_weight,
                              float* g_bias) {
  if (p.batch <= 0 || p.row_end <= p.row_begin || p.width <= 0 || p.channels <= 0) return;
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t blocks = (p.channels + kChannelBlock - 1) / kChannelBlock;
  parallel_for(blocks, 1, [&](int64_t k0, int64_t k1) {
    std::vector<double> total(static_cast<size_t>(taps * kChannelBlock)), total_bias(kChannelBlock);
    std::vector<float> acc(static_cast<size_t>(taps * kChannelBlock)), acc_bias(kChannelBlock);
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t c0 = k * kChannelBlock, n = std::min(kChannelBlock, p.channels - c0);
      std::fill(total.begin(), total.end(), 0.0);
      std::fill(total_bias.begin(), total_bias.end(), 0.0);
      weight_grad(&p, &x, &gy, c0, n, total.data(), total_bias.data(), acc.data(), acc_bias.data());
      for (int64_t c = 0; c < n; ++c) {
        if (g_weight != nullptr)
          for (int64_t t = 0; t < taps; ++t) g_weight[(c0 + c) * taps + t] += static_cast<float>(total[t * n + c]);
        if (g_bias != nullptr) g_bias[c0 + c] += static_cast<float>(total_bias[c]);
      }
    }
  });
}

}  // namespace mstar
