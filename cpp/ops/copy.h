// Layout and dtype: strided gather into a contiguous buffer with conversion among
// float32, float16 (IEEE binary16) and bfloat16.
//
//   copy_strided: dst[i] = convert(src[offset + Σ_d idx_d · src_strides[d]]) for every
//   row-major index idx of `shape`; dst is contiguous [Π shape]. Strides are in
//   elements and may be 0 (broadcast) or negative. dst must not overlap src.
//
// Narrowing rounds to nearest, ties to even, like torch's .half() / .bfloat16() and
// the F16C / AVX-512 instructions: overflow gives ±Inf, results below the smallest
// normal become subnormals (or ±0). NaN stays a quiet NaN with its sign and top
// payload bits, as the F16C instructions do (torch writes a canonical NaN instead).
// Widening is exact. Every conversion has the same bits on every SIMD path
// (F16C/AVX-512 or the portable bit manipulation).
#pragma once
#include <cstdint>
#include <vector>

#include "vec_math.h"

namespace mstar {

// Matches lib/native.ts DtypeCode.
enum class DtypeCode : int32_t { Float32 = 0, Float16 = 1, BFloat16 = 2 };
constexpr int kDtypeCodeCount = 3;

inline int64_t dtype_size(DtypeCode dtype) { return dtype == DtypeCode::Float32 ? 4 : 2; }
const char* dtype_name(DtypeCode dtype);

// ---- scalar conversions (branch-free, so loops over them vectorize) ----

// float32 -> float16, round to nearest even (after F. Giesen's float_to_half_fast3_rtne).
MSTAR_INLINE uint16_t float_to_half(float value) {
  const uint32_t bits = float_to_bits(value);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t abs = bits & 0x7FFFFFFFu;
  // Normal results: rebias the exponent and round on bit 13 (carry may reach Inf).
  const uint32_t normal = (abs + (static_cast<uint32_t>(15 - 127) << 23) + 0xFFFu + ((abs >> 13) & 1u)) >> 13;
  // Subnormal results: adding 0.5 aligns the 10 mantissa bits at the bottom of the
  // float, and the float add itself rounds to nearest even.
  const float magic = bits_to_float(126u << 23);
  const uint32_t subnormal = float_to_bits(bits_to_float(abs) + magic) - (126u << 23);
  const uint32_t nan = 0x7E00u | ((abs >> 13) & 0x3FFu);
  uint32_t half = select_bits(abs < (113u << 23), subnormal, normal);
  half = select_bits(abs >= (143u << 23), 0x7C00u, half);  // >= 65536 before rounding: Inf
  half = select_bits(abs > 0x7F800000u, nan, half);
  return static_cast<uint16_t>(half | sign);
}

// float16 -> float32, exact (subnormals renormalized, NaN kept quiet).
MSTAR_INLINE float half_to_float(uint16_t half) {
  const uint32_t h = half;
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exponent = h & 0x7C00u;
  const uint32_t shifted = (h & 0x7FFFu) << 13;
  const uint32_t normal = shifted + (static_cast<uint32_t>(127 - 15) << 23);
  const uint32_t special = shifted | 0x7F800000u | select_bits((h & 0x3FFu) != 0, 0x00400000u, 0u);  // Inf, qNaN
  // Subnormal: m·2^-24 computed as (2^-14 + m·2^-24) − 2^-14, exact in float.
  const uint32_t subnormal = float_to_bits(bits_to_float(shifted + (113u << 23)) - bits_to_float(113u << 23));
  uint32_t out = select_bits(exponent == 0x7C00u, special, normal);
  out = select_bits(exponent == 0, subnormal, out);
  return bits_to_float(out | sign);
}

// float32 -> bfloat16, round to nearest even (torch's round_to_nearest_even); NaN stays quiet NaN.
MSTAR_INLINE uint16_t float_to_bfloat16(float value) {
  const uint32_t bits = float_to_bits(value);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t nan = (bits >> 16) | 0x40u;
  return static_cast<uint16_t>(select_bits((bits & 0x7FFFFFFFu) > 0x7F800000u, nan, rounded));
}

MSTAR_INLINE float bfloat16_to_float(uint16_t value) { return bits_to_float(static_cast<uint32_t>(value) << 16); }

// ---- kernels ----

// dst[0, n) = convert(src[0, n)), both contiguous.
void convert_contiguous(const void* src, DtypeCode src_dtype, void* dst, DtypeCode dst_dtype, int64_t n);

// See the file comment. shape and src_strides have the same length (<= 64); the caller
// has checked that every strided read stays inside src.
void copy_strided(const void* src, DtypeCode src_dtype, int64_t src_offset, const std::vector<int64_t>& shape,
                  const std::vector<int64_t>& src_strides, void* dst, DtypeCode dst_dtype);

}  // namespace mstar
