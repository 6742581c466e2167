// Binding for cpp/ops/attention: attentionForward, attentionBackward, attentionNaiveForward.
// Converts and re-checks every argument (never trusting the TS layer): dims, strides, and
// that every element reachable through the strides lies inside its typed array, so no call
// can read or write outside JS memory.
#include <algorithm>
#include <string>
#include <vector>

#include "../ops/attention.h"
#include "args.h"
#include "registry.h"

namespace {

using namespace mstar::binding;

struct Dims {
  int64_t batch, heads, q_len, k_len, head_dim;
};

Dims arg_dims(const Napi::CallbackInfo& info, size_t index) {
  Napi::Env env = info.Env();
  std::vector<int64_t> d = arg_sizes(info, index, "dims");  // rejects negative and non-integer entries
  if (d.size() != 5) {
    throw_js(env, "ERR_SHAPE", "dims must be [B, H, Nq, Nk, D], got " + std::to_string(d.size()) + " entries", true);
  }
  if (d[4] < 1) throw_js(env, "ERR_SHAPE", "dims: head dim D must be >= 1, got " + std::to_string(d[4]), true);
  Dims dims{d[0], d[1], d[2], d[3], d[4]};
  // Every loop index and offset below must fit int64 with room to spare.
  checked_product(env, {dims.batch, dims.heads, dims.q_len, dims.head_dim}, "dims (B·H·Nq·D)");
  checked_product(env, {dims.batch, dims.heads, dims.k_len, dims.head_dim}, "dims (B·H·Nk·D)");
  return dims;
}

mstar::AttentionStrides arg_strides(const Napi::CallbackInfo& info, size_t index, const char* name) {
  std::vector<int64_t> s = arg_ints(info, index, name);
  if (s.size() != 3) {
    throw_js(info.Env(), "ERR_SHAPE",
             std::string(name) + " must be [sB, sH, sN] (element strides), got " + std::to_string(s.size()) + " entries",
             true);
  }
  return {s[0], s[1], s[2]};
}

int64_t checked_mul(Napi::Env env, int64_t a, int64_t b, const char* name) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) throw_js(env, "ERR_SHAPE", std::string(name) + ": strides overflow", true);
  return r;
}

// Throws ERR_SHAPE unless every offset b·sB + h·sH + n·sN + d (b < B, h < H, n < N, d < D)
// lies in [0, length). Strides may be negative or zero; extremes are reached at the corners.
void check_reach(Napi::Env env, size_t length, const Dims& dims, int64_t rows, const mstar::AttentionStrides& s,
                 const char* name) {
  if (dims.batch == 0 || dims.heads == 0 || rows == 0) return;  // nothing reachable
  const int64_t extents[3] = {dims.batch - 1, dims.heads - 1, rows - 1};
  const int64_t strides[3] = {s.batch, s.head, s.row};
  int64_t lo = 0, hi = dims.head_dim - 1;
  for (int i = 0; i < 3; ++i) {
    const int64_t reach = checked_mul(env, extents[i], strides[i], name);
    if (__builtin_add_overflow(reach < 0 ? lo : hi, reach, reach < 0 ? &lo : &hi)) {
      throw_js(env, "ERR_SHAPE", std::string(name) + ": strides overflow", true);
    }
  }
  if (lo < 0 || hi >= static_cast<int64_t>(length)) {
    throw_js(env, "ERR_SHAPE",
             std::string(name) + ": strides reach elements [" + std::to_string(lo) + ", " + std::to_string(hi) +
                 "] but the array has " + std::to_string(length) + " elements",
             true);
  }
}

// Outputs are written by several threads at once, so distinct (b, h, n, d) must be distinct
// elements. Sufficient test: sorted by |stride|, each stride clears the span of the smaller ones.
void check_no_overlap(Napi::Env env, const Dims& dims, int64_t rows, const mstar::AttentionStrides& s,
                      const char* name) {
  if (dims.batch == 0 || dims.heads == 0 || rows == 0) return;  // nothing is written
  struct Axis {
    int64_t size, stride;
  };
  Axis axes[3] = {{dims.batch, s.batch < 0 ? -s.batch : s.batch},
                  {dims.heads, s.head < 0 ? -s.head : s.head},
                  {rows, s.row < 0 ? -s.row : s.row}};
  std::sort(axes, axes + 3, [](const Axis& a, const Axis& b) { return a.stride < b.stride; });
  int64_t span = dims.head_dim;  // elements covered by the inner axes (check_reach bounds the products)
  for (const Axis& a : axes) {
    if (a.size <= 1) continue;
    if (a.stride < span) {
      throw_js(env, "ERR_SHAPE", std::string(name) + ": strides make distinct elements overlap (an output must not)",
               true);
    }
    span = a.stride * (a.size - 1) + span;
  }
}

const uint8_t* arg_key_mask(const Napi::CallbackInfo& info, size_t index, const Dims& dims) {
  if (index < info.Length() && (info[index].IsNull() || info[index].IsUndefined())) return nullptr;
  const int64_t needed = checked_product(info.Env(), {dims.batch, dims.k_len}, "keyMask");
  U8Span mask = arg_u8(info, index, "keyMask", needed);  // [B, Nk]
  return mask.data;
}

// Reads the arguments every entry shares: q, k, v, out at 0..3; then dims, the four stride
// triples and scale from `dims_index` on.
mstar::AttentionParams arg_common(const Napi::CallbackInfo& info, size_t dims_index, F32Span& out_span) {
  Napi::Env env = info.Env();
  F32Span q = arg_f32(info, 0, "q");
  F32Span k = arg_f32(info, 1, "k");
  F32Span v = arg_f32(info, 2, "v");
  out_span = arg_f32(info, 3, "out");
  const Dims dims = arg_dims(info, dims_index);
  mstar::AttentionParams p;
  p.batch = dims.batch;
  p.heads = dims.heads;
  p.q_len = dims.q_len;
  p.k_len = dims.k_len;
  p.head_dim = dims.head_dim;
  p.q_strides = arg_strides(info, dims_index + 1, "qStrides");
  p.k_strides = arg_strides(info, dims_index + 2, "kStrides");
  p.v_strides = arg_strides(info, dims_index + 3, "vStrides");
  p.out_strides = arg_strides(info, dims_index + 4, "outStrides");
  p.scale = static_cast<float>(arg_number(info, dims_index + 5, "scale"));
  check_reach(env, q.length, dims, dims.q_len, p.q_strides, "q");
  check_reach(env, k.length, dims, dims.k_len, p.k_strides, "k");
  check_reach(env, v.length, dims, dims.k_len, p.v_strides, "v");
  check_reach(env, out_span.length, dims, dims.q_len, p.out_strides, "out");
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.out = out_span.data;
  return p;
}

Dims dims_of(const mstar::AttentionParams& p) { return {p.batch, p.heads, p.q_len, p.k_len, p.head_dim}; }

}  // namespace

// attentionForward(q, k, v, out, lse, keyMask | null, dims, qStrides, kStrides, vStrides, outStrides, scale)
MSTAR_BINDING(attentionForward) {
  Napi::Env env = info.Env();
  F32Span out;
  mstar::AttentionParams p = arg_common(info, 6, out);
  const Dims dims = dims_of(p);
  check_no_overlap(env, dims, dims.q_len, p.out_strides, "out");
  F32Span lse = arg_f32(info, 4, "lse", checked_product(env, {dims.batch, dims.heads, dims.q_len}, "lse"));
  p.lse = lse.data;
  p.key_mask = arg_key_mask(info, 5, dims);
  mstar::attention_forward(p);
  return env.Undefined();
}

// attentionNaiveForward(q, k, v, out, keyMask | null, dims, qStrides, kStrides, vStrides, outStrides, scale)
MSTAR_BINDING(attentionNaiveForward) {
  Napi::Env env = info.Env();
  F32Span out;
  mstar::AttentionParams p = arg_common(info, 5, out);
  const Dims dims = dims_of(p);
  check_no_overlap(env, dims, dims.q_len, p.out_strides, "out");
  p.key_mask = arg_key_mask(info, 4, dims);
  mstar::attention_naive_forward(p);
  return env.Undefined();
}

// attentionBackward(q, k, v, out, gOut, lse, gq, gk, gv, keyMask | null,
//                   dims, qStrides, kStrides, vStrides, outStrides, scale)
MSTAR_BINDING(attentionBackward) {
  Napi::Env env = info.Env();
  F32Span out;
  mstar::AttentionParams p = arg_common(info, 10, out);
  const Dims dims = dims_of(p);
  F32Span grad_out = arg_f32(info, 4, "gOut");
  F32Span lse = arg_f32(info, 5, "lse", checked_product(env, {dims.batch, dims.heads, dims.q_len}, "lse"));
  F32Span grad_q = arg_f32(info, 6, "gq");
  F32Span grad_k = arg_f32(info, 7, "gk");
  F32Span grad_v = arg_f32(info, 8, "gv");
  check_reach(env, grad_out.length, dims, dims.q_len, p.out_strides, "gOut");
  check_reach(env, grad_q.length, dims, dims.q_len, p.q_strides, "gq");
  check_reach(env, grad_k.length, dims, dims.k_len, p.k_strides, "gk");
  check_reach(env, grad_v.length, dims, dims.k_len, p.v_strides, "gv");
  check_no_overlap(env, dims, dims.q_len, p.q_strides, "gq");
  check_no_overlap(env, dims, dims.k_len, p.k_strides, "gk");
  check_no_overlap(env, dims, dims.k_len, p.v_strides, "gv");
  p.key_mask = arg_key_mask(info, 9, dims);
  p.grad_out = grad_out.data;
  p.lse = lse.data;
  p.grad_q = grad_q.data;
  p.grad_k = grad_k.data;
  p.grad_v = grad_v.data;
  mstar::attention_backward(p);
  return env.Undefined();
}
