// Elementwise unary ops (forward, backward) and broadcast binary ops on CUDA; the
// contracts are in elementwise.cuh. These are bandwidth-bound: grid-stride loops, one
// element per thread per step, the op chosen by a uniform switch (no divergence).
// Broadcast indexing runs on shapes collapsed on the host (size-1 dims dropped,
// dims that are contiguous for both inputs merged), so typical cases become rank 1–3.
#include <algorithm>

#include "common.cuh"
#include "elementwise.cuh"

namespace mstar::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxRank = 6;

__device__ __forceinline__ float unary_value(UnaryOp op, float x) {
  switch (op) {
    case UnaryOp::Relu: return x > 0.0f ? x : 0.0f;
    case UnaryOp::Gelu: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case UnaryOp::Tanh: return tanhf(x);
    case UnaryOp::Sigmoid: return 1.0f / (1.0f + expf(-x));
    case UnaryOp::Exp: return expf(x);
    case UnaryOp::Log: return logf(x);
    case UnaryOp::Neg: return -x;
    case UnaryOp::Sqrt: return sqrtf(x);
    case UnaryOp::Abs: return fabsf(x);
    case UnaryOp::Square: return x * x;
  }
  return x;
}

// d f(x) / dx, given x and y = f(x).
__device__ __forceinline__ float unary_derivative(UnaryOp op, float x, float y) {
  switch (op) {
    case UnaryOp::Relu: return x > 0.0f ? 1.0f : 0.0f;
    case UnaryOp::Gelu: {
      // Φ(x) + x·φ(x)
      const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
      const float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
      return cdf + x * pdf;
    }
    case UnaryOp::Tanh: return 1.0f - y * y;
    case UnaryOp::Sigmoid: return y * (1.0f - y);
    case UnaryOp::Exp: return y;
    case UnaryOp::Log: return 1.0f / x;
    case UnaryOp::Neg: return -1.0f;
    case UnaryOp::Sqrt: return 0.5f / y;
    case UnaryOp::Abs: return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
    case UnaryOp::Square: return 2.0f * x;
  }
  return 0.0f;
}

__device__ __forceinline__ float binary_value(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
    case BinaryOp::Max: return (a > b || a != a) ? a : b;  // NaN in either operand wins
    case BinaryOp::Min: return (a < b || a != a) ? a : b;
  }
  return a;
}

template <typename T>
__global__ void unary_forward_kernel(UnaryOp op, const T* x, T* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    y[i] = from_float<T>(unary_value(op, to_float(x[i])));
  }
}

template <typename T>
__global__ void unary_backward_kernel(UnaryOp op, const T* x, const T* y, const T* gy, T* gx, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    gx[i] = from_float<T>(to_float(gy[i]) * unary_derivative(op, to_float(x[i]), to_float(y[i])));
  }
}

// A broadcast walk over `rank` dims (innermost last); passed by value to the kernel.
struct BroadcastShape {
  int rank;
  int64_t size[kMaxRank];
  int64_t a_stride[kMaxRank];
  int64_t b_stride[kMaxRank];
};

template <typename T>
__global__ void binary_forward_kernel(BinaryOp op, const T* a, const T* b, T* out, BroadcastShape shape, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    int64_t rest = i, a_offset = 0, b_offset = 0;
    for (int d = shape.rank - 1; d >= 0; --d) {
      const int64_t coord = rest % shape.size[d];
      rest /= shape.size[d];
      a_offset += coord * shape.a_stride[d];
      b_offset += coord * shape.b_stride[d];
    }
    out[i] = from_float<T>(binary_value(op, to_float(a[a_offset]), to_float(b[b_offset])));
  }
}

// Drops size-1 dims and merges neighbours that are contiguous for both inputs.
BroadcastShape collapse(const std::vector<int64_t>& shape, const std::vector<int64_t>& a_strides,
                        const std::vector<int64_t>& b_strides) {
  struct Dim {
    int64_t size, a, b;
  };
  std::vector<Dim> dims;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    const Dim cur{shape[d], a_strides[d], b_strides[d]};
    if (!dims.empty() && dims.back().a == cur.a * cur.size && dims.back().b == cur.b * cur.size) {
      dims.back() = Dim{dims.back().size * cur.size, cur.a, cur.b};
    } else {
      dims.push_back(cur);
    }
  }
  MSTAR_CHECK(dims.size() <= static_cast<size_t>(kMaxRank), Unsupported,
              "binaryForward: broadcast of rank " << dims.size() << " after merging dims (CUDA handles up to "
                                                  << kMaxRank << ")");
  BroadcastShape out{};
  out.rank = static_cast<int>(dims.size());
  for (size_t d = 0; d < dims.size(); ++d) {
    out.size[d] = dims[d].size;
    out.a_stride[d] = dims[d].a;
    out.b_stride[d] = dims[d].b;
  }
  return out;
}

void check_dtype(Dtype dtype, const char* op) {
  MSTAR_CHECK(dtype == Dtype::F32 || dtype == Dtype::BF16, Unsupported,
              op << ": CUDA supports float32 and bfloat16, not " << dtype_name(dtype));
}

}  // namespace

void unary_forward(UnaryOp op, Dtype dtype, DeviceSpan x, DeviceSpan y, int64_t n) {
  check_dtype(dtype, "unaryForward");
  MSTAR_CHECK(static_cast<int32_t>(op) >= 0 && static_cast<int32_t>(op) < kUnaryOpCount, Argument,
              "unaryForward: unknown op " << static_cast<int32_t>(op));
  MSTAR_CHECK(n >= 0, Argument, "unaryForward: n must be >= 0");
  require_span(x, n, "unaryForward: x");
  require_span(y, n, "unaryForward: y");
  if (n == 0) return;
  const dim3 grid(grid_for(n, kThreads));
  if (dtype == Dtype::BF16) {
    launch("unary_forward", unary_forward_kernel<bfloat16>, grid, dim3(kThreads), 0, op,
           static_cast<const bfloat16*>(x.data), static_cast<bfloat16*>(y.data), n);
  } else {
    launch("unary_forward", unary_forward_kernel<float>, grid, dim3(kThreads), 0, op,
           static_cast<const float*>(x.data), static_cast<float*>(y.data), n);
  }
}

void unary_backward(UnaryOp op, Dtype dtype, DeviceSpan x, DeviceSpan y, DeviceSpan gy, DeviceSpan gx, int64_t n) {
  check_dtype(dtype, "unaryBackward");
  MSTAR_CHECK(static_cast<int32_t>(op) >= 0 && static_cast<int32_t>(op) < kUnaryOpCount, Argument,
              "unaryBackward: unknown op " << static_cast<int32_t>(op));
  MSTAR_CHECK(n >= 0, Argument, "unaryBackward: n must be >= 0");
  require_span(x, n, "unaryBackward: x");
  require_span(y, n, "unaryBackward: y");
  require_span(gy, n, "unaryBackward: gy");
  require_span(gx, n, "unaryBackward: gx");
  if (n == 0) return;
  const dim3 grid(grid_for(n, kThreads));
  if (dtype == Dtype::BF16) {
    launch("unary_backward", unary_backward_kernel<bfloat16>, grid, dim3(kThreads), 0, op,
           static_cast<const bfloat16*>(x.data), static_cast<const bfloat16*>(y.data),
           static_cast<const bfloat16*>(gy.data), static_cast<bfloat16*>(gx.data), n);
  } else {
    launch("unary_backward", unary_backward_kernel<float>, grid, dim3(kThreads), 0, op,
           static_cast<const float*>(x.data), static_cast<const float*>(y.data), static_cast<const float*>(gy.data),
           static_cast<float*>(gx.data), n);
  }
}

void binary_forward(BinaryOp op, Dtype dtype, DeviceSpan a, DeviceSpan b, DeviceSpan out,
                    const std::vector<int64_t>& shape, const std::vector<int64_t>& a_strides,
                    const std::vector<int64_t>& b_strides) {
  check_dtype(dtype, "binaryForward");
  MSTAR_CHECK(static_cast<int32_t>(op) >= 0 && static_cast<int32_t>(op) < kBinaryOpCount, Argument,
              "binaryForward: unknown op " << static_cast<int32_t>(op));
  MSTAR_CHECK(a_strides.size() == shape.size() && b_strides.size() == shape.size(), Shape,
              "binaryForward: shape has " << shape.size() << " dims but the strides have " << a_strides.size()
                                          << " and " << b_strides.size());
  int64_t n = 1, a_last = 0, b_last = 0;
  for (size_t d = 0; d < shape.size(); ++d) {
    MSTAR_CHECK(shape[d] >= 0, Argument, "binaryForward: shape[" << d << "] must be >= 0");
    MSTAR_CHECK(a_strides[d] >= 0 && b_strides[d] >= 0, Argument, "binaryForward: strides must be >= 0");
    n = mul_size(n, shape[d], "binaryForward");
    if (shape[d] > 0) {
      a_last = add_size(a_last, mul_size(shape[d] - 1, a_strides[d], "binaryForward"), "binaryForward");
      b_last = add_size(b_last, mul_size(shape[d] - 1, b_strides[d], "binaryForward"), "binaryForward");
    }
  }
  if (n == 0) return;
  require_span(a, a_last + 1, "binaryForward: a");
  require_span(b, b_last + 1, "binaryForward: b");
  require_span(out, n, "binaryForward: out");
  const BroadcastShape collapsed = collapse(shape, a_strides, b_strides);
  const dim3 grid(grid_for(n, kThreads));
  if (dtype == Dtype::BF16) {
    launch("binary_forward", binary_forward_kernel<bfloat16>, grid, dim3(kThreads), 0, op,
           static_cast<const bfloat16*>(a.data), static_cast<const bfloat16*>(b.data),
           static_cast<bfloat16*>(out.data), collapsed, n);
  } else {
    launch("binary_forward", binary_forward_kernel<float>, grid, dim3(kThreads), 0, op,
           static_cast<const float*>(a.data), static_cast<const float*>(b.data), static_cast<float*>(out.data),
           collapsed, n);
  }
}

}  // namespace mstar::cuda
