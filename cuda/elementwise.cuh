// Elementwise unary ops (forward and backward) and broadcast binary ops: the CUDA twin
// of cpp/ops/elementwise (same contracts as unaryForward/unaryBackward/binaryForward in
// lib/native.ts). float32 or bfloat16 storage, float32 arithmetic.
#pragma once
#include <cstdint>
#include <vector>

#include "types.cuh"

namespace mstar::cuda {

// Values match UnaryOp in lib/native.ts.
enum class UnaryOp : int32_t {
  Relu = 0,
  Gelu = 1,  // erf form: x/2 · (1 + erf(x/√2))
  Tanh = 2,
  Sigmoid = 3,
  Exp = 4,
  Log = 5,
  Neg = 6,
  Sqrt = 7,
  Abs = 8,
  Square = 9,
};
constexpr int32_t kUnaryOpCount = 10;

// Values match BinaryOp in lib/native.ts.
enum class BinaryOp : int32_t { Add = 0, Sub = 1, Mul = 2, Div = 3, Max = 4, Min = 5 };
constexpr int32_t kBinaryOpCount = 6;

// y[i] = f(x[i]) for i < n; x, y in `dtype`.
void unary_forward(UnaryOp op, Dtype dtype, DeviceSpan x, DeviceSpan y, int64_t n);

// gx[i] = gy[i] · f'(x[i]); y = f(x) is read by the ops whose derivative is cheaper
// from it (tanh, sigmoid, exp, sqrt). Derivatives at kinks follow torch: relu'(0) = 0,
// abs'(0) = 0.
void unary_backward(UnaryOp op, Dtype dtype, DeviceSpan x, DeviceSpan y, DeviceSpan gy, DeviceSpan gx, int64_t n);

// out (contiguous, `shape`) = a ⊙ b, with a and b read through non-negative element
// strides (0 on broadcast dims): out[idx] = op(a[Σ idx·a_strides], b[Σ idx·b_strides]).
// Max/Min propagate NaN, like torch.maximum/minimum.
void binary_forward(BinaryOp op, Dtype dtype, DeviceSpan a, DeviceSpan b, DeviceSpan out,
                    const std::vector<int64_t>& shape, const std::vector<int64_t>& a_strides,
                    const std::vector<int64_t>& b_strides);

}  // namespace mstar::cuda
