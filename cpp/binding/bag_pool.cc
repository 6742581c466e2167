// bagPoolForward / bagPoolBackward: convert, re-check, call cpp/ops/bag_pool.
#include <string>
#include <vector>

#include "../ops/bag_pool.h"
#include "args.h"
#include "registry.h"

using namespace mstar::binding;

namespace {

struct Sizes {
  int64_t bags, total, heads, dim, h_stride;
};

// Offsets must run 0 = o[0] <= o[1] <= ... <= o[B] = T.
std::vector<int64_t> checked_offsets(Napi::Env env, const I32Span& offsets, const Sizes& s) {
  require_length(env, offsets, s.bags + 1, "offsets");
  std::vector<int64_t> out(static_cast<size_t>(s.bags + 1));
  for (int64_t b = 0; b <= s.bags; ++b) {
    out[b] = offsets.data[b];
    if (out[b] < 0 || out[b] > s.total || (b > 0 && out[b] < out[b - 1])) {
      throw_js(env, "ERR_RANGE", "offsets[" + std::to_string(b) + "] = " + std::to_string(out[b]) +
                                     " breaks 0 <= offsets[b] <= offsets[b+1] <= total (" + std::to_string(s.total) + ")", true);
    }
  }
  if (out[0] != 0 || out[s.bags] != s.total) {
    throw_js(env, "ERR_RANGE", "offsets must start at 0 and end at total (" + std::to_string(s.total) + ")", true);
  }
  return out;
}

Sizes read_sizes(const Napi::CallbackInfo& info, size_t first) {
  Sizes s{arg_size(info, first, "bags"), arg_size(info, first + 1, "total"), arg_size(info, first + 2, "heads"),
          arg_size(info, first + 3, "dim"), arg_size(info, first + 4, "hStride")};
  if (s.heads < 1) throw_js(info.Env(), "ERR_SHAPE", "heads must be >= 1", true);
  if (s.h_stride < s.dim) throw_js(info.Env(), "ERR_SHAPE", "hStride must be >= dim", true);
  return s;
}

int64_t h_length(Napi::Env env, const Sizes& s) {
  return s.total == 0 ? 0 : checked_product(env, {s.total - 1, s.h_stride}, "bagPool: h") + s.dim;
}

const uint8_t* optional_mask(const Napi::CallbackInfo& info, size_t index, int64_t total) {
  if (info[index].IsNull() || info[index].IsUndefined()) return nullptr;
  return arg_u8(info, index, "mask", total).data;
}

mstar::BagPoolParams params_of(const Sizes& s) {
  mstar::BagPoolParams p;
  p.bags = s.bags;
  p.total = s.total;
  p.heads = s.heads;
  p.dim = s.dim;
  p.h_stride = s.h_stride;
  return p;
}

}  // namespace

// bagPoolForward(scores, h, offsets, mask | null, attn, pooled, bags, total, heads, dim, hStride)
MSTAR_BINDING(bagPoolForward) {
  Napi::Env env = info.Env();
  const Sizes s = read_sizes(info, 6);
  const int64_t tk = checked_product(env, {s.total, s.heads}, "bagPoolForward: total·heads");
  mstar::BagPoolParams p = params_of(s);
  p.scores = arg_f32(info, 0, "scores", tk).data;
  p.h = arg_f32(info, 1, "h", h_length(env, s)).data;
  const std::vector<int64_t> offsets = checked_offsets(env, arg_i32(info, 2, "offsets"), s);
  p.offsets = offsets.data();
  p.mask = optional_mask(info, 3, s.total);
  p.attn = arg_f32(info, 4, "attn", tk).data;
  p.pooled = arg_f32(info, 5, "pooled", checked_product(env, {s.bags, s.heads, s.dim}, "bagPoolForward: pooled")).data;
  mstar::bag_pool_forward(p);
  return env.Undefined();
}

// bagPoolBackward(h, offsets, mask | null, attn, pooled, gradPooled, gradH | null, gradScores | null,
//                 bags, total, heads, dim, hStride)
MSTAR_BINDING(bagPoolBackward) {
  Napi::Env env = info.Env();
  const Sizes s = read_sizes(info, 8);
  const int64_t tk = checked_product(env, {s.total, s.heads}, "bagPoolBackward: total·heads");
  const int64_t bkl = checked_product(env, {s.bags, s.heads, s.dim}, "bagPoolBackward: pooled");
  mstar::BagPoolParams p = params_of(s);
  p.h = arg_f32(info, 0, "h", h_length(env, s)).data;
  const std::vector<int64_t> offsets = checked_offsets(env, arg_i32(info, 1, "offsets"), s);
  p.offsets = offsets.data();
  p.mask = optional_mask(info, 2, s.total);
  p.attn = arg_f32(info, 3, "attn", tk).data;
  p.pooled = arg_f32(info, 4, "pooled", bkl).data;
  p.grad_pooled = arg_f32(info, 5, "gradPooled", bkl).data;
  p.grad_h = arg_f32_optional(info, 6, "gradH", checked_product(env, {s.total, s.dim}, "bagPoolBackward: gradH")).data;
  p.grad_scores = arg_f32_optional(info, 7, "gradScores", tk).data;
  mstar::bag_pool_backward(p);
  return env.Undefined();
}
