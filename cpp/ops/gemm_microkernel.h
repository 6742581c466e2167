// The GEMM microkernel, its epilogue (alpha, beta, bias, relu / erf-GELU) and vector exp/erfc,
// written once against a small vector-traits interface so the portable, AVX2 and AVX-512 kernels
// are the same code at three widths (contract and layouts: gemm_kernel.h).
//
// Each kernel translation unit includes this header once, after choosing its ISA with
// `#pragma GCC target` (clang: `#pragma clang attribute`; the target must be in force where the
// templates are defined), and instantiates the templates with its own traits type. Everything
// here sits in an anonymous namespace, so every TU gets private copies compiled for its own ISA
// and the linker can never hand an AVX-512 instantiation to a caller on an AVX2-only CPU. Include
// the standard headers below before the pragma, so library code stays baseline.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#include "gemm_kernel.h"

namespace mstar::gemm_detail {

namespace {

// ---- vector maths on the traits interface --------------------------------------------------
// V provides: reg, W, zero, set1, load, store, bcast, fmadd(a,b,c)=a·b+c, add, sub, mul, div,
// max, min (NaN in the second operand propagates), abs, round (to nearest), pow2 (2^n for
// integral n in [-126, 127]), select_neg(x, a, b) = x < 0 ? a : b, prefetch.

// e^x, Cephes expf (range reduction by ln 2 in two parts, degree-5 polynomial): ~1 ulp.
template <class V>
inline typename V::reg vec_exp(typename V::reg x) {
  using R = typename V::reg;
  x = V::min(V::set1(88.3f), V::max(V::set1(-87.3f), x));
  R n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
  x = V::fmadd(n, V::set1(-0.693359375f), x);
  x = V::fmadd(n, V::set1(2.12194440e-4f), x);
  R y = V::set1(1.9875691500e-4f);
  y = V::fmadd(y, x, V::set1(1.3981999507e-3f));
  y = V::fmadd(y, x, V::set1(8.3334519073e-3f));
  y = V::fmadd(y, x, V::set1(4.1665795894e-2f));
  y = V::fmadd(y, x, V::set1(1.6666665459e-1f));
  y = V::fmadd(y, x, V::set1(5.0000001201e-1f));
  y = V::fmadd(y, V::mul(x, x), V::add(x, V::set1(1.0f)));
  return V::mul(y, V::pow2(n));
}

// GELU, erf form. erfc(z), z ≥ 0, by the Chebyshev fit of Numerical Recipes (erfcc, fractional
// error < 1.2e-7 everywhere), so both tails keep full relative precision:
//   x ≥ 0: gelu = x − x·erfc(z)/2,   x < 0: gelu = x·erfc(z)/2,   z = |x|/√2.
template <class V>
inline typename V::reg vec_gelu(typename V::reg x) {
  using R = typename V::reg;
  R z = V::mul(V::abs(x), V::set1(0.70710678118654752f));
  R t = V::div(V::set1(1.0f), V::fmadd(V::set1(0.5f), z, V::set1(1.0f)));
  R p = V::set1(0.17087277f);
  p = V::fmadd(p, t, V::set1(-0.82215223f));
  p = V::fmadd(p, t, V::set1(1.48851587f));
  p = V::fmadd(p, t, V::set1(-1.13520398f));
  p = V::fmadd(p, t, V::set1(0.27886807f));
  p = V::fmadd(p, t, V::set1(-0.18628806f));
  p = V::fmadd(p, t, V::set1(0.09678418f));
  p = V::fmadd(p, t, V::set1(0.37409196f));
  p = V::fmadd(p, t, V::set1(1.00002368f));
  p = V::fmadd(p, t, V::set1(-1.26551223f));
  // p − z² as p − x²/2 in one fused step (−x/2 is exact), not from the rounded z.
  R erfc = V::mul(t, vec_exp<V>(V::fmadd(V::mul(V::set1(-0.5f), x), x, p)));
  R h = V::mul(V::mul(V::set1(0.5f), erfc), x);
  return V::select_neg(x, h, V::sub(x, h));
}

template <class V>
inline typename V::reg vec_activation(typename V::reg x, int act) {
  if (act == 1) return V::max(V::zero(), x);  // max(0, NaN) = NaN, as torch.relu
  return vec_gelu<V>(x);
}

template <class V>
void apply_activation(float* c, int64_t ldc, int64_t rows, int64_t cols, int act) {
  if (act == 0) return;
  constexpr int W = V::W;
  for (int64_t r = 0; r < rows; ++r) {
    float* row = c + r * ldc;
    int64_t j = 0;
    for (; j + W <= cols; j += W) V::store(row + j, vec_activation<V>(V::load(row + j), act));
    if (j < cols) {  // the tail goes through the same vector code, so results do not depend on position
      float tmp[W] = {};
      std::memcpy(tmp, row + j, sizeof(float) * (cols - j));
      V::store(tmp, vec_activation<V>(V::load(tmp), act));
      std::memcpy(row + j, tmp, sizeof(float) * (cols - j));
    }
  }
}

// The store of a partial tile (cols < nr): rare, so plain scalar code from a spilled tile.
inline void store_partial_tile(const float* tile, int tile_ld, int rows, const MicroArgs& p) {
  for (int r = 0; r < rows; ++r) {
    float* crow = p.c + r * p.ldc;
    for (int j = 0; j < p.cols; ++j) {
      float v = p.alpha * tile[r * tile_ld + j];
      if (p.load_c) v += p.beta * crow[j];
      if (p.bias) v += p.bias[j];
      crow[j] = v;
    }
  }
}

// ---- the microkernel ----------------------------------------------------------------------
// ROWS×(NV·W) accumulators in registers; per k step: NV vector loads of B, ROWS broadcasts of A,
// ROWS·NV FMAs. The loop body has no branches; edge rows are separate instantiations
// (ROWS < MR), edge columns are zero-padded in the B panel and masked at the store.
template <class V, int MR, int NV, int ROWS>
void micro_kernel(const MicroArgs& p) {
  using R = typename V::reg;
  constexpr int W = V::W;
  constexpr int NR = NV * W;
  // The C tile is read/written only after the K loop; start fetching it now so the epilogue does
  // not wait on memory.
#pragma GCC unroll 16
  for (int r = 0; r < ROWS; ++r) {
    const float* crow = p.c + r * p.ldc;
#pragma GCC unroll 4
    for (int j = 0; j < NR; j += 16) V::prefetch(crow + j);
    V::prefetch(crow + NR - 1);
  }

  R acc[ROWS][NV];
#pragma GCC unroll 16
  for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[r][j] = V::zero();

  const float* a = p.a;
  const float* b = p.b;
  for (int64_t k = p.kc; k > 0; --k) {
    R bv[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) bv[j] = V::load(b + j * W);
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r) {
      R av = V::bcast(a + r);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[r][j] = V::fmadd(av, bv[j], acc[r][j]);
    }
    a += MR;
    b += NR;
  }

  if (p.cols == NR) {
    const R alpha = V::set1(p.alpha);
    const R beta = V::set1(p.beta);
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r) {
      float* crow = p.c + r * p.ldc;
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) {
        R v = V::mul(acc[r][j], alpha);
        if (p.load_c) v = V::fmadd(beta, V::load(crow + j * W), v);
        if (p.bias) v = V::add(v, V::load(p.bias + j * W));
        V::store(crow + j * W, v);
      }
    }
  } else {
    float tile[ROWS * NR];
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) V::store(tile + r * NR + j * W, acc[r][j]);
    store_partial_tile(tile, NR, ROWS, p);
  }
  if (p.act != 0) apply_activation<V>(p.c, p.ldc, ROWS, p.cols, p.act);
}

template <class V, int MR, int NV, int... I>
constexpr KernelTable make_kernel_table_impl(std::integer_sequence<int, I...>) {
  return KernelTable{{nullptr, &micro_kernel<V, MR, NV, I + 1>...}};
}

// fn[rows] = micro_kernel<V, MR, NV, rows> for rows = 1..MR.
template <class V, int MR, int NV>
constexpr KernelTable make_kernel_table() {
  static_assert(MR <= kMaxMr, "MR too large");
  return make_kernel_table_impl<V, MR, NV>(std::make_integer_sequence<int, MR>{});
}

}  // namespace
}  // namespace mstar::gemm_detail
