// layerNormForward / layerNormBackward: convert, re-check, call cpp/ops/layernorm.
// Sizes are read first so that every array, optional ones included, is checked
// against the length it needs as it is converted (an empty array is not `null`).
#include <sstream>

#include "../ops/layernorm.h"
#include "args.h"
#include "registry.h"

using namespace mstar::binding;

namespace {

// Layer norm over an empty last dim has no mean: cols must be ≥ 1 unless there are no rows.
void require_cols(Napi::Env env, int64_t rows, int64_t cols, const char* op) {
  if (rows > 0 && cols < 1) throw_js(env, "ERR_SHAPE", std::string(op) + ": cols must be >= 1, got 0", true);
}

}  // namespace

// layerNormForward(x, gamma | null, beta | null, y, mean, rstd, rows, cols, eps)
MSTAR_BINDING(layerNormForward) {
  Napi::Env env = info.Env();
  int64_t rows = arg_size(info, 6, "rows");
  int64_t cols = arg_size(info, 7, "cols");
  double eps = arg_number(info, 8, "eps");
  require_cols(env, rows, cols, "layerNormForward");
  if (!(eps > 0)) {
    std::ostringstream message;
    message << "eps must be > 0, got " << eps;
    throw_js(env, "ERR_ARGUMENT", message.str(), true);
  }
  int64_t n = checked_product(env, {rows, cols}, "layerNormForward: rows·cols");
  F32Span x = arg_f32(info, 0, "x", n);
  F32Span gamma = arg_f32_optional(info, 1, "gamma", cols);
  F32Span beta = arg_f32_optional(info, 2, "beta", cols);
  F32Span y = arg_f32(info, 3, "y", n);
  F32Span mean = arg_f32(info, 4, "mean", rows);
  F32Span rstd = arg_f32(info, 5, "rstd", rows);
  mstar::layernorm_forward(x.data, gamma.data, beta.data, y.data, mean.data, rstd.data, rows, cols, eps);
  return env.Undefined();
}

// layerNormBackward(x, gamma | null, mean, rstd, gy, gx, gGamma | null, gBeta | null, rows, cols)
MSTAR_BINDING(layerNormBackward) {
  Napi::Env env = info.Env();
  int64_t rows = arg_size(info, 8, "rows");
  int64_t cols = arg_size(info, 9, "cols");
  require_cols(env, rows, cols, "layerNormBackward");
  int64_t n = checked_product(env, {rows, cols}, "layerNormBackward: rows·cols");
  F32Span x = arg_f32(info, 0, "x", n);
  F32Span gamma = arg_f32_optional(info, 1, "gamma", cols);
  F32Span mean = arg_f32(info, 2, "mean", rows);
  F32Span rstd = arg_f32(info, 3, "rstd", rows);
  F32Span gy = arg_f32(info, 4, "gy", n);
  F32Span gx = arg_f32(info, 5, "gx", n);
  F32Span g_gamma = arg_f32_optional(info, 6, "gGamma", cols);
  F32Span g_beta = arg_f32_optional(info, 7, "gBeta", cols);
  mstar::layernorm_backward(x.data, gamma.data, mean.data, rstd.data, gy.data, gx.data, g_gamma.data, g_beta.data,
                            rows, cols);
  return env.Undefined();
}
