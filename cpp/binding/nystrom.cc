// groupRowSum / groupRowBroadcast: convert, re-check, call cpp/ops/nystrom.
#include <string>

#include "../ops/nystrom.h"
#include "args.h"
#include "registry.h"

using namespace mstar::binding;

namespace {

struct RowRange {
  int64_t begin, end, cols, group;
};

RowRange read_range(const Napi::CallbackInfo& info, size_t first) {
  RowRange r{arg_size(info, first, "rowBegin"), arg_size(info, first + 1, "rowEnd"), arg_size(info, first + 2, "cols"),
             arg_size(info, first + 3, "group")};
  if (r.begin > r.end) throw_js(info.Env(), "ERR_RANGE", "rowBegin must be <= rowEnd", true);
  if (r.group < 1) throw_js(info.Env(), "ERR_RANGE", "group must be >= 1", true);
  return r;
}

// Elements a strided [rows, cols] buffer must have.
int64_t strided_length(Napi::Env env, int64_t rows, int64_t cols, int64_t stride, const char* name) {
  if (stride < cols) throw_js(env, "ERR_SHAPE", std::string(name) + ": stride must be >= cols", true);
  return rows == 0 ? 0 : checked_product(env, {rows - 1, stride}, name) + cols;
}

int64_t groups_length(Napi::Env env, const RowRange& r) {
  return r.end == r.begin ? 0 : checked_product(env, {(r.end - 1) / r.group + 1, r.cols}, "groups");
}

}  // namespace

// groupRowSum(x, xStride, rowBegin, rowEnd, cols, group, out)
MSTAR_BINDING(groupRowSum) {
  Napi::Env env = info.Env();
  const int64_t stride = arg_size(info, 1, "xStride");
  const RowRange r = read_range(info, 2);
  const F32Span x = arg_f32(info, 0, "x", strided_length(env, r.end - r.begin, r.cols, stride, "x"));
  const F32Span out = arg_f32(info, 6, "out", groups_length(env, r));
  mstar::group_row_sum(x.data, stride, r.begin, r.end, r.cols, r.group, out.data);
  return env.Undefined();
}

// groupRowBroadcast(g, rowBegin, rowEnd, cols, group, alpha, out, outStride, accumulate)
MSTAR_BINDING(groupRowBroadcast) {
  Napi::Env env = info.Env();
  const RowRange r = read_range(info, 1);
  const double alpha = arg_number(info, 5, "alpha");
  const int64_t stride = arg_size(info, 7, "outStride");
  const bool accumulate = arg_bool(info, 8, "accumulate");
  const F32Span g = arg_f32(info, 0, "g", groups_length(env, r));
  const F32Span out = arg_f32(info, 6, "out", strided_length(env, r.end - r.begin, r.cols, stride, "out"));
  mstar::group_row_broadcast(g.data, r.begin, r.end, r.cols, r.group, static_cast<float>(alpha), out.data, stride, accumulate);
  return env.Undefined();
}
