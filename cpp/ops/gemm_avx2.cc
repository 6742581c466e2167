// AVX2 + FMA GEMM kernels (see gemm.h for what GEMM computes, gemm_microkernel.h for the kernel),
// and the AVX2 panel packers, which the AVX-512 kernels reuse.
//
// Microkernel 6×16: 12 ymm accumulators + 2 ymm of B + 1 broadcast of A fill 15 of the 16 ymm
// registers (the classic Haswell shape); 12 independent FMA chains cover 2 pipes × 5-cycle latency.
//
// Compiled with the same flags as every other source; the ISA is chosen by the pragma below and
// the code is only called when mstar::simd_level() is AVX2 or better.
#include "gemm_kernel.h"

#if defined(__x86_64__) || defined(__i386__)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#include "gemm_microkernel.h"

namespace mstar::gemm_detail {
namespace {

struct Avx2Vec {
  using reg = __m256;
  static constexpr int W = 8;
  static reg zero() { return _mm256_setzero_ps(); }
  static reg set1(float x) { return _mm256_set1_ps(x); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static reg bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static reg abs(reg x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }
  static reg round(reg x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static reg pow2(reg n) {
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  // blendv looks at the sign bit: -0 and negative NaNs pick `a`, which gives the same value.
  static reg select_neg(reg x, reg a, reg b) { return _mm256_blendv_ps(b, a, x); }
  static void prefetch(const float* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }
};

// In-register transpose of an 8×8 block (rows r[0..7] become columns).
inline void transpose8x8(__m256 r[8]) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Packing prefetch distances: rows ahead for the direct packer, floats ahead along each row for
// the transposing one (the column loop is 8 floats a step, so 64 is 8 steps, 4 cache lines).
constexpr int64_t kPrefetchRows = 4;
constexpr int64_t kPrefetchColumns = 128;

// Lane mask with the first n (0..8) lanes set, for maskload (which never faults on masked lanes).
inline __m256i first_lanes(int n) {
  static const int32_t table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table + 8 - n));
}

constexpr KernelSet kAvx2Kernels = {
    "avx2",
    /*mr=*/6,
    /*nr=*/16,
    /*kc=*/256,
    /*mc=*/2016,
    /*nc=*/512,
    make_kernel_table<Avx2Vec, 6, 2>(),
    &pack_transposed_avx2,
    &pack_direct_avx2,
    &apply_activation<Avx2Vec>,
};

}  // namespace

// Panel lanes are rows of src: 8×8 blocks are transposed in registers and written as 8-float
// slices, one group of 8 lanes at a time (8 read streams, which the prefetchers follow better than
// all pr at once). When pr is not a multiple of 8 the last group's stores run into the next k
// slice; groups are therefore written last-first, so a later group overwrites the spill, and the
// final slice spills into the panel slack.
void pack_transposed_avx2(const float* src, int64_t ld, int64_t width, int64_t kc, int pr, float* dst,
                          int64_t panel_stride) {
  const int groups = (pr + 7) / 8;
  for (int64_t q = 0; q * pr < width; ++q) {
    const float* s = src + q * pr * ld;
    float* d = dst + q * panel_stride;
    const int64_t lanes = std::min<int64_t>(pr, width - q * pr);
    const int64_t k_main = kc & ~int64_t{7};
    for (int g = groups - 1; g >= 0; --g) {
      const float* row[8];
      int valid = 0;
      for (int i = 0; i < 8; ++i) {
        const int64_t lane = g * 8 + i;
        row[i] = lane < lanes ? s + lane * ld : nullptr;
        valid += lane < lanes;
      }
      for (int64_t k0 = 0; k0 < k_main; k0 += 8) {
        // Each row is a stream; fetch it a few lines ahead, once per line.
        if ((k0 & 15) == 0 && k0 + kPrefetchColumns < kc) {
          for (int i = 0; i < valid; ++i) _mm_prefetch(reinterpret_cast<const char*>(row[i] + k0 + kPrefetchColumns), _MM_HINT_T0);
        }
        __m256 r[8];
        for (int i = 0; i < 8; ++i) r[i] = row[i] ? _mm256_loadu_ps(row[i] + k0) : _mm256_setzero_ps();
        transpose8x8(r);
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(d + (k0 + i) * pr + g * 8, r[i]);
      }
    }
    for (int64_t k = k_main; k < kc; ++k) {
      for (int i = 0; i < pr; ++i) d[k * pr + i] = i < lanes ? s[i * ld + k] : 0.0f;
    }
  }
}

// Panel lanes are contiguous in src: copy 8 at a time; a partial group is a masked load (no read
// past the caller's data) stored 8-wide (the spill lands in the next slice or the slack).
void pack_direct_avx2(const float* src, int64_t ld, int64_t width, int64_t kc, int pr, float* dst,
                      int64_t panel_stride) {
  for (int64_t k = 0; k < kc; ++k) {
    const float* s = src + k * ld;
    // Rows are short streams (a few KB) far apart, too short for the hardware prefetcher to ramp
    // up: without this the packing of B waits on memory latency row after row.
    if (k + kPrefetchRows < kc) {
      const float* ahead = s + kPrefetchRows * ld;
      for (int64_t j = 0; j < width; j += 16) _mm_prefetch(reinterpret_cast<const char*>(ahead + j), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(ahead + width - 1), _MM_HINT_T0);
    }
    for (int64_t q = 0; q * pr < width; ++q) {
      float* d = dst + q * panel_stride + k * pr;
      for (int j = 0; j < pr; j += 8) {
        int64_t n = width - q * pr - j;
        __m256 v = n >= 8  ? _mm256_loadu_ps(s + q * pr + j)
                   : n > 0 ? _mm256_maskload_ps(s + q * pr + j, first_lanes(static_cast<int>(n)))
                           : _mm256_setzero_ps();
        _mm256_storeu_ps(d + j, v);
      }
    }
  }
}

}  // namespace mstar::gemm_detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace mstar::gemm_detail {
const KernelSet& kernels_avx2() { return kAvx2Kernels; }
}  // namespace mstar::gemm_detail

#else  // not x86: simd_level() is always Portable there, so this set is never chosen.

namespace mstar::gemm_detail {
const KernelSet& kernels_avx2() { return kernels_portable(); }
}  // namespace mstar::gemm_detail

#endif
