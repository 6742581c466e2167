// reduce and sumSquares: converts and re-checks, then calls ops/reduce.h.
#include "../ops/reduce.h"

#include "args.h"
#include "registry.h"

using namespace mstar::binding;

// reduce(op, x, out, outer, dim, inner, argmax | null)
MSTAR_BINDING(reduce) {
  Napi::Env env = info.Env();
  const int64_t code = arg_int(info, 0, "op");
  if (code < 0 || code >= mstar::kReduceOpCount) {
    throw_js(env, "ERR_ARGUMENT", "op: unknown reduce op code " + std::to_string(code) + " (0 sum, 1 mean, 2 max)",
             true);
  }
  const auto op = static_cast<mstar::ReduceOp>(code);
  const int64_t outer = arg_size(info, 3, "outer");
  const int64_t dim = arg_size(info, 4, "dim");
  const int64_t inner = arg_size(info, 5, "inner");
  const int64_t in_numel = checked_product(env, {outer, dim, inner}, "reduce: outer·dim·inner");
  const int64_t out_numel = checked_product(env, {outer, inner}, "reduce: outer·inner");
  const F32Span x = arg_f32(info, 1, "x", in_numel);
  const F32Span out = arg_f32(info, 2, "out", out_numel);
  int32_t* argmax = nullptr;
  if (info.Length() > 6 && !info[6].IsNull() && !info[6].IsUndefined()) {
    if (op != mstar::ReduceOp::Max) throw_js(env, "ERR_ARGUMENT", "argmax: only the max reduction has an argmax");
    argmax = arg_i32(info, 6, "argmax", out_numel).data;
  }
  mstar::reduce_forward(op, x.data, out.data, argmax, outer, dim, inner);
  return env.Undefined();
}

// sumSquares(x, n) -> Σ x[i]² (float64)
MSTAR_BINDING(sumSquares) {
  const int64_t n = arg_size(info, 1, "n");
  const F32Span x = arg_f32(info, 0, "x", n);
  return Napi::Number::New(info.Env(), mstar::sum_squares(x.data, n));
}
