#include "cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace mstar {
namespace {

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.f16c = __builtin_cpu_supports("f16c");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
#endif
  return f;
}

SimdLevel best_supported(const CpuFeatures& f) {
  if (f.avx512f && f.avx512bw && f.avx512vl && f.avx2 && f.fma) return SimdLevel::Avx512;
  if (f.avx2 && f.fma) return SimdLevel::Avx2;
  return SimdLevel::Portable;
}

SimdLevel initial_level() {
  SimdLevel best = best_supported(cpu_features());
  if (const char* env = std::getenv("MSTAR_SIMD")) {
    SimdLevel cap = best;
    if (std::strcmp(env, "portable") == 0) cap = SimdLevel::Portable;
    else if (std::strcmp(env, "avx2") == 0) cap = SimdLevel::Avx2;
    else if (std::strcmp(env, "avx512") == 0) cap = SimdLevel::Avx512;
    if (cap < best) best = cap;
  }
  return best;
}

std::atomic<int> g_level{-1};

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

SimdLevel simd_level() {
  int level = g_level.load(std::memory_order_relaxed);
  if (level < 0) {
    level = static_cast<int>(initial_level());
    g_level.store(level, std::memory_order_relaxed);
  }
  return static_cast<SimdLevel>(level);
}

void set_simd_level(SimdLevel cap) {
  SimdLevel best = best_supported(cpu_features());
  g_level.store(static_cast<int>(cap < best ? cap : best));
}

const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::Avx512: return "avx512";
    case SimdLevel::Avx2: return "avx2";
    default: return "portable";
  }
}

std::string cpu_feature_list() {
  const CpuFeatures& f = cpu_features();
  std::string out;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!out.empty()) out += ' ';
    out += name;
  };
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.f16c, "f16c");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512vl, "avx512vl");
  add(f.avx512bf16, "avx512bf16");
  return out;
}

}  // namespace mstar
