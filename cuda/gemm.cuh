// Batched GEMM on tensor cores with a bias/activation epilogue: the CUDA twin of
// cpp/ops/gemm (same contract as `gemm` in lib/native.ts).
#pragma once
#include <cstdint>

#include "types.cuh"

namespace mstar::cuda {

// Values match Activation in lib/native.ts.
enum class Activation : int32_t { None = 0, Relu = 1, Gelu = 2 };

// How float32 operands are multiplied; bfloat16 operands always use bf16 tensor cores
// (m16n8k16) with float32 accumulation.
enum class GemmMath : int32_t {
  // 3xTF32: each operand is split into a tf32 head and a tf32 remainder and three
  // tensor-core products are summed, which recovers float32-level accuracy. Default,
  // because it matches the CPU kernel within float32 rounding.
  Fp32 = 0,
  // One tf32 product (10-bit mantissa inputs, float32 accumulation): about 3x faster,
  // relative error ~1e-3. What torch calls allow_tf32.
  Tf32 = 1,
};

struct GemmParams {
  Dtype dtype = Dtype::F32;  // storage type of a, b, c and bias
  GemmMath math = GemmMath::Fp32;
  DeviceSpan a, b, c;
  DeviceSpan bias;  // [n]; data == nullptr: no bias
  int64_t batch = 1, m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;  // elements between batch items; 0 broadcasts
  float alpha = 1.0f, beta = 0.0f;
  Activation activation = Activation::None;
};

// For each batch index b (all matrices row-major):
//   C_b[m×n] = act(alpha · op(A_b) · op(B_b) + beta · C_b + bias[n])
// op(A) is A [m×k] (lda >= k) or, with trans_a, Aᵀ of A stored [k×m] (lda >= m); op(B) is
// B [k×n] (ldb >= n) or, with trans_b, Bᵀ of B stored [n×k] (ldb >= k). X_b = x + b·stride_x.
// beta == 0 ignores C's old contents (NaN included). C must not overlap A, B or bias.
// Checks every argument and extent, then queues the kernel on the engine stream.
void gemm(const GemmParams& params);

}  // namespace mstar::cuda
