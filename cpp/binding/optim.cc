// adamwStep / sgdStep: convert, re-check (sizes, array lengths, hyper-parameter
// ranges as torch.optim checks them), call cpp/ops/optim.
#include <sstream>

#include "../ops/optim.h"
#include "args.h"
#include "registry.h"

using namespace mstar::binding;

namespace {

enum class Upper { None, Open, Closed };

// A finite number ≥ 0 and, when `upper` says so, < 1 (Open) or ≤ 1 (Closed); else a
// RangeError with code ERR_ARGUMENT naming the parameter, its range and the value.
double arg_hyperparameter(const Napi::CallbackInfo& info, size_t index, const char* name, Upper upper) {
  double value = arg_number(info, index, name);
  bool ok = value >= 0 && (upper == Upper::None || value < 1 || (upper == Upper::Closed && value == 1));
  if (!ok) {
    std::ostringstream message;
    message << name << " must be " << (upper == Upper::None ? ">= 0" : upper == Upper::Open ? "in [0, 1)" : "in [0, 1]")
            << ", got " << value;
    throw_js(info.Env(), "ERR_ARGUMENT", message.str(), true);
  }
  return value;
}

}  // namespace

// adamwStep(param, grad, m, v, n, lr, beta1, beta2, eps, weightDecay, step)
MSTAR_BINDING(adamwStep) {
  Napi::Env env = info.Env();
  int64_t n = arg_size(info, 4, "n");
  F32Span param = arg_f32(info, 0, "param", n);
  F32Span grad = arg_f32(info, 1, "grad", n);
  F32Span m = arg_f32(info, 2, "m", n);
  F32Span v = arg_f32(info, 3, "v", n);
  mstar::AdamWHyperparams h;
  h.lr = arg_hyperparameter(info, 5, "lr", Upper::None);
  h.beta1 = arg_hyperparameter(info, 6, "beta1", Upper::Open);
  h.beta2 = arg_hyperparameter(info, 7, "beta2", Upper::Open);
  h.eps = arg_hyperparameter(info, 8, "eps", Upper::None);
  if (h.eps == 0) throw_js(env, "ERR_ARGUMENT", "eps must be > 0, got 0", true);
  h.weight_decay = arg_hyperparameter(info, 9, "weightDecay", Upper::None);
  h.step = arg_size(info, 10, "step");
  if (h.step < 1) throw_js(env, "ERR_ARGUMENT", "step must be >= 1 (the step being taken), got 0", true);
  mstar::adamw_step(param.data, grad.data, m.data, v.data, n, h);
  return env.Undefined();
}

// sgdStep(param, grad, momentumBuffer | null, n, lr, momentum, dampening, weightDecay, nesterov, first)
MSTAR_BINDING(sgdStep) {
  Napi::Env env = info.Env();
  int64_t n = arg_size(info, 3, "n");
  F32Span param = arg_f32(info, 0, "param", n);
  F32Span grad = arg_f32(info, 1, "grad", n);
  F32Span buffer = arg_f32_optional(info, 2, "momentumBuffer", n);
  mstar::SgdHyperparams h;
  h.lr = arg_hyperparameter(info, 4, "lr", Upper::None);
  h.momentum = arg_hyperparameter(info, 5, "momentum", Upper::None);
  h.dampening = arg_hyperparameter(info, 6, "dampening", Upper::Closed);
  h.weight_decay = arg_hyperparameter(info, 7, "weightDecay", Upper::None);
  h.nesterov = arg_bool(info, 8, "nesterov");
  h.first = arg_bool(info, 9, "first");
  Napi::Value buffer_arg = info[2];
  if (h.momentum != 0 && (buffer_arg.IsNull() || buffer_arg.IsUndefined())) {
    throw_js(env, "ERR_ARGUMENT", "momentumBuffer is required when momentum != 0", false);
  }
  if (h.nesterov && (h.momentum <= 0 || h.dampening != 0)) {
    throw_js(env, "ERR_ARGUMENT", "nesterov needs momentum > 0 and dampening = 0 (as torch.optim.SGD)", true);
  }
  mstar::sgd_step(param.data, grad.data, buffer.data, n, h);
  return env.Undefined();
}
