// contrastiveForward / contrastiveBackward: convert, re-check, call cpp/ops/contrastive.
#include "../ops/contrastive.h"
#include "args.h"
#include "registry.h"

using namespace mstar::binding;

namespace {

// The leading arguments shared by both functions: (a, b, n, d, scale, tileRows).
mstar::ContrastiveParams read_params(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  mstar::ContrastiveParams p;
  p.n = arg_size(info, 2, "n");
  p.d = arg_size(info, 3, "d");
  p.scale = static_cast<float>(arg_number(info, 4, "scale"));
  p.tile_rows = arg_size(info, 5, "tileRows");
  const int64_t nd = checked_product(env, {p.n, p.d}, "contrastive: n·d");
  p.a = arg_f32(info, 0, "a", nd).data;
  p.b = arg_f32(info, 1, "b", nd).data;
  mstar::contrastive_check(p);
  return p;
}

}  // namespace

// contrastiveForward(a, b, n, d, scale, tileRows, lseRows, lseCols) -> loss
MSTAR_BINDING(contrastiveForward) {
  const mstar::ContrastiveParams p = read_params(info);
  float* lse_rows = arg_f32(info, 6, "lseRows", p.n).data;
  float* lse_cols = arg_f32(info, 7, "lseCols", p.n).data;
  return Napi::Number::New(info.Env(), mstar::contrastive_forward(p, lse_rows, lse_cols));
}

// contrastiveBackward(a, b, n, d, scale, tileRows, lseRows, lseCols, gLoss, gradA, gradB) -> d loss / d logit_scale
MSTAR_BINDING(contrastiveBackward) {
  Napi::Env env = info.Env();
  const mstar::ContrastiveParams p = read_params(info);
  const int64_t nd = p.n * p.d;
  const float* lse_rows = arg_f32(info, 6, "lseRows", p.n).data;
  const float* lse_cols = arg_f32(info, 7, "lseCols", p.n).data;
  const float g_loss = static_cast<float>(arg_number(info, 8, "gLoss"));
  float* grad_a = arg_f32(info, 9, "gradA", nd).data;
  float* grad_b = arg_f32(info, 10, "gradB", nd).data;
  return Napi::Number::New(env, mstar::contrastive_backward(p, lse_rows, lse_cols, g_loss, grad_a, grad_b));
}
