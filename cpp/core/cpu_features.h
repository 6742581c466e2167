// Run-time CPU feature detection: one binary runs on any x86-64 CPU and picks
// the widest SIMD kernels the CPU (and the OS) supports. MSTAR_SIMD=portable|avx2|avx512
// caps the choice (tests use it to exercise every path on one machine).
#pragma once
#include <string>

namespace mstar {

enum class SimdLevel { Portable = 0, Avx2 = 1, Avx512 = 2 };

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512bf16 = false;
};

const CpuFeatures& cpu_features();
// The level kernels dispatch on: the best the CPU has, capped by MSTAR_SIMD or set_simd_level.
SimdLevel simd_level();
void set_simd_level(SimdLevel cap);  // caps to what the CPU supports
const char* simd_level_name(SimdLevel level);
std::string cpu_feature_list();  // e.g. "avx2 fma f16c avx512f avx512bw avx512vl"

}  // namespace mstar
