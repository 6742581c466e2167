// Elementwise kernels (see elementwise.h for the contract).
//
// Every op is a small struct of inline scalar functions; one loop template
// per kind (unary, unary backward, binary run) is instantiated for all ops, so each
// op vectorizes for the CPU's widest ISA without per-op intrinsics. Broadcasting goes
// through strided.h: after coalescing, a same-shape op is one contiguous run, a row
// broadcast is runs with b's inner stride 1, a column or scalar broadcast is runs
// with stride 0, and only genuinely strided views reach the gather loop.
#include "elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../core/error.h"
#include "../core/thread_pool.h"
#include "reduce.h"
#include "strided.h"
#include "vec_math.h"

namespace mstar {
namespace {

// Elements per parallel chunk: cheap ops are memory-bound and need big chunks to pay
// for waking a thread; transcendental ops are compute-bound and split earlier.
constexpr int64_t kCheapGrain = int64_t{1} << 16;
constexpr int64_t kCostlyGrain = int64_t{1} << 13;

// ---- unary ops: forward f(x), backward gy·f'(x) given x and y = f(x) ----

struct Relu {
  static MSTAR_INLINE float forward(float x) { return select(x < 0.0f, 0.0f, x); }  // NaN stays NaN
  static MSTAR_INLINE float backward(float x, float, float gy) { return select(x <= 0.0f, 0.0f, gy); }
};
struct Gelu {  // x·Φ(x); the clamp makes ±Inf give their limits
  static MSTAR_INLINE float forward(float x) {
    const float xc = vm::clamp_normal_arg(x);
    return select(x > 20.0f, x, xc * vm::normal_cdf(xc));
  }
  static MSTAR_INLINE float backward(float x, float, float gy) {
    const float xc = vm::clamp_normal_arg(x);
    return gy * (vm::normal_cdf(xc) + xc * vm::normal_pdf(xc));
  }
};
struct Tanh {
  static MSTAR_INLINE float forward(float x) { return vm::tanh(x); }
  static MSTAR_INLINE float backward(float, float y, float gy) { return gy * (1.0f - y * y); }
};
struct Sigmoid {
  static MSTAR_INLINE float forward(float x) { return vm::sigmoid(x); }
  static MSTAR_INLINE float backward(float, float y, float gy) { return gy * (y * (1.0f - y)); }
};
struct Exp {
  static MSTAR_INLINE float forward(float x) { return vm::exp(x); }
  static MSTAR_INLINE float backward(float, float y, float gy) { return gy * y; }
};
struct Log {
  static MSTAR_INLINE float forward(float x) { return vm::log(x); }
  static MSTAR_INLINE float backward(float x, float, float gy) { return gy / x; }
};
struct Neg {
  static MSTAR_INLINE float forward(float x) { return -x; }
  static MSTAR_INLINE float backward(float, float, float gy) { return -gy; }
};
struct Sqrt {
  static MSTAR_INLINE float forward(float x) { return std::sqrt(x); }
  static MSTAR_INLINE float backward(float, float y, float gy) { return gy / (2.0f * y); }
};
struct Abs {
  static MSTAR_INLINE float forward(float x) { return std::fabs(x); }
  static MSTAR_INLINE float backward(float x, float, float gy) {
    // sgn(x), with sgn(±0) = ±0 and sgn(NaN) = NaN so a NaN input yields a NaN gradient.
    const float sign = select(x > 0.0f, 1.0f, select(x < 0.0f, -1.0f, x));
    return gy * sign;
  }
};
struct Square {
  static MSTAR_INLINE float forward(float x) { return x * x; }
  // 2·(gy·x): overflows only when the result itself does.
  static MSTAR_INLINE float backward(float x, float, float gy) { return 2.0f * (gy * x); }
};

bool is_costly(UnaryOp op) {
  return op == UnaryOp::Gelu || op == UnaryOp::Tanh || op == UnaryOp::Sigmoid || op == UnaryOp::Exp ||
         op == UnaryOp::Log;
}

template <typename Op>
MSTAR_INLINE void unary_forward_loop(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = Op::forward(x[i]);
}

template <typename Op>
MSTAR_INLINE void unary_backward_loop(const float* x, const float* y, const float* gy, float* gx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gx[i] = Op::backward(x[i], y[i], gy[i]);
}

// The op switch sits inside the dispatched body so every loop is compiled per ISA.
template <class V>  // V: the SIMD level; the loops are auto-vectorized for it
MSTAR_INLINE void unary_forward_body(UnaryOp op, const float* x, float* y, int64_t n) {
  switch (op) {
    case UnaryOp::Relu: return unary_forward_loop<Relu>(x, y, n);
    case UnaryOp::Gelu: return unary_forward_loop<Gelu>(x, y, n);
    case UnaryOp::Tanh: return unary_forward_loop<Tanh>(x, y, n);
    case UnaryOp::Sigmoid: return unary_forward_loop<Sigmoid>(x, y, n);
    case UnaryOp::Exp: return unary_forward_loop<Exp>(x, y, n);
    case UnaryOp::Log: return unary_forward_loop<Log>(x, y, n);
    case UnaryOp::Neg: return unary_forward_loop<Neg>(x, y, n);
    case UnaryOp::Sqrt: return unary_forward_loop<Sqrt>(x, y, n);
    case UnaryOp::Abs: return unary_forward_loop<Abs>(x, y, n);
    case UnaryOp::Square: return unary_forward_loop<Square>(x, y, n);
  }
}
MSTAR_SIMD_DISPATCH(unary_forward_kernel, unary_forward_body)

template <class V>
MSTAR_INLINE void unary_backward_body(UnaryOp op, const float* x, const float* y, const float* gy, float* gx,
                                      int64_t n) {
  switch (op) {
    case UnaryOp::Relu: return unary_backward_loop<Relu>(x, y, gy, gx, n);
    case UnaryOp::Gelu: return unary_backward_loop<Gelu>(x, y, gy, gx, n);
    case UnaryOp::Tanh: return unary_backward_loop<Tanh>(x, y, gy, gx, n);
    case UnaryOp::Sigmoid: return unary_backward_loop<Sigmoid>(x, y, gy, gx, n);
    case UnaryOp::Exp: return unary_backward_loop<Exp>(x, y, gy, gx, n);
    case UnaryOp::Log: return unary_backward_loop<Log>(x, y, gy, gx, n);
    case UnaryOp::Neg: return unary_backward_loop<Neg>(x, y, gy, gx, n);
    case UnaryOp::Sqrt: return unary_backward_loop<Sqrt>(x, y, gy, gx, n);
    case UnaryOp::Abs: return unary_backward_loop<Abs>(x, y, gy, gx, n);
    case UnaryOp::Square: return unary_backward_loop<Square>(x, y, gy, gx, n);
  }
}
MSTAR_SIMD_DISPATCH(unary_backward_kernel, unary_backward_body)

// ---- binary ops ----

struct Add {
  static MSTAR_INLINE float apply(float a, float b) { return a + b; }
};
struct Sub {
  static MSTAR_INLINE float apply(float a, float b) { return a - b; }
};
struct Mul {
  static MSTAR_INLINE float apply(float a, float b) { return a * b; }
};
struct Div {
  static MSTAR_INLINE float apply(float a, float b) { return a / b; }
};
struct Max {  // torch.maximum: NaN in either operand gives NaN
  static MSTAR_INLINE float apply(float a, float b) { return select((a != a) | (a > b), a, b); }
};
struct Min {
  static MSTAR_INLINE float apply(float a, float b) { return select((a != a) | (a < b), a, b); }
};

// One run: out[j] = a[j·as] ⊙ b[j·bs]. The stride patterns that broadcasting makes
// common get their own loops so the compiler sees unit or zero strides.
template <typename Op>
MSTAR_INLINE void binary_run_loop(const float* a, int64_t as, const float* b, int64_t bs, float* out, int64_t n) {
  if (as == 1 && bs == 1) {
    for (int64_t j = 0; j < n; ++j) out[j] = Op::apply(a[j], b[j]);
  } else if (as == 1 && bs == 0) {
    const float bv = b[0];
    for (int64_t j = 0; j < n; ++j) out[j] = Op::apply(a[j], bv);
  } else if (as == 0 && bs == 1) {
    const float av = a[0];
    for (int64_t j = 0; j < n; ++j) out[j] = Op::apply(av, b[j]);
  } else {
    for (int64_t j = 0; j < n; ++j) out[j] = Op::apply(a[j * as], b[j * bs]);
  }
}

template <class V>
MSTAR_INLINE void binary_run_body(BinaryOp op, const float* a, int64_t as, const float* b, int64_t bs, float* out,
                                  int64_t n) {
  switch (op) {
    case BinaryOp::Add: return binary_run_loop<Add>(a, as, b, bs, out, n);
    case BinaryOp::Sub: return binary_run_loop<Sub>(a, as, b, bs, out, n);
    case BinaryOp::Mul: return binary_run_loop<Mul>(a, as, b, bs, out, n);
    case BinaryOp::Div: return binary_run_loop<Div>(a, as, b, bs, out, n);
    case BinaryOp::Max: return binary_run_loop<Max>(a, as, b, bs, out, n);
    case BinaryOp::Min: return binary_run_loop<Min>(a, as, b, bs, out, n);
  }
}
MSTAR_SIMD_DISPATCH(binary_run, binary_run_body)

// ---- linear helpers ----

template <class V>
MSTAR_INLINE void affine_body(const float* x, float* y, int64_t n, float alpha, float beta) {
  for (int64_t i = 0; i < n; ++i) y[i] = alpha * x[i] + beta;
}
MSTAR_SIMD_DISPATCH(affine_kernel, affine_body)

template <class V>
MSTAR_INLINE void axpy_body(const float* x, float* y, int64_t n, float alpha) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}
MSTAR_SIMD_DISPATCH(axpy_kernel, axpy_body)

}  // namespace

void unary_forward(UnaryOp op, const float* x, float* y, int64_t n) {
  parallel_for(n, is_costly(op) ? kCostlyGrain : kCheapGrain,
               [&](int64_t begin, int64_t end) { unary_forward_kernel(op, x + begin, y + begin, end - begin); });
}

void unary_backward(UnaryOp op, const float* x, const float* y, const float* gy, float* gx, int64_t n) {
  const int64_t grain = op == UnaryOp::Gelu ? kCostlyGrain : kCheapGrain;
  parallel_for(n, grain, [&](int64_t begin, int64_t end) {
    unary_backward_kernel(op, x + begin, y + begin, gy + begin, gx + begin, end - begin);
  });
}

void binary_forward(BinaryOp op, const float* a, const float* b, float* out, const std::vector<int64_t>& shape,
                    const std::vector<int64_t>& a_strides, const std::vector<int64_t>& b_strides) {
  const std::vector<int64_t> out_strides = contiguous_strides(shape);
  const std::vector<int64_t>* strides[3] = {&a_strides, &b_strides, &out_strides};
  const StridedLayout<3> layout = make_layout<3>(shape, strides);
  const int64_t as = layout.inner_stride(0), bs = layout.inner_stride(1);
  parallel_for(layout.numel, kCheapGrain, [&](int64_t begin, int64_t end) {
    for_each_run(layout, begin, end, [&](const int64_t* offsets, int64_t count) {
      binary_run(op, a + offsets[0], as, b + offsets[1], bs, out + offsets[2], count);
    });
  });
}

// Backward of broadcasting. After dropping size-1 src dims and merging neighbours of
// the same kind (kept/reduced), one reduced group is exactly reduce_forward's
// [outer, dim, inner] sum; several reduced groups fall back to a per-output walk over
// the reduced index space (runs along the innermost reduced dim).
void sum_to_shape(const float* src, const std::vector<int64_t>& src_shape, float* dst,
                  const std::vector<int64_t>& dst_shape) {
  MSTAR_CHECK(src_shape.size() == dst_shape.size(), Shape,
              "sum_to_shape: rank " << dst_shape.size() << " != rank " << src_shape.size());
  int64_t src_numel = 1, dst_numel = 1;
  for (size_t d = 0; d < src_shape.size(); ++d) {
    MSTAR_CHECK(dst_shape[d] == src_shape[d] || dst_shape[d] == 1, Shape,
                "sum_to_shape: dst dim " << d << " is " << dst_shape[d] << ", must be " << src_shape[d] << " or 1");
    src_numel *= src_shape[d];
    dst_numel *= dst_shape[d];
  }
  if (dst_numel == 0) return;
  if (src_numel == 0) {  // summing nothing
    std::fill(dst, dst + dst_numel, 0.0f);
    return;
  }
  // Groups of merged dims: sizes and whether they are reduced.
  std::vector<int64_t> group_size;
  std::vector<bool> group_reduced;
  for (size_t d = 0; d < src_shape.size(); ++d) {
    if (src_shape[d] == 1) continue;
    const bool reduced = dst_shape[d] == 1;
    if (!group_size.empty() && group_reduced.back() == reduced) {
      group_size.back() *= src_shape[d];
    } else {
      group_size.push_back(src_shape[d]);
      group_reduced.push_back(reduced);
    }
  }
  const int64_t reduced_groups = std::count(group_reduced.begin(), group_reduced.end(), true);
  if (reduced_groups == 0) {
    std::memcpy(dst, src, static_cast<size_t>(dst_numel) * sizeof(float));
    return;
  }
  if (reduced_groups == 1) {
    int64_t outer = 1, dim = 1, inner = 1;
    bool seen = false;
    for (size_t g = 0; g < group_size.size(); ++g) {
      if (group_reduced[g]) {
        dim = group_size[g];
        seen = true;
      } else {
        (seen ? inner : outer) *= group_size[g];
      }
    }
    reduce_forward(ReduceOp::Sum, src, dst, nullptr, outer, dim, inner);
    return;
  }
  // General case. kept: dst index space with src's strides; reduced: the index space of
  // the reduced dims (kept dims set to 1) with src's strides.
  const std::vector<int64_t> src_strides = contiguous_strides(src_shape);
  const std::vector<int64_t> dst_strides = contiguous_strides(dst_shape);
  std::vector<int64_t> reduced_shape(src_shape.size());
  for (size_t d = 0; d < src_shape.size(); ++d) reduced_shape[d] = dst_shape[d] == 1 ? src_shape[d] : 1;
  const std::vector<int64_t>* kept_strides[2] = {&src_strides, &dst_strides};
  const std::vector<int64_t>* walk_strides[1] = {&src_strides};
  const StridedLayout<2> kept = make_layout<2>(dst_shape, kept_strides);
  const StridedLayout<1> walk = make_layout<1>(reduced_shape, walk_strides);
  const int64_t walk_stride = walk.inner_stride(0);
  const int64_t kept_stride = kept.inner_stride(0);
  const int64_t grain = std::max<int64_t>(1, kCheapGrain / walk.numel);
  parallel_for(dst_numel, grain, [&](int64_t begin, int64_t end) {
    for_each_run(kept, begin, end, [&](const int64_t* offsets, int64_t count) {
      for (int64_t j = 0; j < count; ++j) {
        const float* base = src + offsets[0] + j * kept_stride;
        double sum = 0.0;
        for_each_run(walk, 0, walk.numel, [&](const int64_t* walk_offsets, int64_t run) {
          sum += sum_f64(base + walk_offsets[0], run, walk_stride);
        });
        dst[offsets[1] + j] = static_cast<float>(sum);
      }
    });
  });
}

void affine(const float* x, float* y, int64_t n, float alpha, float beta) {
  parallel_for(n, kCheapGrain,
               [&](int64_t begin, int64_t end) { affine_kernel(x + begin, y + begin, end - begin, alpha, beta); });
}

void axpy(const float* x, float* y, int64_t n, float alpha) {
  parallel_for(n, kCheapGrain,
               [&](int64_t begin, int64_t end) { axpy_kernel(x + begin, y + begin, end - begin, alpha); });
}

}  // namespace mstar
