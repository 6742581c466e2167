// Fused AdamW and SGD steps on CUDA (contracts in optim.cuh). One grid-stride
// element-wise kernel per step. Every rounding is spelled out so that nvcc cannot
// contract a multiply and an add into an FMA where the CPU kernel (and torch) keeps them
// apart: __fmul_rn / __fadd_rn are never fused, fmaf is fused on purpose, and division
// and sqrt are the correctly rounded __fdiv_rn / __fsqrt_rn whatever the flags say.
#include <cmath>

#include "../cpp/ops/adamw_coefficients.h"
#include "common.cuh"
#include "optim.cuh"

namespace mstar::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;  // the host emulation is compiled without contraction (ISO C++ mode)
#endif
}
__device__ __forceinline__ float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
__device__ __forceinline__ float sub_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
__device__ __forceinline__ float div_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
__device__ __forceinline__ float sqrt_rn(float a) {
#ifdef __CUDA_ARCH__
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

__global__ void __launch_bounds__(kThreads)
    adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n, AdamWCoefficients c) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    float p = param[i];
    if (c.decay) p = mul_rn(p, c.decay_factor);
    const float g = grad[i];
    float mi = m[i];
    mi = fmaf(c.lerp_coeff, sub_rn(g, mi), c.lerp_from_m ? mi : g);
    // addcmul (v·β2 + s·g·g) is fma(s·g, g, v·β2) in torch's kernel.
    const float vi = fmaf(mul_rn(c.one_minus_beta2, g), g, mul_rn(v[i], c.beta2));
    const float denom = add_rn(div_rn(sqrt_rn(vi), c.bias_correction2_sqrt), c.eps);
    p = add_rn(p, div_rn(mul_rn(c.neg_step_size, mi), denom));
    param[i] = p;
    m[i] = mi;
    v[i] = vi;
  }
}

// SGD's coefficients as float32; torch's add(x, alpha=a) is fma(other, a, self).
struct SgdCoefficients {
  bool decay;
  bool momentum_on;
  bool nesterov;
  bool first;
  float weight_decay;
  float momentum;
  float one_minus_dampening;
  float neg_lr;
};

__global__ void __launch_bounds__(kThreads)
    sgd_kernel(float* param, const float* grad, float* buffer, int64_t n, SgdCoefficients c) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float p = param[i];
    float d = grad[i];
    if (c.decay) d = fmaf(p, c.weight_decay, d);  // grad.add(param, alpha=wd)
    if (c.momentum_on) {
      // buf = clone(d) on the first step, else buf.mul_(momentum).add_(d, alpha=1 − dampening)
      const float buf = c.first ? d : fmaf(d, c.one_minus_dampening, mul_rn(buffer[i], c.momentum));
      buffer[i] = buf;
      d = c.nesterov ? fmaf(buf, c.momentum, d) : buf;
    }
    param[i] = fmaf(d, c.neg_lr, p);  // param.add_(d, alpha=−lr)
  }
}

// Finite, >= 0 and, when `below_one`, < 1 (or <= 1 with `one_ok`).
void check_hyperparameter(const char* op, const char* name, double value, bool below_one = false, bool one_ok = false) {
  const bool ok = std::isfinite(value) && value >= 0 && (!below_one || value < 1 || (one_ok && value == 1));
  MSTAR_CHECK(ok, Argument,
              op << ": " << name << " must be " << (!below_one ? ">= 0" : one_ok ? "in [0, 1]" : "in [0, 1)") << ", got "
                 << value);
}

bool overlaps(const DeviceSpan& x, const DeviceSpan& y, int64_t n) {
  if (x.data == nullptr || y.data == nullptr || n == 0) return false;
  const auto x0 = reinterpret_cast<uintptr_t>(x.data), y0 = reinterpret_cast<uintptr_t>(y.data);
  const auto bytes = static_cast<uintptr_t>(n) * sizeof(float);
  return x0 < y0 + bytes && y0 < x0 + bytes;
}

struct Operand {
  const char* name;
  DeviceSpan span;
  bool written;
};

// No buffer that is written overlaps another operand (each element is read and written
// by one thread, but an aliased grad or moment would silently change the result).
void check_disjoint(const char* op, std::initializer_list<Operand> operands, int64_t n) {
  for (auto x = operands.begin(); x != operands.end(); ++x) {
    for (auto y = x + 1; y != operands.end(); ++y) {
      if (!x->written && !y->written) continue;
      MSTAR_CHECK(!overlaps(x->span, y->span, n), Argument, op << ": " << x->name << " and " << y->name << " overlap");
    }
  }
}

}  // namespace

void adamw_step(const AdamWParams& p) {
  const char* op = "adamwStep";
  MSTAR_CHECK(p.n >= 0, Argument, op << ": n must be >= 0, got " << p.n);
  check_hyperparameter(op, "lr", p.lr);
  check_hyperparameter(op, "beta1", p.beta1, true);
  check_hyperparameter(op, "beta2", p.beta2, true);
  check_hyperparameter(op, "eps", p.eps);
  MSTAR_CHECK(p.eps > 0, Argument, op << ": eps must be > 0, got 0");
  check_hyperparameter(op, "weightDecay", p.weight_decay);
  MSTAR_CHECK(p.step >= 1, Argument, op << ": step must be >= 1 (the step being taken), got " << p.step);
  require_span(p.param, p.n, "adamwStep: param");
  require_span(p.grad, p.n, "adamwStep: grad");
  require_span(p.m, p.n, "adamwStep: m");
  require_span(p.v, p.n, "adamwStep: v");
  check_disjoint(op, {{"param", p.param, true}, {"grad", p.grad, false}, {"m", p.m, true}, {"v", p.v, true}}, p.n);
  if (p.n == 0) return;
  launch("adamw_step", adamw_kernel, dim3(grid_for(p.n, kThreads)), dim3(kThreads), 0,
         static_cast<float*>(p.param.data), static_cast<const float*>(p.grad.data), static_cast<float*>(p.m.data),
         static_cast<float*>(p.v.data), p.n, adamw_coefficients(p));
}

void sgd_step(const SgdParams& p) {
  const char* op = "sgdStep";
  MSTAR_CHECK(p.n >= 0, Argument, op << ": n must be >= 0, got " << p.n);
  check_hyperparameter(op, "lr", p.lr);
  check_hyperparameter(op, "momentum", p.momentum);
  check_hyperparameter(op, "dampening", p.dampening, true, true);
  check_hyperparameter(op, "weightDecay", p.weight_decay);
  MSTAR_CHECK(!p.nesterov || (p.momentum > 0 && p.dampening == 0), Argument,
              op << ": nesterov needs momentum > 0 and dampening = 0 (as torch.optim.SGD)");
  const bool momentum_on = p.momentum != 0.0;
  require_span(p.param, p.n, "sgdStep: param");
  require_span(p.grad, p.n, "sgdStep: grad");
  if (momentum_on) {
    MSTAR_CHECK(p.momentum_buffer.data != nullptr || p.n == 0, Argument,
                op << ": momentum " << p.momentum << " needs a momentumBuffer");
    require_span(p.momentum_buffer, p.n, "sgdStep: momentumBuffer");
  }
  const DeviceSpan buffer = momentum_on ? p.momentum_buffer : DeviceSpan{};
  check_disjoint(op, {{"param", p.param, true}, {"grad", p.grad, false}, {"momentumBuffer", buffer, true}}, p.n);
  if (p.n == 0) return;
  const SgdCoefficients c{p.weight_decay != 0.0,
                          momentum_on,
                          p.nesterov,
                          p.first,
                          static_cast<float>(p.weight_decay),
                          static_cast<float>(p.momentum),
                          static_cast<float>(1.0 - p.dampening),
                          static_cast<float>(-p.lr)};
  launch("sgd_step", sgd_kernel, dim3(grid_for(p.n, kThreads)), dim3(kThreads), 0, static_cast<float*>(p.param.data),
         static_cast<const float*>(p.grad.data), static_cast<float*>(buffer.data), p.n, c);
}

}  // namespace mstar::cuda
