// dwconv2dForward / dwconv2dBackwardInput / dwconv2dBackwardWeight: convert, re-check
// (sizes, odd kernels, that every buffer holds the rows the call reads or writes),
// call cpp/ops/dwconv2d.
#include <algorithm>
#include <string>

#include "../ops/dwconv2d.h"
#include "args.h"
#include "dwconv_args.h"
#include "registry.h"

using namespace mstar::binding;

namespace {

// dims = [B, H, W, C, kh, kw]; then rowBegin, rowEnd.
mstar::DwConv2dParams read_params(const Napi::CallbackInfo& info, size_t dims_index) {
  Napi::Env env = info.Env();
  mstar::DwConv2dParams p = arg_dwconv_geometry<mstar::DwConv2dParams>(info, dims_index);
  if (p.kernel_h < 1 || p.kernel_w < 1 || p.kernel_h % 2 == 0 || p.kernel_w % 2 == 0) {
    throw_js(env, "ERR_SHAPE", "kernel sizes must be odd and >= 1, got " + std::to_string(p.kernel_h) + "x" + std::to_string(p.kernel_w), true);
  }
  checked_product(env, {p.batch, p.height, p.width, p.channels}, "dwconv2d: B·H·W·C");
  if (p.row_begin > p.row_end || p.row_end > p.height) {
    throw_js(env, "ERR_RANGE", "rows [" + std::to_string(p.row_begin) + ", " + std::to_string(p.row_end) + ") are not inside [0, H = " +
                                   std::to_string(p.height) + ")", true);
  }
  return p;
}

// A buffer argument: (data, row0, rows, stride) at consecutive indices. It must hold
// rows [need_begin, need_end) of the image (when that range is not empty).
mstar::DwConvBuffer read_buffer(const Napi::CallbackInfo& info, size_t index, const char* name, const mstar::DwConv2dParams& p,
                                int64_t need_begin, int64_t need_end) {
  Napi::Env env = info.Env();
  mstar::DwConvBuffer buf;
  buf.row0 = arg_size(info, index + 1, "row0");
  buf.rows = arg_size(info, index + 2, "rows");
  buf.stride = arg_size(info, index + 3, "stride");
  const std::string n(name);
  if (buf.stride < p.channels) throw_js(env, "ERR_SHAPE", n + ": stride must be >= C", true);
  if (buf.row0 + buf.rows > p.height) throw_js(env, "ERR_RANGE", n + ": rows extend beyond the image height", true);
  need_begin = std::max<int64_t>(need_begin, 0);
  need_end = std::min(need_end, p.height);
  if (need_begin < need_end && (need_begin < buf.row0 || need_end > buf.row0 + buf.rows)) {
    throw_js(env, "ERR_RANGE", n + " holds rows [" + std::to_string(buf.row0) + ", " + std::to_string(buf.row0 + buf.rows) +
                                   ") but the call needs rows [" + std::to_string(need_begin) + ", " + std::to_string(need_end) + ")", true);
  }
  const int64_t pixels = checked_product(env, {p.batch, buf.rows, p.width}, "dwconv2d: buffer pixels");
  const int64_t needed = pixels == 0 ? 0 : checked_product(env, {pixels - 1, buf.stride}, "dwconv2d: buffer") + p.channels;
  buf.data = arg_f32(info, index, name, needed).data;
  return buf;
}

}  // namespace

// dwconv2dForward(x, xRow0, xRows, xStride, weight, bias | null, y, yRow0, yRows, yStride, dims, rowBegin, rowEnd)
MSTAR_BINDING(dwconv2dForward) {
  Napi::Env env = info.Env();
  mstar::DwConv2dParams p = read_params(info, 10);
  const int64_t ph = p.kernel_h / 2, taps = p.kernel_h * p.kernel_w;
  const mstar::DwConvBuffer x = read_buffer(info, 0, "x", p, p.row_begin - ph, p.row_end + ph);
  p.weight = arg_f32(info, 4, "weight", checked_product(env, {p.channels, taps}, "dwconv2d: weight")).data;
  p.bias = arg_f32_optional(info, 5, "bias", p.channels).data;
  const mstar::DwConvBuffer y = read_buffer(info, 6, "y", p, p.row_begin, p.row_end);
  mstar::dwconv2d_forward(p, x, y);
  return env.Undefined();
}

// dwconv2dBackwardInput(gy, gyRow0, gyRows, gyStride, weight, gx, gxRow0, gxRows, gxStride, dims, rowBegin, rowEnd)
MSTAR_BINDING(dwconv2dBackwardInput) {
  Napi::Env env = info.Env();
  mstar::DwConv2dParams p = read_params(info, 9);
  const int64_t ph = p.kernel_h / 2, taps = p.kernel_h * p.kernel_w;
  const mstar::DwConvBuffer gy = read_buffer(info, 0, "gy", p, p.row_begin - ph, p.row_end + ph);
  p.weight = arg_f32(info, 4, "weight", checked_product(env, {p.channels, taps}, "dwconv2d: weight")).data;
  const mstar::DwConvBuffer gx = read_buffer(info, 5, "gx", p, p.row_begin, p.row_end);
  mstar::dwconv2d_backward_input(p, gy, gx);
  return env.Undefined();
}

// dwconv2dBackwardWeight(x, xRow0, xRows, xStride, gy, gyRow0, gyRows, gyStride, gWeight | null, gBias | null,
//                        dims, rowBegin, rowEnd)
MSTAR_BINDING(dwconv2dBackwardWeight) {
  Napi::Env env = info.Env();
  mstar::DwConv2dParams p = read_params(info, 10);
  const int64_t ph = p.kernel_h / 2, taps = p.kernel_h * p.kernel_w;
  const mstar::DwConvBuffer x = read_buffer(info, 0, "x", p, p.row_begin - ph, p.row_end + ph);
  const mstar::DwConvBuffer gy = read_buffer(info, 4, "gy", p, p.row_begin, p.row_end);
  float* gw = arg_f32_optional(info, 8, "gWeight", checked_product(env, {p.channels, taps}, "dwconv2d: weight")).data;
  float* gb = arg_f32_optional(info, 9, "gBias", p.channels).data;
  mstar::dwconv2d_backward_weight(p, x, gy, gw, gb);
  return env.Undefined();
}
