// dropoutForward / dropoutBackward: converts and re-checks, then calls ops/dropout.h.
#include "../ops/dropout.h"

#include "args.h"
#include "registry.h"

using namespace mstar::binding;

namespace {

double arg_probability(const Napi::CallbackInfo& info, size_t index) {
  const double p = arg_number(info, index, "p");
  if (!(p >= 0.0 && p <= 1.0)) {
    throw_js(info.Env(), "ERR_RANGE", "p must be in [0, 1], got " + std::to_string(p), true);
  }
  return p;
}

}  // namespace

// dropoutForward(x, y, mask, n, p, seed)
MSTAR_BINDING(dropoutForward) {
  const int64_t n = arg_size(info, 3, "n");
  const double p = arg_probability(info, 4);
  // Any safe integer; negative seeds wrap to their two's-complement uint64.
  const uint64_t seed = static_cast<uint64_t>(arg_int(info, 5, "seed"));
  const F32Span x = arg_f32(info, 0, "x", n);
  const F32Span y = arg_f32(info, 1, "y", n);
  const U8Span mask = arg_u8(info, 2, "mask", n);
  mstar::dropout_forward(x.data, y.data, mask.data, n, p, seed);
  return info.Env().Undefined();
}

// dropoutBackward(gy, mask, gx, n, p)
MSTAR_BINDING(dropoutBackward) {
  const int64_t n = arg_size(info, 3, "n");
  const double p = arg_probability(info, 4);
  const F32Span gy = arg_f32(info, 0, "gy", n);
  const U8Span mask = arg_u8(info, 1, "mask", n);
  const F32Span gx = arg_f32(info, 2, "gx", n);
  mstar::dropout_backward(gy.data, mask.data, gx.data, n, p);
  return info.Env().Undefined();
}
