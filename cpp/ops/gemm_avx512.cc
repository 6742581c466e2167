// AVX-512 GEMM kernels (see gemm.h for what GEMM computes, gemm_microkernel.h for the kernel).
//
// Microkernel 14×32: 28 zmm accumulators + 2 zmm of B + 1 broadcast of A use 31 of the 32
// registers; each k step is 2 aligned loads of B and 14 vbroadcastss of A from L1 for 28 FMAs
// (16 loads per 28 FMAs, well inside two load ports). 28 independent accumulators cover the FMA
// latency of two 512-bit pipes (Zen 4/5, Skylake-X). Measured on Zen 5 with both panels in L1/L2:
// ~200 GFLOP/s on one core, the FMA roof. Packing reuses the AVX2 packers.
//
// Compiled with the same flags as every other source; the ISA is chosen by the pragma below and
// the kernels are only called when mstar::simd_level() says AVX-512 is there.
#include "gemm_kernel.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

// GCC 12's _mm512_undefined_ps() trips -Wmaybe-uninitialized inside the intrinsics headers
// (GCC bug 105593); the diagnostic is location based, so it is silenced before the include.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c")
#endif

#include "gemm_microkernel.h"

namespace mstar::gemm_detail {
namespace {

struct Avx512Vec {
  using reg = __m512;
  static constexpr int W = 16;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg set1(float x) { return _mm512_set1_ps(x); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static reg bcast(const float* p) { return _mm512_set1_ps(*p); }
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm512_div_ps(a, b); }
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static reg abs(reg x) { return _mm512_abs_ps(x); }
  static reg round(reg x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static reg pow2(reg n) {
    __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
  static reg select_neg(reg x, reg a, reg b) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), b, a);
  }
  static void prefetch(const float* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }
};

constexpr KernelSet kAvx512Kernels = {
    "avx512",
    /*mr=*/14,
    /*nr=*/32,
    /*kc=*/384,
    /*mc=*/2016,
    /*nc=*/256,
    make_kernel_table<Avx512Vec, 14, 2>(),
    &pack_transposed_avx2,
    &pack_direct_avx2,
    &apply_activation<Avx512Vec>,
};

}  // namespace
}  // namespace mstar::gemm_detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace mstar::gemm_detail {
const KernelSet& kernels_avx512() { return kAvx512Kernels; }
}  // namespace mstar::gemm_detail

#else  // not x86: simd_level() is always Portable there, so this set is never chosen.

namespace mstar::gemm_detail {
const KernelSet& kernels_avx512() { return kernels_portable(); }
}  // namespace mstar::gemm_detail

#endif
