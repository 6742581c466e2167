// crossEntropyForward / crossEntropyBackward: convert, re-check, call
// cpp/ops/cross_entropy (which checks every target before computing).
#include "../ops/cross_entropy.h"
#include "args.h"
#include "registry.h"

using namespace mstar::binding;

// crossEntropyForward(logits, targets, losses, rows, cols)
MSTAR_BINDING(crossEntropyForward) {
  Napi::Env env = info.Env();
  F32Span logits = arg_f32(info, 0, "logits");
  I32Span targets = arg_i32(info, 1, "targets");
  F32Span losses = arg_f32(info, 2, "losses");
  int64_t rows = arg_size(info, 3, "rows");
  int64_t cols = arg_size(info, 4, "cols");
  require_length(env, logits, checked_product(env, {rows, cols}, "crossEntropyForward: rows·cols"), "logits");
  require_length(env, targets, rows, "targets");
  require_length(env, losses, rows, "losses");
  mstar::cross_entropy_forward(logits.data, targets.data, losses.data, rows, cols);
  return env.Undefined();
}

// crossEntropyBackward(logits, targets, gLosses, gLogits, rows, cols)
MSTAR_BINDING(crossEntropyBackward) {
  Napi::Env env = info.Env();
  F32Span logits = arg_f32(info, 0, "logits");
  I32Span targets = arg_i32(info, 1, "targets");
  F32Span g_losses = arg_f32(info, 2, "gLosses");
  F32Span g_logits = arg_f32(info, 3, "gLogits");
  int64_t rows = arg_size(info, 4, "rows");
  int64_t cols = arg_size(info, 5, "cols");
  int64_t n = checked_product(env, {rows, cols}, "crossEntropyBackward: rows·cols");
  require_length(env, logits, n, "logits");
  require_length(env, targets, rows, "targets");
  require_length(env, g_losses, rows, "gLosses");
  require_length(env, g_logits, n, "gLogits");
  mstar::cross_entropy_backward(logits.data, targets.data, g_losses.data, g_logits.data, rows, cols);
  return env.Undefined();
}
