// Dropout (float32), forward above backward:
//
//   dropout_forward   keep[i] = u(seed, i) >= p,  y[i] = keep[i] ? x[i] / (1 − p) : 0,
//                     mask[i] = keep[i] (1 = kept)                     x, y, mask: [n]
//   dropout_backward  gx[i] = mask[i] ? gy[i] / (1 − p) : 0            gy, gx, mask: [n]
//
// u(seed, i) = (splitmix64 output number i of a generator seeded with `seed`) · 2^-64
// uses the top 32 bits only, u = r · 2^-32: a counter-based stream, so every element's
// decision depends on (seed, i) alone and the result is identical for any thread
// count or chunking. p ∈ [0, 1]; p = 0 keeps everything (y = x), p = 1 drops
// everything (y = 0, no division by zero). The scale 1/(1 − p) is rounded to float
// once, as in torch.
#pragma once
#include <cstdint>

namespace mstar {

void dropout_forward(const float* x, float* y, uint8_t* mask, int64_t n, double p, uint64_t seed);
void dropout_backward(const float* gy, const uint8_t* mask, float* gx, int64_t n, double p);

// The keep decision for element i (exposed for tests and the CUDA kernel).
bool dropout_keep(uint64_t seed, int64_t i, double p);

}  // namespace mstar
