// copyStrided: converts and re-checks the arguments of mstar::copy_strided.
#include "../ops/copy.h"

#include "../ops/strided.h"
#include "args.h"
#include "registry.h"

using namespace mstar::binding;

namespace {

mstar::DtypeCode arg_dtype(const Napi::CallbackInfo& info, size_t index, const char* name) {
  int64_t code = arg_int(info, index, name);
  if (code < 0 || code >= mstar::kDtypeCodeCount) {
    throw_js(info.Env(), "ERR_DTYPE", std::string(name) + ": unknown dtype code " + std::to_string(code) +
                                          " (0 float32, 1 float16, 2 bfloat16)");
  }
  return static_cast<mstar::DtypeCode>(code);
}

// float32 storage is a Float32Array, float16/bfloat16 storage a Uint16Array.
ArraySpan<void> arg_storage(const Napi::CallbackInfo& info, size_t index, const char* name, mstar::DtypeCode dtype) {
  if (dtype == mstar::DtypeCode::Float32) {
    F32Span span = arg_f32(info, index, name);
    return {span.data, span.length};
  }
  U16Span span = arg_u16(info, index, name);
  return {span.data, span.length};
}

}  // namespace

// copyStrided(src, srcDtype, srcOffset, shape, srcStrides, dst, dstDtype)
MSTAR_BINDING(copyStrided) {
  const mstar::DtypeCode src_dtype = arg_dtype(info, 1, "srcDtype");
  const mstar::DtypeCode dst_dtype = arg_dtype(info, 6, "dstDtype");
  const ArraySpan<void> src = arg_storage(info, 0, "src", src_dtype);
  const int64_t src_offset = arg_size(info, 2, "srcOffset");
  const std::vector<int64_t> shape = arg_sizes(info, 3, "shape");
  const std::vector<int64_t> src_strides = arg_ints(info, 4, "srcStrides");
  const ArraySpan<void> dst = arg_storage(info, 5, "dst", dst_dtype);
  const int64_t numel = mstar::checked_numel(shape, "copyStrided: shape");
  mstar::check_strided_read("copyStrided: src", static_cast<int64_t>(src.length), src_offset, shape, src_strides);
  require_length(info.Env(), dst, numel, "dst");
  if (numel > 0) {
    // The gather runs in parallel chunks, so an overlapping dst would race with its own reads.
    const char* s = static_cast<const char*>(src.data);
    const char* d = static_cast<const char*>(dst.data);
    const int64_t src_bytes = static_cast<int64_t>(src.length) * mstar::dtype_size(src_dtype);
    const int64_t dst_bytes = numel * mstar::dtype_size(dst_dtype);
    if (s < d + dst_bytes && d < s + src_bytes) {
      throw_js(info.Env(), "ERR_ARGUMENT", "copyStrided: dst overlaps src; copy into a separate buffer");
    }
  }
  mstar::copy_strided(src.data, src_dtype, src_offset, shape, src_strides, dst.data, dst_dtype);
  return info.Env().Undefined();
}
