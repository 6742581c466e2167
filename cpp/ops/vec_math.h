// Branch-free float32 building blocks for kernels written as plain loops and
// auto-vectorized per ISA by MSTAR_SIMD_DISPATCH (simd_math.h): bit casts, mask
// selects, and exp, log, tanh, sigmoid and the standard normal cdf/pdf (for erf-form
// GELU). Everything is written with selects instead of branches and without library
// calls, so a loop over it vectorizes; every function stays within 5e-7 relative of
// the float64 value over the whole float range (measured on every 97th float32 bit
// pattern), including the tails where naive formulas cancel, and handles ±0, ±Inf,
// NaN and subnormal inputs and results. Unlike simd::exp_* (which flushes results
// below FLT_MIN to 0 for the softmax row kernels), these keep subnormal results: GELU
// and sigmoid tails need them. Polynomials: Cephes expf (the constants shared with
// simd_math.h), logf and tanhf (S. Moshier); erfc from Numerical Recipes' Chebyshev
// fit (fractional error < 1.2e-7 everywhere).
#pragma once
#include <cstdint>
#include <cstring>

#include "simd_math.h"

#define MSTAR_INLINE inline __attribute__((always_inline))

namespace mstar {

MSTAR_INLINE float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

MSTAR_INLINE uint32_t float_to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

// Branch-free selects. GCC (with the default -ftrapping-math) will not if-convert
// `c ? a : b` when computing an arm could trap (any float arithmetic it has sunk into
// the branch), which silently stops vectorization below AVX-512. A mask select
// computes both arms unconditionally, so the loop stays straight-line.
MSTAR_INLINE uint32_t select_bits(bool c, uint32_t a, uint32_t b) {
  const uint32_t mask = 0u - static_cast<uint32_t>(c);
  return (a & mask) | (b & ~mask);
}

MSTAR_INLINE float select(bool c, float a, float b) {
  return bits_to_float(select_bits(c, float_to_bits(a), float_to_bits(b)));
}

}  // namespace mstar

namespace mstar::vm {

// x² = hi + lo exactly enough for exp(-x²/2) in the tails, without FMA: the top
// 12 significand bits xh square exactly, and so do xh·xl and xl² (xl = x − xh).
MSTAR_INLINE void square_split(float x, float& hi, float& lo) {
  const float xh = bits_to_float(float_to_bits(x) & 0xFFFFF000u);
  const float xl = x - xh;
  hi = xh * xh;
  lo = (2.0f * xh) * xl + xl * xl;
}

// exp(hi + lo) for |lo| < 16. The reduction subtracts k·ln2 from hi alone (exactly,
// Cody–Waite) before adding lo, so a large exact hi (say −x²/2) keeps full relative
// accuracy. Results below the normal range round once to the subnormal; overflow
// gives +Inf; NaN propagates.
MSTAR_INLINE float exp_split(float hi, float lo) {
  using simd::kLn2Hi;  // 9 significant bits: k·kLn2Hi is exact
  using simd::kLn2Lo;
  using simd::kLog2e;
  constexpr float kShifter = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer
  // Outside this range the result is 0 or Inf anyway; clamping keeps k small. NaN passes.
  hi = select(hi < -120.0f, -120.0f, hi);
  hi = select(hi > 100.0f, 100.0f, hi);
  const float t = (hi + lo) * kLog2e + kShifter;
  const float k = t - kShifter;
  const int32_t ki = static_cast<int32_t>(float_to_bits(t) - float_to_bits(kShifter));
  const float r = ((hi - k * kLn2Hi) - k * kLn2Lo) + lo;
  // exp(r) on |r| <= ln2/2 (Cephes expf minimax).
  float p = simd::kExpP0;
  p = p * r + simd::kExpP1;
  p = p * r + simd::kExpP2;
  p = p * r + simd::kExpP3;
  p = p * r + simd::kExpP4;
  p = p * r + simd::kExpP5;
  p = p * (r * r) + r + 1.0f;
  // Scale by 2^k in two halves so neither factor leaves the normal range; the second
  // multiply is the only rounding when the result is subnormal.
  const int32_t k1 = ki >> 1;
  const int32_t k2 = ki - k1;
  const float s1 = bits_to_float(static_cast<uint32_t>(k1 + 127) << 23);
  const float s2 = bits_to_float(static_cast<uint32_t>(k2 + 127) << 23);
  return p * s1 * s2;
}

MSTAR_INLINE float exp(float x) { return exp_split(x, 0.0f); }

// Natural log: x = m·2^e with m in [√½, √2), Cephes logf polynomial for log(m).
MSTAR_INLINE float log(float x) {
  constexpr float kSqrtHalf = 0.707106781186547524f;
  const bool subnormal = x < 1.17549435e-38f;  // also true for 0 and negatives (fixed below)
  const float xs = select(subnormal, x * 8388608.0f, x);  // 2^23 brings subnormals into range
  const uint32_t bits = float_to_bits(xs);
  int32_t e = static_cast<int32_t>((bits >> 23) & 0xFF) - 126 - (subnormal ? 23 : 0);
  float m = bits_to_float((bits & 0x007FFFFFu) | 0x3F000000u);  // [0.5, 1)
  const bool low = m < kSqrtHalf;
  e -= low ? 1 : 0;
  m = select(low, m + m - 1.0f, m - 1.0f);  // now log(1 + m), m in [−0.293, 0.414)
  const float fe = static_cast<float>(e);
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  float result = (m + y) + 0.693359375f * fe;
  constexpr float kInf = __builtin_huge_valf();
  result = select(x == 0.0f, -kInf, result);
  result = select(x < 0.0f, __builtin_nanf(""), result);
  result = select(x == kInf, kInf, result);
  result = select(x != x, x, result);
  return result;
}

// 1/(1 + e^−x), from e^−|x| so neither tail overflows or loses relative accuracy.
MSTAR_INLINE float sigmoid(float x) {
  const float e = exp(-__builtin_fabsf(x));
  const float s = 1.0f / (1.0f + e);
  return select(x < 0.0f, e * s, s);
}

// tanh: odd minimax polynomial near 0 (Cephes), (1 − e^−2|x|)/(1 + e^−2|x|) beyond.
MSTAR_INLINE float tanh(float x) {
  const float ax = __builtin_fabsf(x);
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * x + x;
  const float e = exp(-2.0f * ax);
  const float large_abs = (1.0f - e) / (1.0f + e);
  const float large = __builtin_copysignf(large_abs, x);
  return select(ax < 0.625f, small, large);
}

// Upper tail Q(a) = P(Z > a) = erfc(a/√2)/2 for a >= 0 with full relative accuracy:
// NR's erfc(z) = t·exp(−z² − 1.26551223 + t·P(t)), t = 1/(1 + z/2), where −z² = −a²/2
// is carried exactly as hi + lo. a must be <= 20 (Q(20) is 0 in float).
MSTAR_INLINE float normal_upper_tail(float a) {
  const float z = a * 0.707106781186547524f;
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  float hi, lo;
  square_split(a, hi, lo);
  return 0.5f * t * exp_split(-0.5f * hi, (t * p - 1.26551223f) - 0.5f * lo);
}

// Φ(x) = P(Z <= x) and φ(x) = exp(−x²/2)/√(2π), the standard normal cdf and pdf.
// Arguments are clamped to [−20, 20], where both are saturated in float.
MSTAR_INLINE float clamp_normal_arg(float x) {
  x = select(x < -20.0f, -20.0f, x);
  return select(x > 20.0f, 20.0f, x);
}

MSTAR_INLINE float normal_cdf(float x) {
  x = clamp_normal_arg(x);
  const float q = normal_upper_tail(__builtin_fabsf(x));
  return select(x < 0.0f, q, 1.0f - q);
}

MSTAR_INLINE float normal_pdf(float x) {
  x = clamp_normal_arg(x);
  float hi, lo;
  square_split(x, hi, lo);
  return 0.398942280401432678f * exp_split(-0.5f * hi, -0.5f * lo);
}

}  // namespace mstar::vm
