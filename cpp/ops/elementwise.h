// Elementwise kernels (float32), forward above backward:
//
//   unary_forward   y[i] = f(x[i])                                   x, y: [n]
//   unary_backward  gx[i] = gy[i] · f'(x[i])   (from y where cheaper) all: [n]
//   binary_forward  out[idx] = a[Σ idx·a_strides] ⊙ b[Σ idx·b_strides] out: shape, contiguous
//   sum_to_shape    the backward of broadcasting: dst[j] = Σ src entries that broadcast
//                   onto j; src contiguous src_shape, dst contiguous dst_shape (same rank,
//                   every dst dim equal to the src dim or 1)
//   affine          y[i] = α·x[i] + β                                  [n]
//   axpy            y[i] += α·x[i]                                     [n]
//
// Semantics follow PyTorch: relu(NaN) = NaN and relu'(0) = 0; GELU is the erf form
// x·Φ(x) (torch.nn.functional.gelu, approximate='none'); max/min propagate NaN
// (torch.maximum/minimum); sqrt'(x) = 1/(2·sqrt(x)); |x|' = sgn(x). Transcendentals
// use vec_math.h (within 5e-7 relative of float64, tails included); GELU(−Inf) = −0
// and GELU'(±Inf) = 0 / 1 (the limits) rather than NaN. x and y may alias (in place);
// sum_to_shape accumulates in float64 in a fixed order, so its result does not
// depend on the thread count.
#pragma once
#include <cstdint>
#include <vector>

namespace mstar {

// Matches lib/native.ts UnaryOp.
enum class UnaryOp : int32_t { Relu = 0, Gelu, Tanh, Sigmoid, Exp, Log, Neg, Sqrt, Abs, Square };
constexpr int kUnaryOpCount = 10;

// Matches lib/native.ts BinaryOp.
enum class BinaryOp : int32_t { Add = 0, Sub, Mul, Div, Max, Min };
constexpr int kBinaryOpCount = 6;

void unary_forward(UnaryOp op, const float* x, float* y, int64_t n);
void unary_backward(UnaryOp op, const float* x, const float* y, const float* gy, float* gx, int64_t n);

// shape, a_strides and b_strides have equal lengths (<= 64); the caller has checked
// that every strided read stays inside a and b. out must not overlap a or b unless
// it is the very same contiguous array (same-index reads and writes).
void binary_forward(BinaryOp op, const float* a, const float* b, float* out, const std::vector<int64_t>& shape,
                    const std::vector<int64_t>& a_strides, const std::vector<int64_t>& b_strides);

// dst must not overlap src.
void sum_to_shape(const float* src, const std::vector<int64_t>& src_shape, float* dst,
                  const std::vector<int64_t>& dst_shape);

void affine(const float* x, float* y, int64_t n, float alpha, float beta);
void axpy(const float* x, float* y, int64_t n, float alpha);

}  // namespace mstar
