// Vectorized float32 math shared by the CPU kernels:
//   - exp_scalar / exp_avx2 / exp_avx512: one exp algorithm at three widths, so every
//     SIMD level (and the scalar tail of a vector loop) agrees up to rounding;
//   - vector traits Scalar / Avx2 / Avx512 with the few operations row kernels need;
//   - generic row helpers written once against the traits (row_max, map_sum(s), map_each);
//   - MSTAR_SIMD_DISPATCH, which turns a kernel template over the traits into one
//     entry point per SIMD level plus a dispatcher on mstar::simd_level().
//
// How SIMD code is compiled: the addon is built for baseline x86-64 (or any other CPU)
// and must run everywhere, so wide code lives only in functions with a GCC/Clang
// `target` attribute. A kernel is a template over a traits type V; its entry points
// (MSTAR_TARGET_AVX2 / MSTAR_TARGET_AVX512) add `flatten`, which inlines the whole call
// tree (lambdas, helpers, traits) into a function compiled for that ISA. Plain scalar
// loops inside such a kernel are auto-vectorized for that ISA as well.
//
// exp accuracy (Cephes expf: n = round(x·log2 e), r = x − n·ln2 with ln2 split in two
// parts so n·ln2_hi is exact, degree-6 minimax polynomial for e^r on |r| ≤ ln2/2, then
// scale by 2^n): max relative error 8.4e-8 (under 1.5 ulp) against float64, measured
// on 4M evenly spaced points of [−87.3, 88.72] at every level. Special values follow
// IEEE: exp(−inf) = +0, exp(+inf) = +inf, exp(NaN) = NaN, x > 88.7228 overflows to +inf. Deviation from expf: results that
// would be subnormal (x < −87.3365, true value < FLT_MIN = 1.18e-38) are flushed to
// +0 — the absolute error is below 1.2e-38, and subnormals would slow every later
// operation that touches them (sums of softmax numerators, for instance).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "../core/cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#define MSTAR_SIMD_X86 1
#include <immintrin.h>
#else
#define MSTAR_SIMD_X86 0
#endif

// The generic kernels pass __m256/__m512 values between inline functions that are
// compiled without AVX before `flatten` inlines them into the target entry point;
// GCC warns that such a call would change the ABI. No vector ever crosses a real
// call boundary (everything is inlined into one function), so the warning is noise.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#define MSTAR_TARGET_AVX2 __attribute__((target("avx2,fma"), flatten))
#define MSTAR_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"), flatten))
// For small inline building blocks (no flatten: they are the leaves).
#define MSTAR_INLINE_AVX2 __attribute__((target("avx2,fma"))) inline
#define MSTAR_INLINE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) inline

namespace mstar::simd {

// ---- exp -------------------------------------------------------------------------

// Outside [kExpLo, kExpHi] the result is +0 / +inf (see the header comment).
constexpr float kExpLo = -87.3365447f;      // ln(FLT_MIN)
constexpr float kExpHi = 88.7228317f;       // largest float x with exp(x) < FLT_MAX
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;      // 9 significant bits: n·kLn2Hi is exact for |n| ≤ 2^15
constexpr float kLn2Lo = -2.12194440e-4f;   // ln 2 − kLn2Hi
// Cephes expf polynomial: e^r ≈ 1 + r + r²·P(r) on |r| ≤ ln2/2.
constexpr float kExpP0 = 1.9875691500e-4f;
constexpr float kExpP1 = 1.3981999507e-3f;
constexpr float kExpP2 = 8.3334519073e-3f;
constexpr float kExpP3 = 4.1665795894e-2f;
constexpr float kExpP4 = 1.6666665459e-1f;
constexpr float kExpP5 = 5.0000001201e-1f;

// p·2^n for n in [−126, 128], as (p·2^⌊n/2⌋)·2^(n−⌊n/2⌋): each factor is a normal
// power of two built from its bits, which a single 2^n could not be for n = 128
// (and multiplying the two factors first would overflow to inf there).
inline float scale_pow2(float p, int n) {
  int n1 = n >> 1;  // floor(n / 2)
  int n2 = n - n1;
  uint32_t b1 = static_cast<uint32_t>(n1 + 127) << 23, b2 = static_cast<uint32_t>(n2 + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, sizeof s1);
  std::memcpy(&s2, &b2, sizeof s2);
  return (p * s1) * s2;
}

inline float exp_scalar(float x) {
  if (x != x) return x;  // NaN
  if (x < kExpLo) return 0.0f;
  if (x > kExpHi) return std::numeric_limits<float>::infinity();
  // Round to nearest by the 1.5·2^23 trick: a libm call (nearbyint) without SSE4.1.
  const float kRound = 12582912.0f;
  float n = (x * kLog2e + kRound) - kRound;
  float r = x - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = kExpP0;
  p = p * r + kExpP1;
  p = p * r + kExpP2;
  p = p * r + kExpP3;
  p = p * r + kExpP4;
  p = p * r + kExpP5;
  p = p * (r * r) + r + 1.0f;
  return scale_pow2(p, static_cast<int>(n));
}

#if MSTAR_SIMD_X86

MSTAR_INLINE_AVX2 __m256 exp_avx2(__m256 x) {
  const __m256 lo = _mm256_set1_ps(kExpLo), hi = _mm256_set1_ps(kExpHi);
  // max/min return their second operand for NaN input, so xc is always in range.
  __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kExpP0);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP5));
  p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  // p·2^n as two halves (see scale_pow2): n ranges over [−126, 128].
  const __m256i bias = _mm256_set1_epi32(127);
  __m256i ni = _mm256_cvtps_epi32(n);
  __m256i n1 = _mm256_srai_epi32(ni, 1);
  __m256i n2 = _mm256_sub_epi32(ni, n1);
  __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  y = _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), y);  // underflow and −inf → +0
  y = _mm256_blendv_ps(y, _mm256_set1_ps(std::numeric_limits<float>::infinity()), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));  // NaN stays NaN
}

// GCC 12 reports a false -Wmaybe-uninitialized (GCC bug 105593) wherever an unmasked
// AVX-512 intrinsic passes _mm512_undefined_ps() as its pass-through; the masked forms
// below, with a full mask and an explicit pass-through, compile to the same instruction.
constexpr __mmask16 kAllLanes = 0xFFFF;

MSTAR_INLINE_AVX512 __m512 max_avx512(__m512 a, __m512 b) { return _mm512_mask_max_ps(a, kAllLanes, a, b); }
MSTAR_INLINE_AVX512 __m512 min_avx512(__m512 a, __m512 b) { return _mm512_mask_min_ps(a, kAllLanes, a, b); }

// Lane shuffles for horizontal reductions (fold 512 → 256 → 128 bits, finish in SSE).
MSTAR_INLINE_AVX512 __m512 swap_256_halves(__m512 v) {
  return _mm512_mask_shuffle_f32x4(v, kAllLanes, v, v, _MM_SHUFFLE(1, 0, 3, 2));
}
MSTAR_INLINE_AVX512 __m512 swap_128_pairs(__m512 v) {
  return _mm512_mask_shuffle_f32x4(v, kAllLanes, v, v, _MM_SHUFFLE(2, 3, 0, 1));
}
MSTAR_INLINE_AVX512 __m128 low_128(__m512 v) { return _mm512_mask_extractf32x4_ps(_mm_setzero_ps(), 0xFF, v, 0); }

MSTAR_INLINE_AVX512 __m512 exp_avx512(__m512 x) {
  const __m512 lo = _mm512_set1_ps(kExpLo), hi = _mm512_set1_ps(kExpHi);
  __m512 xc = min_avx512(max_avx512(x, lo), hi);
  __m512 n = _mm512_mul_ps(xc, _mm512_set1_ps(kLog2e));
  n = _mm512_mask_roundscale_ps(n, kAllLanes, n, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), xc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kExpP0);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP1));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP5));
  p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  __m512 y = _mm512_mask_scalef_ps(p, kAllLanes, p, n);  // p·2^n in one instruction, any n
  y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), y, _mm512_setzero_ps());
  y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), y,
                           _mm512_set1_ps(std::numeric_limits<float>::infinity()));
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), y, x);
}

#endif  // MSTAR_SIMD_X86

// ---- vector traits -----------------------------------------------------------------
//
// F: the vector type; Mask: lanes of a partial (tail) vector; kWidth lanes.
// fmadd(a, b, c) = a·b + c with one rounding on the AVX levels (FMA is part of both).
// load/store are unaligned (typed arrays may be subarrays at any float offset).
// max(a, b) returns b when either is NaN, like maxps.

struct Scalar {
  using F = float;
  using Mask = bool;
  static constexpr int kWidth = 1;
  static F load(const float* p) { return *p; }
  static void store(float* p, F v) { *p = v; }
  static F set1(float v) { return v; }
  static F zero() { return 0.0f; }
  static F add(F a, F b) { return a + b; }
  static F sub(F a, F b) { return a - b; }
  static F mul(F a, F b) { return a * b; }
  static F div(F a, F b) { return a / b; }
  static F fmadd(F a, F b, F c) { return a * b + c; }  // fused only where the compiler contracts
  static F fnmadd(F a, F b, F c) { return c - a * b; }
  static F max(F a, F b) { return a > b ? a : b; }
  static F sqrt(F v) { return std::sqrt(v); }
  static F exp(F v) { return exp_scalar(v); }
  static float reduce_add(F v) { return v; }
  static float reduce_max(F v) { return v; }
  // A width-1 vector never has a partial tail; these exist so generic code compiles.
  static Mask tail_mask(int count) { return count > 0; }
  static F load_partial(const float* p, Mask m) { return m ? *p : 0.0f; }
  static void store_partial(float* p, F v, Mask m) {
    if (m) *p = v;
  }
  static F select(Mask m, F a, F b) { return m ? a : b; }
};

#if MSTAR_SIMD_X86

struct Avx2 {
  using F = __m256;
  using Mask = __m256i;
  static constexpr int kWidth = 8;
  MSTAR_INLINE_AVX2 static F load(const float* p) { return _mm256_loadu_ps(p); }
  MSTAR_INLINE_AVX2 static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  MSTAR_INLINE_AVX2 static F set1(float v) { return _mm256_set1_ps(v); }
  MSTAR_INLINE_AVX2 static F zero() { return _mm256_setzero_ps(); }
  MSTAR_INLINE_AVX2 static F add(F a, F b) { return _mm256_add_ps(a, b); }
  MSTAR_INLINE_AVX2 static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  MSTAR_INLINE_AVX2 static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  MSTAR_INLINE_AVX2 static F div(F a, F b) { return _mm256_div_ps(a, b); }
  MSTAR_INLINE_AVX2 static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  MSTAR_INLINE_AVX2 static F fnmadd(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }
  MSTAR_INLINE_AVX2 static F max(F a, F b) { return _mm256_max_ps(a, b); }
  MSTAR_INLINE_AVX2 static F sqrt(F v) { return _mm256_sqrt_ps(v); }
  MSTAR_INLINE_AVX2 static F exp(F v) { return exp_avx2(v); }
  MSTAR_INLINE_AVX2 static float reduce_add(F v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  MSTAR_INLINE_AVX2 static float reduce_max(F v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  // Lanes [0, count) set; maskload/maskstore never touch the other lanes' memory.
  MSTAR_INLINE_AVX2 static Mask tail_mask(int count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  MSTAR_INLINE_AVX2 static F load_partial(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
  MSTAR_INLINE_AVX2 static void store_partial(float* p, F v, Mask m) { _mm256_maskstore_ps(p, m, v); }
  MSTAR_INLINE_AVX2 static F select(Mask m, F a, F b) { return _mm256_blendv_ps(b, a, _mm256_castsi256_ps(m)); }
};

struct Avx512 {
  using F = __m512;
  using Mask = __mmask16;
  static constexpr int kWidth = 16;
  MSTAR_INLINE_AVX512 static F load(const float* p) { return _mm512_loadu_ps(p); }
  MSTAR_INLINE_AVX512 static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  MSTAR_INLINE_AVX512 static F set1(float v) { return _mm512_set1_ps(v); }
  MSTAR_INLINE_AVX512 static F zero() { return _mm512_setzero_ps(); }
  MSTAR_INLINE_AVX512 static F add(F a, F b) { return _mm512_add_ps(a, b); }
  MSTAR_INLINE_AVX512 static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  MSTAR_INLINE_AVX512 static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  MSTAR_INLINE_AVX512 static F div(F a, F b) { return _mm512_div_ps(a, b); }
  MSTAR_INLINE_AVX512 static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  MSTAR_INLINE_AVX512 static F fnmadd(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
  MSTAR_INLINE_AVX512 static F max(F a, F b) { return max_avx512(a, b); }
  MSTAR_INLINE_AVX512 static F sqrt(F v) { return _mm512_mask_sqrt_ps(v, kAllLanes, v); }
  MSTAR_INLINE_AVX512 static F exp(F v) { return exp_avx512(v); }
  MSTAR_INLINE_AVX512 static float reduce_add(F v) {
    v = _mm512_add_ps(v, swap_256_halves(v));
    __m128 s = low_128(_mm512_add_ps(v, swap_128_pairs(v)));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
  MSTAR_INLINE_AVX512 static float reduce_max(F v) {
    v = max_avx512(v, swap_256_halves(v));
    __m128 s = low_128(max_avx512(v, swap_128_pairs(v)));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
  }
  MSTAR_INLINE_AVX512 static Mask tail_mask(int count) { return static_cast<Mask>((1u << count) - 1u); }
  MSTAR_INLINE_AVX512 static F load_partial(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  MSTAR_INLINE_AVX512 static void store_partial(float* p, F v, Mask m) { _mm512_mask_storeu_ps(p, m, v); }
  MSTAR_INLINE_AVX512 static F select(Mask m, F a, F b) { return _mm512_mask_blend_ps(m, b, a); }
};

#endif  // MSTAR_SIMD_X86

// ---- generic row helpers -------------------------------------------------------------
//
// A row body is a generic lambda `[&](auto at) { ... }` that reads and writes through
// `at.load(ptr)` / `at.store(ptr, v)` (element `at.index` onward). It is called with a
// FullAt for every whole vector and once with a TailAt (masked, zero-filled loads,
// masked stores) for the remainder, so one body serves both without a scalar copy.

template <class V>
struct FullAt {
  int64_t index;
  typename V::F load(const float* p) const { return V::load(p + index); }
  void store(float* p, typename V::F v) const { V::store(p + index, v); }
};

template <class V>
struct TailAt {
  int64_t index;
  typename V::Mask mask;
  typename V::F load(const float* p) const { return V::load_partial(p + index, mask); }
  void store(float* p, typename V::F v) const { V::store_partial(p + index, v, mask); }
};

// body(at) for every vector of [0, n).
template <class V, class Body>
inline void map_each(int64_t n, Body&& body) {
  const int64_t full = n - n % V::kWidth;
  for (int64_t i = 0; i < full; i += V::kWidth) body(FullAt<V>{i});
  if (full < n) body(TailAt<V>{full, V::tail_mask(static_cast<int>(n - full))});
}

// K vectors (std::array<__m256, K> would drop the vector type's attributes: GCC warns).
template <class V, size_t K>
struct Vecs {
  typename V::F v[K];
  typename V::F& operator[](size_t k) { return v[k]; }
  const typename V::F& operator[](size_t k) const { return v[k]; }
};

// K sums at once: body(at) returns Vecs<V, K>; returns the K totals over [0, n), the
// lanes of the tail beyond n counting 0. Each float accumulator lane takes at most 64
// values (two accumulators per sum, for instruction-level parallelism), then the block
// is added into a double: the error stays near the float rounding of one block
// however long the row is.
template <class V, size_t K, class Body>
inline std::array<double, K> map_sums(int64_t n, Body&& body) {
  constexpr int64_t kBlock = 64 * V::kWidth;
  const int64_t full = n - n % V::kWidth;
  std::array<double, K> total{};
  int64_t i = 0;
  while (i < full) {
    const int64_t block_end = std::min(full, i + 2 * kBlock);
    Vecs<V, K> acc0, acc1;
    for (size_t k = 0; k < K; ++k) acc0[k] = acc1[k] = V::zero();
    for (; i + 2 * V::kWidth <= block_end; i += 2 * V::kWidth) {
      const auto v0 = body(FullAt<V>{i});
      const auto v1 = body(FullAt<V>{i + V::kWidth});
      for (size_t k = 0; k < K; ++k) {
        acc0[k] = V::add(acc0[k], v0[k]);
        acc1[k] = V::add(acc1[k], v1[k]);
      }
    }
    if (i < block_end) {
      const auto v0 = body(FullAt<V>{i});
      for (size_t k = 0; k < K; ++k) acc0[k] = V::add(acc0[k], v0[k]);
      i += V::kWidth;
    }
    for (size_t k = 0; k < K; ++k) total[k] += static_cast<double>(V::reduce_add(V::add(acc0[k], acc1[k])));
  }
  if (full < n) {
    TailAt<V> at{full, V::tail_mask(static_cast<int>(n - full))};
    const auto v = body(at);
    for (size_t k = 0; k < K; ++k) total[k] += static_cast<double>(V::reduce_add(V::select(at.mask, v[k], V::zero())));
  }
  return total;
}

// Σ of the vectors body(at) returns over [0, n) (map_sums with one sum).
template <class V, class Body>
inline double map_sum(int64_t n, Body&& body) {
  return map_sums<V, 1>(n, [&](auto at) { return Vecs<V, 1>{{body(at)}}; })[0];
}

// max of x[0, n); −inf for n = 0. NaN entries may or may not win (maxps semantics):
// callers that need NaN propagation get it through the sums that follow.
template <class V>
inline float row_max(const float* x, int64_t n) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const int64_t full = n - n % V::kWidth;
  typename V::F acc = V::set1(neg_inf);
  for (int64_t i = 0; i < full; i += V::kWidth) acc = V::max(acc, V::load(x + i));
  if (full < n) {
    typename V::Mask mask = V::tail_mask(static_cast<int>(n - full));
    acc = V::max(acc, V::select(mask, V::load_partial(x + full, mask), V::set1(neg_inf)));
  }
  return V::reduce_max(acc);
}

// ---- work splitting ------------------------------------------------------------------

// Rows per parallel task for row kernels: at least kMinTaskElements elements per task,
// so tiny tensors stay on the calling thread, where waking the pool would cost more
// than the work itself (parallel_for never makes a task smaller than its grain).
constexpr int64_t kMinTaskElements = 16384;
inline int64_t rows_per_task(int64_t cols) { return std::max<int64_t>(1, kMinTaskElements / std::max<int64_t>(cols, 1)); }

// ---- dispatch ----------------------------------------------------------------------
//
// MSTAR_SIMD_DISPATCH(softmax_rows, softmax_rows_kernel) defines softmax_rows(args...),
// which calls softmax_rows_kernel<V>(args...) compiled for the SIMD level in force
// (mstar::simd_level(): the CPU's best, capped by MSTAR_SIMD / setSimdLevel).
// The kernel must be a function template whose first template parameter is V.
// MSTAR_SIMD_DISPATCH_WITH adds attributes to every entry point, e.g.
// MSTAR_NO_FP_CONTRACT where results must follow a reference's exact operation order.
#define MSTAR_SIMD_DISPATCH(name, kernel) MSTAR_SIMD_DISPATCH_WITH(name, kernel, )

// GCC contracts a·b + c into one FMA by default (-ffp-contract=fast), vector
// intrinsics included; this turns it off for one function (explicit fmadd stays fused).
// Clang contracts only within one expression by default and has no such attribute.
#if defined(__GNUC__) && !defined(__clang__)
#define MSTAR_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define MSTAR_NO_FP_CONTRACT
#endif

#if MSTAR_SIMD_X86
#define MSTAR_SIMD_DISPATCH_WITH(name, kernel, attributes)                                    \
  template <class... Args>                                                                    \
  attributes void name##_portable(Args... args) {                                             \
    kernel<::mstar::simd::Scalar>(args...);                                                   \
  }                                                                                           \
  template <class... Args>                                                                    \
  MSTAR_TARGET_AVX2 attributes void name##_avx2(Args... args) {                               \
    kernel<::mstar::simd::Avx2>(args...);                                                     \
  }                                                                                           \
  template <class... Args>                                                                    \
  MSTAR_TARGET_AVX512 attributes void name##_avx512(Args... args) {                           \
    kernel<::mstar::simd::Avx512>(args...);                                                   \
  }                                                                                           \
  template <class... Args>                                                                    \
  void name(Args... args) {                                                                   \
    switch (::mstar::simd_level()) {                                                          \
      case ::mstar::SimdLevel::Avx512: name##_avx512(args...); break;                         \
      case ::mstar::SimdLevel::Avx2: name##_avx2(args...); break;                             \
      default: name##_portable(args...); break;                                               \
    }                                                                                         \
  }
#else
#define MSTAR_SIMD_DISPATCH_WITH(name, kernel, attributes)                                    \
  template <class... Args>                                                                    \
  attributes void name(Args... args) {                                                        \
    kernel<::mstar::simd::Scalar>(args...);                                                   \
  }
#endif

}  // namespace mstar::simd
