// Dropout with a counter-based RNG (see dropout.h).
//
// splitmix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number generators",
// OOPSLA 2014) is a counter (state advanced by the golden gamma) hashed by a
// variant of MurmurHash3's finalizer; output i is mix(seed + (i + 1)·gamma), so any
// element can be drawn without the ones before it. It passes BigCrush.
#include "dropout.h"

#include <cmath>

#include "../core/thread_pool.h"
#include "vec_math.h"

namespace mstar {
namespace {

constexpr int64_t kGrain = int64_t{1} << 15;
constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ull;

MSTAR_INLINE uint32_t draw(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * kGamma;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<uint32_t>(z >> 32);
}

// keep ⇔ r·2^-32 >= p ⇔ r >= ceil(p·2^32); p = 1 gives 2^32, which no r reaches.
uint64_t keep_threshold(double p) { return static_cast<uint64_t>(std::ceil(p * 4294967296.0)); }

float keep_scale(double p) { return p >= 1.0 ? 0.0f : static_cast<float>(1.0 / (1.0 - p)); }

template <class V>  // V: the SIMD level; the loops are auto-vectorized for it
MSTAR_INLINE void dropout_forward_body(const float* x, float* y, uint8_t* mask, int64_t begin, int64_t end,
                                       uint64_t seed, uint64_t threshold, float scale) {
  for (int64_t i = begin; i < end; ++i) {
    const bool keep = draw(seed, static_cast<uint64_t>(i)) >= threshold;
    mask[i] = static_cast<uint8_t>(keep);
    y[i] = select(keep, x[i] * scale, 0.0f);
  }
}
MSTAR_SIMD_DISPATCH(dropout_forward_kernel, dropout_forward_body)

}  // namespace

bool dropout_keep(uint64_t seed, int64_t i, double p) {
  return draw(seed, static_cast<uint64_t>(i)) >= keep_threshold(p);
}

void dropout_forward(const float* x, float* y, uint8_t* mask, int64_t n, double p, uint64_t seed) {
  const uint64_t threshold = keep_threshold(p);
  const float scale = keep_scale(p);
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    dropout_forward_kernel(x, y, mask, begin, end, seed, threshold, scale);
  });
}

void dropout_backward(const float* gy, const uint8_t* mask, float* gx, int64_t n, double p) {
  const float scale = keep_scale(p);
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) gx[i] = select(mask[i] != 0, gy[i] * scale, 0.0f);
  });
}

}  // namespace mstar
