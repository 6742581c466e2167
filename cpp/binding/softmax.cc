// softmaxForward / softmaxBackward: convert, re-check, call cpp/ops/softmax.
#include "../ops/softmax.h"
#include "args.h"
#include "registry.h"

using namespace mstar::binding;

// softmaxForward(x, y, rows, cols, log)
MSTAR_BINDING(softmaxForward) {
  Napi::Env env = info.Env();
  F32Span x = arg_f32(info, 0, "x");
  F32Span y = arg_f32(info, 1, "y");
  int64_t rows = arg_size(info, 2, "rows");
  int64_t cols = arg_size(info, 3, "cols");
  bool log = arg_bool(info, 4, "log");
  int64_t n = checked_product(env, {rows, cols}, "softmaxForward: rows·cols");
  require_length(env, x, n, "x");
  require_length(env, y, n, "y");
  mstar::softmax_forward(x.data, y.data, rows, cols, log);
  return env.Undefined();
}

// softmaxBackward(y, gy, gx, rows, cols, log)
MSTAR_BINDING(softmaxBackward) {
  Napi::Env env = info.Env();
  F32Span y = arg_f32(info, 0, "y");
  F32Span gy = arg_f32(info, 1, "gy");
  F32Span gx = arg_f32(info, 2, "gx");
  int64_t rows = arg_size(info, 3, "rows");
  int64_t cols = arg_size(info, 4, "cols");
  bool log = arg_bool(info, 5, "log");
  int64_t n = checked_product(env, {rows, cols}, "softmaxBackward: rows·cols");
  require_length(env, y, n, "y");
  require_length(env, gy, n, "gy");
  require_length(env, gx, n, "gx");
  mstar::softmax_backward(y.data, gy.data, gx.data, rows, cols, log);
  return env.Undefined();
}
