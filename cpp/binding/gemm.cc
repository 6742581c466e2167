// gemm(a, b, c, bias|null, batch, m, n, k, transA, transB, lda, ldb, ldc, strideA, strideB, strideC,
//      alpha, beta, activation) -> undefined. What it computes: cpp/ops/gemm.h.
// Converts and re-checks every argument (kinds, sizes, leading dims, strides, array lengths,
// overlap of the output with the inputs), then calls mstar::gemm.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <string>

#include "../ops/gemm.h"
#include "args.h"
#include "registry.h"

using namespace mstar::binding;

namespace {

float arg_float(const Napi::CallbackInfo& info, size_t index, const char* name) {
  double v = arg_number(info, index, name);
  if (std::fabs(v) > FLT_MAX) {
    throw_js(info.Env(), "ERR_ARGUMENT", std::string(name) + " is outside the float32 range", true);
  }
  return static_cast<float>(v);
}

// Writing C while reading an overlapping A, B or bias would give order-dependent results.
void require_disjoint(Napi::Env env, const float* out, int64_t out_len, const float* in, int64_t in_len,
                      const char* in_name) {
  if (out_len == 0 || in_len == 0) return;
  const auto out_lo = reinterpret_cast<uintptr_t>(out), in_lo = reinterpret_cast<uintptr_t>(in);
  const auto out_hi = out_lo + sizeof(float) * static_cast<uintptr_t>(out_len);
  const auto in_hi = in_lo + sizeof(float) * static_cast<uintptr_t>(in_len);
  if (out_lo < in_hi && in_lo < out_hi) {
    throw_js(env, "ERR_ARGUMENT", std::string("c overlaps ") + in_name + " in memory; use a separate output");
  }
}

}  // namespace

MSTAR_BINDING(gemm) {
  Napi::Env env = info.Env();
  F32Span a = arg_f32(info, 0, "a");
  F32Span b = arg_f32(info, 1, "b");
  F32Span c = arg_f32(info, 2, "c");
  F32Span bias = arg_f32_optional(info, 3, "bias");
  const bool has_bias = !(info[3].IsNull() || info[3].IsUndefined());

  mstar::GemmParams p;
  p.batch = arg_size(info, 4, "batch");
  p.m = arg_size(info, 5, "m");
  p.n = arg_size(info, 6, "n");
  p.k = arg_size(info, 7, "k");
  p.trans_a = arg_bool(info, 8, "transA");
  p.trans_b = arg_bool(info, 9, "transB");
  p.lda = arg_size(info, 10, "lda");
  p.ldb = arg_size(info, 11, "ldb");
  p.ldc = arg_size(info, 12, "ldc");
  p.stride_a = arg_size(info, 13, "strideA");
  p.stride_b = arg_size(info, 14, "strideB");
  p.stride_c = arg_size(info, 15, "strideC");
  p.alpha = arg_float(info, 16, "alpha");
  p.beta = arg_float(info, 17, "beta");
  const int64_t activation = arg_int(info, 18, "activation");
  if (activation < 0 || activation > 2) {
    throw_js(env, "ERR_ARGUMENT", "activation must be 0 (none), 1 (relu) or 2 (gelu), got " + std::to_string(activation),
             true);
  }
  p.activation = static_cast<mstar::GemmActivation>(activation);
  p.a = a.data;
  p.b = b.data;
  p.c = c.data;
  p.bias = has_bias ? bias.data : nullptr;

  // Sizes, leading dims and strides first (ERR_SHAPE), then what each array must hold.
  mstar::gemm_check(p);
  const mstar::GemmExtents e = mstar::gemm_extents(p);
  require_length(env, a, e.a, "a");
  require_length(env, b, e.b, "b");
  require_length(env, c, e.c, "c");
  if (has_bias) require_length(env, bias, p.n, "bias");
  // An empty bias array (n = 0) has no data pointer; the kernel never reads it then.
  if (has_bias && p.n > 0) p.bias = bias.data;
  require_disjoint(env, p.c, e.c, p.a, e.a, "a");
  require_disjoint(env, p.c, e.c, p.b, e.b, "b");
  require_disjoint(env, p.c, e.c, p.bias, has_bias ? p.n : 0, "bias");

  mstar::gemm(p);
  return env.Undefined();
}
