// fp32 GEMM of the CPU engine (BLAS sgemm semantics, row-major, strided batch, fused epilogue).
//
// For each batch index b < batch:
//   C_b[m×n] = act(alpha · op(A_b) · op(B_b) + beta · C_b + bias[n])
// with A_b = a + b·stride_a, B_b = b + b·stride_b, C_b = c + b·stride_c (stride 0 broadcasts an operand).
//   op(A) = A, stored [m×k] with lda ≥ k, or (trans_a) Aᵀ with A stored [k×m], lda ≥ m;
//   op(B) = B, stored [k×n] with ldb ≥ n, or (trans_b) Bᵀ with B stored [n×k], ldb ≥ k;
//   C stored [m×n] with ldc ≥ n.
// beta = 0 ignores C's old contents (NaN included), as BLAS does; alpha = 0 or k = 0 does not read A or B.
// bias (length n, may be null) is added to every row. act: none, relu, gelu (erf form, not the tanh
// approximation: 0.5·x·(1 + erf(x/√2)), as torch.nn.GELU()).
//
// Reference: the BLAS sgemm contract (netlib reference BLAS) and the BLIS/GotoBLAS blocked design
// (Van Zee & van de Geijn, "BLIS: A Framework for Rapidly Instantiating BLAS Functionality", 2015):
// packed A and B panels, a register-blocked microkernel, blocking for L1/L2/L3. The kernels live in
// gemm.cc (driver, portable kernel), gemm_avx2.cc and gemm_avx512.cc (chosen at run time from
// mstar::simd_level(), so one binary runs on any x86-64 CPU).
#pragma once
#include <cstdint>

namespace mstar {

enum class GemmActivation : int { None = 0, Relu = 1, Gelu = 2 };

struct GemmParams {
  const float* a = nullptr;
  const float* b = nullptr;
  float* c = nullptr;
  const float* bias = nullptr;  // [n] or nullptr
  int64_t batch = 1, m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;  // elements between batch items
  float alpha = 1.0f, beta = 0.0f;
  GemmActivation activation = GemmActivation::None;
};

// Element counts each operand must hold (0 when the operand is not read), so callers can check
// buffer lengths before calling. Throws Error(Shape) when the sizes overflow int64.
struct GemmExtents {
  int64_t a, b, c, bias;
};
GemmExtents gemm_extents(const GemmParams& p);

// Throws Error(Shape/Argument) unless every size, leading dimension, stride and the activation are
// valid (pointers are not looked at, so a binding can check lengths in between).
void gemm_check(const GemmParams& p);

// Checks `p` (and that every operand it reads is non-null), then computes. Runs on the process
// thread pool.
void gemm(const GemmParams& p);

}  // namespace mstar
