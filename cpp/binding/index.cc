// indexSelect / indexAdd: converts and re-checks sizes; the index values themselves
// are checked by ops/index.cc before anything is written.
#include "../ops/index.h"

#include "args.h"
#include "registry.h"

using namespace mstar::binding;

namespace {

struct IndexDims {
  int64_t outer, dim, inner, count;
  int64_t table_numel;     // outer·dim·inner
  int64_t selected_numel;  // outer·count·inner
};

IndexDims arg_index_dims(const Napi::CallbackInfo& info, const char* op) {
  Napi::Env env = info.Env();
  IndexDims d;
  d.outer = arg_size(info, 3, "outer");
  d.dim = arg_size(info, 4, "dim");
  d.inner = arg_size(info, 5, "inner");
  d.count = arg_size(info, 6, "count");
  d.table_numel = checked_product(env, {d.outer, d.dim, d.inner}, op);
  d.selected_numel = checked_product(env, {d.outer, d.count, d.inner}, op);
  return d;
}

}  // namespace

// indexSelect(x, idx, out, outer, dim, inner, count)
MSTAR_BINDING(indexSelect) {
  const IndexDims d = arg_index_dims(info, "indexSelect");
  const F32Span x = arg_f32(info, 0, "x", d.table_numel);
  const I32Span idx = arg_i32(info, 1, "idx", d.count);
  const F32Span out = arg_f32(info, 2, "out", d.selected_numel);
  mstar::index_select(x.data, idx.data, out.data, d.outer, d.dim, d.inner, d.count);
  return info.Env().Undefined();
}

// indexAdd(gOut, idx, gx, outer, dim, inner, count): gx += scatter(gOut)
MSTAR_BINDING(indexAdd) {
  const IndexDims d = arg_index_dims(info, "indexAdd");
  const F32Span g_out = arg_f32(info, 0, "gOut", d.selected_numel);
  const I32Span idx = arg_i32(info, 1, "idx", d.count);
  const F32Span gx = arg_f32(info, 2, "gx", d.table_numel);
  mstar::index_add(g_out.data, idx.data, gx.data, d.outer, d.dim, d.inner, d.count);
  return info.Env().Undefined();
}
