// Fused AdamW and SGD steps (see optim.h): elementwise, split across the thread pool,
// vectorized through the traits of simd_math.h with explicit FMA where torch fuses and
// floating-point contraction off elsewhere, so every rounding matches torch's.
#include "optim.h"

#include <cmath>
#include <sstream>

#include "../core/error.h"
#include "../core/thread_pool.h"
#include "adamw_coefficients.h"
#include "simd_math.h"

namespace mstar {
namespace {

// Elementwise work is cheap per element: tasks of at least this many elements.
constexpr int64_t kGrain = int64_t{1} << 15;

template <class V>
void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWCoefficients* c) {
  const auto decay_factor = V::set1(c->decay_factor), lerp_coeff = V::set1(c->lerp_coeff);
  const auto beta2 = V::set1(c->beta2), one_minus_beta2 = V::set1(c->one_minus_beta2);
  const auto bias_correction2_sqrt = V::set1(c->bias_correction2_sqrt), eps = V::set1(c->eps);
  const auto neg_step_size = V::set1(c->neg_step_size);
  simd::map_each<V>(n, [&](auto at) {
    auto p = at.load(param);
    if (c->decay) p = V::mul(p, decay_factor);
    const auto g = at.load(grad);
    auto mi = at.load(m);
    mi = V::fmadd(lerp_coeff, V::sub(g, mi), c->lerp_from_m ? mi : g);
    // torch's addcmul kernel (self + s·t1·t2) compiles to fma(s·t1, t2, self).
    auto vi = V::fmadd(V::mul(one_minus_beta2, g), g, V::mul(at.load(v), beta2));
    const auto denom = V::add(V::div(V::sqrt(vi), bias_correction2_sqrt), eps);
    p = V::add(p, V::div(V::mul(neg_step_size, mi), denom));
    at.store(param, p);
    at.store(m, mi);
    at.store(v, vi);
  });
}
MSTAR_SIMD_DISPATCH_WITH(adamw_range, adamw_kernel, MSTAR_NO_FP_CONTRACT)

// SGD's coefficients as float32; torch's add(x, alpha=a) is fma(other, a, self).
struct SgdCoefficients {
  bool decay;
  float weight_decay;
  bool momentum_on;
  float momentum;
  float one_minus_dampening;
  bool nesterov;
  bool first;
  float neg_lr;
};

template <class V>
void sgd_kernel(float* param, const float* grad, float* buffer, int64_t n, const SgdCoefficients* c) {
  const auto weight_decay = V::set1(c->weight_decay), momentum = V::set1(c->momentum);
  const auto one_minus_dampening = V::set1(c->one_minus_dampening), neg_lr = V::set1(c->neg_lr);
  simd::map_each<V>(n, [&](auto at) {
    auto p = at.load(param);
    auto d = at.load(grad);
    if (c->decay) d = V::fmadd(p, weight_decay, d);  // grad.add(param, alpha=wd)
    if (c->momentum_on) {
      // torch: buf = clone(d) on the first step, else buf.mul_(momentum).add_(d, alpha=1 − dampening)
      const auto buf = c->first ? d : V::fmadd(d, one_minus_dampening, V::mul(at.load(buffer), momentum));
      at.store(buffer, buf);
      d = c->nesterov ? V::fmadd(buf, momentum, d) : buf;
    }
    at.store(param, V::fmadd(d, neg_lr, p));  // param.add_(d, alpha=−lr)
  });
}
MSTAR_SIMD_DISPATCH_WITH(sgd_range, sgd_kernel, MSTAR_NO_FP_CONTRACT)

}  // namespace

void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWHyperparams& h) {
  MSTAR_CHECK(h.step >= 1, Argument, "adamwStep: step must be >= 1, got " << h.step);
  const AdamWCoefficients c = adamw_coefficients(h);
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    adamw_range(param + begin, grad + begin, m + begin, v + begin, end - begin, &c);
  });
}

void sgd_step(float* param, const float* grad, float* momentum_buffer, int64_t n, const SgdHyperparams& h) {
  const bool momentum_on = h.momentum != 0.0;
  MSTAR_CHECK(!momentum_on || momentum_buffer != nullptr || n == 0, Argument,
              "sgdStep: momentum " << h.momentum << " needs a momentumBuffer");
  const SgdCoefficients c{h.weight_decay != 0.0,
                          static_cast<float>(h.weight_decay),
                          momentum_on,
                          static_cast<float>(h.momentum),
                          static_cast<float>(1.0 - h.dampening),
                          h.nesterov,
                          h.first,
                          static_cast<float>(-h.lr)};
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    sgd_range(param + begin, grad + begin, momentum_on ? momentum_buffer + begin : nullptr, end - begin, &c);
  });
}

}  // namespace mstar
