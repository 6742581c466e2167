// The geometry arguments of the depthwise-convolution bindings, shared by the CPU
// (dwconv2d.cc) and CUDA (cuda.cc) entry points: dims = [B, H, W, C, kh, kw] at `index`,
// then rowBegin, rowEnd. P is mstar::DwConv2dParams or mstar::cuda::DwConv2dParams.
#pragma once
#include "args.h"

namespace mstar::binding {

template <class P>
P arg_dwconv_geometry(const Napi::CallbackInfo& info, size_t index) {
  const std::vector<int64_t> d = arg_sizes(info, index, "dims");
  if (d.size() != 6) throw_js(info.Env(), "ERR_SHAPE", "dims must be [B, H, W, C, kh, kw]", true);
  P p;
  p.batch = d[0];
  p.height = d[1];
  p.width = d[2];
  p.channels = d[3];
  p.kernel_h = d[4];
  p.kernel_w = d[5];
  p.row_begin = arg_size(info, index + 1, "rowBegin");
  p.row_end = arg_size(info, index + 2, "rowEnd");
  return p;
}

}  // namespace mstar::binding
