// Elementwise entry points: unaryForward/Backward, binaryForward, affine, axpy,
// sumToShape. Converts and re-checks, then calls one function of ops/elementwise.h.
#include "../ops/elementwise.h"

#include "../ops/strided.h"
#include "args.h"
#include "registry.h"

using namespace mstar::binding;

namespace {

template <typename Op>
Op arg_op(const Napi::CallbackInfo& info, size_t index, const char* name, int count) {
  int64_t code = arg_int(info, index, name);
  if (code < 0 || code >= count) {
    throw_js(info.Env(), "ERR_ARGUMENT",
             std::string(name) + ": unknown op code " + std::to_string(code) + " (valid: 0.." +
                 std::to_string(count - 1) + ")",
             true);
  }
  return static_cast<Op>(code);
}

std::vector<int64_t> arg_strides(const Napi::CallbackInfo& info, size_t index, const char* name,
                                 const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides = arg_ints(info, index, name);
  if (strides.size() != shape.size()) {
    throw_js(info.Env(), "ERR_SHAPE",
             std::string(name) + " has " + std::to_string(strides.size()) + " entries, shape has " +
                 std::to_string(shape.size()),
             true);
  }
  return strides;
}

}  // namespace

// unaryForward(op, x, y, n)
MSTAR_BINDING(unaryForward) {
  const auto op = arg_op<mstar::UnaryOp>(info, 0, "op", mstar::kUnaryOpCount);
  const int64_t n = arg_size(info, 3, "n");
  const F32Span x = arg_f32(info, 1, "x", n);
  const F32Span y = arg_f32(info, 2, "y", n);
  mstar::unary_forward(op, x.data, y.data, n);
  return info.Env().Undefined();
}

// unaryBackward(op, x, y, gy, gx, n)
MSTAR_BINDING(unaryBackward) {
  const auto op = arg_op<mstar::UnaryOp>(info, 0, "op", mstar::kUnaryOpCount);
  const int64_t n = arg_size(info, 5, "n");
  const F32Span x = arg_f32(info, 1, "x", n);
  const F32Span y = arg_f32(info, 2, "y", n);
  const F32Span gy = arg_f32(info, 3, "gy", n);
  const F32Span gx = arg_f32(info, 4, "gx", n);
  mstar::unary_backward(op, x.data, y.data, gy.data, gx.data, n);
  return info.Env().Undefined();
}

// binaryForward(op, a, b, out, shape, aStrides, bStrides)
MSTAR_BINDING(binaryForward) {
  const auto op = arg_op<mstar::BinaryOp>(info, 0, "op", mstar::kBinaryOpCount);
  const std::vector<int64_t> shape = arg_sizes(info, 4, "shape");
  const std::vector<int64_t> a_strides = arg_strides(info, 5, "aStrides", shape);
  const std::vector<int64_t> b_strides = arg_strides(info, 6, "bStrides", shape);
  const int64_t numel = mstar::checked_numel(shape, "binaryForward: shape");
  const F32Span a = arg_f32(info, 1, "a");
  const F32Span b = arg_f32(info, 2, "b");
  const F32Span out = arg_f32(info, 3, "out", numel);
  mstar::check_strided_read("binaryForward: a", static_cast<int64_t>(a.length), 0, shape, a_strides);
  mstar::check_strided_read("binaryForward: b", static_cast<int64_t>(b.length), 0, shape, b_strides);
  mstar::binary_forward(op, a.data, b.data, out.data, shape, a_strides, b_strides);
  return info.Env().Undefined();
}

// affine(x, y, n, alpha, beta)
MSTAR_BINDING(affine) {
  const int64_t n = arg_size(info, 2, "n");
  const F32Span x = arg_f32(info, 0, "x", n);
  const F32Span y = arg_f32(info, 1, "y", n);
  const double alpha = arg_number(info, 3, "alpha");
  const double beta = arg_number(info, 4, "beta");
  mstar::affine(x.data, y.data, n, static_cast<float>(alpha), static_cast<float>(beta));
  return info.Env().Undefined();
}

// axpy(x, y, n, alpha): y += alpha·x
MSTAR_BINDING(axpy) {
  const int64_t n = arg_size(info, 2, "n");
  const F32Span x = arg_f32(info, 0, "x", n);
  const F32Span y = arg_f32(info, 1, "y", n);
  const double alpha = arg_number(info, 3, "alpha");
  mstar::axpy(x.data, y.data, n, static_cast<float>(alpha));
  return info.Env().Undefined();
}

// sumToShape(src, srcShape, dst, dstShape)
MSTAR_BINDING(sumToShape) {
  Napi::Env env = info.Env();
  const std::vector<int64_t> src_shape = arg_sizes(info, 1, "srcShape");
  const std::vector<int64_t> dst_shape = arg_sizes(info, 3, "dstShape");
  if (src_shape.size() != dst_shape.size()) {
    throw_js(env, "ERR_SHAPE",
             "sumToShape: dstShape has rank " + std::to_string(dst_shape.size()) + ", srcShape has rank " +
                 std::to_string(src_shape.size()),
             true);
  }
  for (size_t d = 0; d < src_shape.size(); ++d) {
    if (dst_shape[d] != src_shape[d] && dst_shape[d] != 1) {
      throw_js(env, "ERR_SHAPE",
               "sumToShape: dstShape[" + std::to_string(d) + "] = " + std::to_string(dst_shape[d]) + " must be " +
                   std::to_string(src_shape[d]) + " or 1",
               true);
    }
  }
  const int64_t src_numel = mstar::checked_numel(src_shape, "sumToShape: srcShape");
  const int64_t dst_numel = mstar::checked_numel(dst_shape, "sumToShape: dstShape");
  const F32Span src = arg_f32(info, 0, "src", src_numel);
  const F32Span dst = arg_f32(info, 2, "dst", dst_numel);
  mstar::sum_to_shape(src.data, src_shape, dst.data, dst_shape);
  return env.Undefined();
}
