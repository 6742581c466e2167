// Runs the CUDA kernels under the host emulation (emu.h) against float64 references:
// GEMM (every transpose, float32 via 3xTF32 and TF32, bfloat16, vector and scalar load
// paths, batches with broadcast, alpha/beta/bias/activation), unary and broadcast binary
// ops, softmax and layer norm forward and backward, flash attention forward (masks, fused
// qkv strides, Nk = 0), ragged-bag attention pooling forward and backward (masks, empty
// and fully masked bags, −Infinity scores), depthwise conv forward and both backward
// passes (row chunks, strided views, 33×1 and 7×7 kernels), Nyström group sums and
// broadcasts (row ranges, strided rows), the tiled contrastive (CLIP) loss forward and
// backward (several tile sizes, a tile ending mid-GEMM-block, rows above 1024 columns,
// determinism), fused AdamW and SGD steps over several steps, odd sizes included.
// What it proves: the kernels' indexing, tiling, pipelining and fragment arithmetic are
// right under the PTX semantics as emu.h states them. What it cannot: timing, real
// memory-model races, compiler or hardware behaviour; test/cuda.test.ts on a GPU does that.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../../../cuda/attention.cuh"
#include "../../../cuda/bag_pool.cuh"
#include "../../../cuda/common.cuh"
#include "../../../cuda/contrastive.cuh"
#include "../../../cuda/dwconv2d.cuh"
#include "../../../cuda/elementwise.cuh"
#include "../../../cuda/gemm.cuh"
#include "../../../cuda/layernorm.cuh"
#include "../../../cuda/nystrom.cuh"
#include "../../../cuda/optim.cuh"
#include "../../../cuda/softmax.cuh"

namespace mstar::cuda {
size_t emulated_live_allocations();
}

using namespace mstar::cuda;
using mstar::ErrorCode;
using mstar::error_code_name;

namespace {

int g_failures = 0;
int g_checks = 0;

uint64_t g_rng = 0x9e3779b97f4a7c15ULL;
float uniform(float lo, float hi) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return lo + (hi - lo) * static_cast<float>(g_rng >> 40) / static_cast<float>(1 << 24);
}

// "Device" memory of exact size, holding either float or bfloat16 values.
struct Buffer {
  Dtype dtype;
  int64_t n;
  void* data;
  Buffer(Dtype d, int64_t count) : dtype(d), n(count), data(device_malloc(static_cast<size_t>(count) * dtype_size(d))) {}
  ~Buffer() { device_free(data); }
  Buffer(const Buffer&) = delete;
  DeviceSpan span() const { return {data, n}; }
  float get(int64_t i) const {
    return dtype == Dtype::BF16 ? to_float(static_cast<const bfloat16*>(data)[i]) : static_cast<const float*>(data)[i];
  }
  void set(int64_t i, float v) {
    if (dtype == Dtype::BF16) static_cast<bfloat16*>(data)[i] = float_to_bfloat16(v);
    else static_cast<float*>(data)[i] = v;
  }
  void fill_random(float lo = -1, float hi = 1) {
    for (int64_t i = 0; i < n; ++i) set(i, uniform(lo, hi));
  }
  void fill(float v) {
    for (int64_t i = 0; i < n; ++i) set(i, v);
  }
  std::vector<double> values() const {
    std::vector<double> out(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = get(i);
    return out;
  }
};

// |got − want| <= atol + rtol·|want| everywhere; prints the first mismatches.
void expect_close(const std::string& label, const Buffer& got, const std::vector<double>& want, double atol,
                  double rtol) {
  ++g_checks;
  int bad = 0;
  double worst = 0, max_err = 0;
  for (int64_t i = 0; i < got.n; ++i) {
    const double w = want[static_cast<size_t>(i)], g = got.get(i);
    if (!std::isfinite(w)) {  // infinities must match exactly, NaN must stay NaN
      if (std::isnan(w) ? !std::isnan(g) : g != w) {
        if (bad < 5) std::printf("    [%lld] got %.7g want %.7g\n", static_cast<long long>(i), g, w);
        ++bad;
      }
      continue;
    }
    const double err = std::fabs(g - w);
    max_err = std::fmax(max_err, std::isnan(err) ? INFINITY : err);
    if (!(err <= atol + rtol * std::fabs(w))) {
      if (bad < 5) std::printf("    [%lld] got %.7g want %.7g\n", static_cast<long long>(i), g, w);
      ++bad;
      worst = std::fmax(worst, std::isnan(err) ? INFINITY : err);
    }
  }
  if (bad > 0) {
    ++g_failures;
    std::printf("FAIL %s: %d of %lld mismatches (worst %.3g)\n", label.c_str(), bad, static_cast<long long>(got.n),
                worst);
  } else {
    std::printf("ok   %s (max abs err %.2g)\n", label.c_str(), max_err);
  }
}

// fn must throw mstar::Error with `code` (arguments are checked before any launch).
void expect_error(const char* label, ErrorCode code, const std::function<void()>& fn) {
  ++g_checks;
  try {
    fn();
  } catch (const mstar::Error& e) {
    if (e.code() == code) {
      std::printf("ok   %s (%s)\n", label, e.what());
      return;
    }
    std::printf("FAIL %s: wrong code %s (%s)\n", label, error_code_name(e.code()), e.what());
    ++g_failures;
    return;
  }
  std::printf("FAIL %s: no error\n", label);
  ++g_failures;
}

// ---- gemm ---------------------------------------------------------------------------

struct GemmCase {
  Dtype dtype;
  GemmMath math;
  bool trans_a, trans_b;
  int64_t batch, m, n, k;
  int64_t pad_a, pad_b, pad_c;  // extra elements per row beyond the minimum leading dimension
  bool broadcast_b;             // stride_b = 0
  float alpha, beta;
  bool bias;
  Activation activation;
};

void run_gemm_case(const GemmCase& t) {
  const int64_t a_rows = t.trans_a ? t.k : t.m, a_cols = t.trans_a ? t.m : t.k;
  const int64_t b_rows = t.trans_b ? t.n : t.k, b_cols = t.trans_b ? t.k : t.n;
  const int64_t lda = a_cols + t.pad_a, ldb = b_cols + t.pad_b, ldc = t.n + t.pad_c;
  const int64_t stride_a = a_rows * lda, stride_b = t.broadcast_b ? 0 : b_rows * ldb, stride_c = t.m * ldc;
  Buffer a(t.dtype, t.batch * stride_a), b(t.dtype, t.broadcast_b ? b_rows * ldb : t.batch * stride_b);
  Buffer c(t.dtype, t.batch * stride_c), bias(t.dtype, t.n);
  a.fill_random();
  b.fill_random();
  bias.fill_random();
  // beta == 0 must ignore C entirely, NaN included.
  if (t.beta == 0.0f) c.fill(NAN);
  else c.fill_random();
  const std::vector<double> c_old = c.values();

  GemmParams p;
  p.dtype = t.dtype;
  p.math = t.math;
  p.a = a.span();
  p.b = b.span();
  p.c = c.span();
  if (t.bias) p.bias = bias.span();
  p.batch = t.batch;
  p.m = t.m;
  p.n = t.n;
  p.k = t.k;
  p.trans_a = t.trans_a;
  p.trans_b = t.trans_b;
  p.lda = lda;
  p.ldb = ldb;
  p.ldc = ldc;
  p.stride_a = stride_a;
  p.stride_b = stride_b;
  p.stride_c = stride_c;
  p.alpha = t.alpha;
  p.beta = t.beta;
  p.activation = t.activation;
  gemm(p);

  std::vector<double> want = c_old;  // padding entries must stay as they were
  for (int64_t bi = 0; bi < t.batch; ++bi) {
    for (int64_t i = 0; i < t.m; ++i) {
      for (int64_t j = 0; j < t.n; ++j) {
        double sum = 0;
        for (int64_t kk = 0; kk < t.k; ++kk) {
          const double av = a.get(bi * stride_a + (t.trans_a ? kk * lda + i : i * lda + kk));
          const double bv = b.get(bi * stride_b + (t.trans_b ? j * ldb + kk : kk * ldb + j));
          sum += av * bv;
        }
        const int64_t ci = bi * stride_c + i * ldc + j;
        double x = t.alpha * sum + (t.beta != 0.0f ? t.beta * c_old[static_cast<size_t>(ci)] : 0.0);
        if (t.bias) x += bias.get(j);
        if (t.activation == Activation::Relu) x = x > 0 ? x : 0;
        if (t.activation == Activation::Gelu) x = 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
        want[static_cast<size_t>(ci)] = x;
      }
    }
  }
  // bfloat16 output rounding is 2^-9 relative; TF32 inputs carry 2^-11 relative error per
  // product; 3xTF32 is float32-level.
  double atol = 2e-5, rtol = 2e-5;
  if (t.dtype == Dtype::BF16) atol = rtol = 1e-2;
  else if (t.math == GemmMath::Tf32) atol = rtol = 5e-3;
  char label[256];
  std::snprintf(label, sizeof label, "gemm %s%s %c%c batch %lld %lldx%lldx%lld pads %lld/%lld/%lld%s a%.1f b%.1f%s act%d",
                dtype_name(t.dtype), t.dtype == Dtype::F32 ? (t.math == GemmMath::Tf32 ? "/tf32" : "/3xtf32") : "",
                t.trans_a ? 'T' : 'N', t.trans_b ? 'T' : 'N', static_cast<long long>(t.batch),
                static_cast<long long>(t.m), static_cast<long long>(t.n), static_cast<long long>(t.k),
                static_cast<long long>(t.pad_a), static_cast<long long>(t.pad_b), static_cast<long long>(t.pad_c),
                t.broadcast_b ? " bcastB" : "", t.alpha, t.beta, t.bias ? " bias" : "",
                static_cast<int>(t.activation));
  expect_close(label, c, want, atol, rtol);
}

void test_gemm() {
  struct Shape {
    int64_t m, n, k;
  };
  // Odd sizes around the 128 tile and the 32/16-element K stage, plus aligned ones that
  // take the 16-byte cp.async path.
  const Shape shapes[] = {{1, 1, 1}, {3, 5, 7}, {65, 33, 40}, {130, 129, 67}, {64, 136, 96}, {200, 8, 48}};
  const Dtype dtypes[] = {Dtype::BF16, Dtype::F32};
  for (Dtype dtype : dtypes) {
    for (const Shape& s : shapes) {
      for (int layout = 0; layout < 4; ++layout) {
        GemmCase t{dtype, GemmMath::Fp32, (layout & 1) != 0, (layout & 2) != 0, 1, s.m, s.n, s.k, 0, 0, 0,
                   false, 1.0f, 0.0f, false, Activation::None};
        run_gemm_case(t);
      }
    }
    // Leading dimensions with padding: aligned (vector path) and odd (scalar path).
    run_gemm_case({dtype, GemmMath::Fp32, false, true, 1, 70, 50, 64, 8, 8, 3, false, 1, 0, false, Activation::None});
    run_gemm_case({dtype, GemmMath::Fp32, true, false, 1, 64, 72, 33, 3, 5, 0, false, 1, 0, false, Activation::None});
    // Batches, broadcast B, alpha/beta, bias and activations.
    run_gemm_case({dtype, GemmMath::Fp32, false, true, 3, 40, 24, 32, 0, 0, 0, true, 2.0f, 0.5f, true, Activation::Gelu});
    run_gemm_case({dtype, GemmMath::Fp32, true, true, 2, 17, 130, 48, 0, 0, 2, false, 1.0f, 1.0f, true, Activation::Relu});
  }
  run_gemm_case({Dtype::F32, GemmMath::Tf32, false, false, 1, 65, 70, 100, 0, 0, 0, false, 1, 0, true, Activation::None});
  run_gemm_case({Dtype::F32, GemmMath::Tf32, true, true, 2, 33, 20, 64, 0, 0, 0, false, 1, 0.5f, false, Activation::Gelu});

  // 3xTF32 must really be float32-accurate: on values with a long mantissa a single TF32
  // product is off by ~1e-3 relative, 3xTF32 by ~1e-6.
  {
    const int64_t m = 16, n = 16, k = 64;
    Buffer a(Dtype::F32, m * k), b(Dtype::F32, k * n), c(Dtype::F32, m * n);
    a.fill_random(1.0f, 2.0f);
    b.fill_random(1.0f, 2.0f);
    GemmParams p;
    p.a = a.span();
    p.b = b.span();
    p.c = c.span();
    p.m = m;
    p.n = n;
    p.k = k;
    p.lda = k;
    p.ldb = n;
    p.ldc = n;
    gemm(p);
    std::vector<double> want(static_cast<size_t>(m * n));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t kk = 0; kk < k; ++kk) s += a.get(i * k + kk) * b.get(kk * n + j);
        want[static_cast<size_t>(i * n + j)] = s;
      }
    expect_close("gemm 3xTF32 accuracy on [1,2) inputs (rtol 2e-6)", c, want, 0, 2e-6);
  }

  // Arguments are checked before anything is launched.
  Buffer small(Dtype::F32, 10), out(Dtype::F32, 100);
  GemmParams bad;
  bad.a = small.span();
  bad.b = small.span();
  bad.c = out.span();
  bad.m = 4;
  bad.n = 4;
  bad.k = 4;
  bad.lda = 4;
  bad.ldb = 4;
  bad.ldc = 4;
  expect_error("gemm rejects a too-small a", ErrorCode::Shape, [&] { gemm(bad); });
  GemmParams overlap = bad;
  overlap.a = out.span();
  overlap.b = out.span();
  expect_error("gemm rejects c overlapping a", ErrorCode::Argument, [&] { gemm(overlap); });
  GemmParams f16 = bad;
  f16.dtype = Dtype::F16;
  expect_error("gemm rejects float16", ErrorCode::Unsupported, [&] { gemm(f16); });
}

// ---- elementwise ----------------------------------------------------------------------

double unary_ref(UnaryOp op, double x) {
  switch (op) {
    case UnaryOp::Relu: return x > 0 ? x : 0;
    case UnaryOp::Gelu: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case UnaryOp::Tanh: return std::tanh(x);
    case UnaryOp::Sigmoid: return 1 / (1 + std::exp(-x));
    case UnaryOp::Exp: return std::exp(x);
    case UnaryOp::Log: return std::log(x);
    case UnaryOp::Neg: return -x;
    case UnaryOp::Sqrt: return std::sqrt(x);
    case UnaryOp::Abs: return std::fabs(x);
    case UnaryOp::Square: return x * x;
  }
  return 0;
}

void test_elementwise() {
  const int64_t sizes[] = {1, 3, 65, 769};
  for (Dtype dtype : {Dtype::F32, Dtype::BF16}) {
    const double tol = dtype == Dtype::BF16 ? 1e-2 : 1e-5;
    for (int o = 0; o < kUnaryOpCount; ++o) {
      const auto op = static_cast<UnaryOp>(o);
      const bool positive = op == UnaryOp::Log || op == UnaryOp::Sqrt;
      for (int64_t n : sizes) {
        Buffer x(dtype, n), y(dtype, n), gy(dtype, n), gx(dtype, n);
        x.fill_random(positive ? 0.1f : -3.0f, 3.0f);
        gy.fill_random();
        unary_forward(op, dtype, x.span(), y.span(), n);
        std::vector<double> want(static_cast<size_t>(n)), want_g(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) {
          const double xv = x.get(i), h = 1e-4;
          want[static_cast<size_t>(i)] = unary_ref(op, xv);
          // Central difference in float64 as the derivative reference.
          want_g[static_cast<size_t>(i)] = gy.get(i) * (unary_ref(op, xv + h) - unary_ref(op, xv - h)) / (2 * h);
        }
        const std::string tag = std::string(dtype_name(dtype)) + " op " + std::to_string(o) + " n " + std::to_string(n);
        expect_close("unary_forward " + tag, y, want, tol, tol);
        unary_backward(op, dtype, x.span(), y.span(), gy.span(), gx.span(), n);
        // y is stored rounded (bfloat16), and ops that use y in the derivative inherit that.
        expect_close("unary_backward " + tag, gx, want_g, dtype == Dtype::BF16 ? 3e-2 : 1e-3,
                     dtype == Dtype::BF16 ? 3e-2 : 1e-3);
      }
    }
    // Broadcast [3, 1, 5] ⊙ [1, 4, 5] -> [3, 4, 5]; and a transposed (strided) a.
    for (int o = 0; o < kBinaryOpCount; ++o) {
      const auto op = static_cast<BinaryOp>(o);
      Buffer a(dtype, 15), b(dtype, 20), out(dtype, 60);
      a.fill_random(0.5f, 2.0f);
      b.fill_random(0.5f, 2.0f);
      binary_forward(op, dtype, a.span(), b.span(), out.span(), {3, 4, 5}, {5, 0, 1}, {0, 5, 1});
      std::vector<double> want(60);
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 4; ++j)
          for (int k = 0; k < 5; ++k) {
            const double av = a.get(i * 5 + k), bv = b.get(j * 5 + k);
            double r = 0;
            switch (op) {
              case BinaryOp::Add: r = av + bv; break;
              case BinaryOp::Sub: r = av - bv; break;
              case BinaryOp::Mul: r = av * bv; break;
              case BinaryOp::Div: r = av / bv; break;
              case BinaryOp::Max: r = std::fmax(av, bv); break;
              case BinaryOp::Min: r = std::fmin(av, bv); break;
            }
            want[static_cast<size_t>((i * 4 + j) * 5 + k)] = r;
          }
      expect_close(std::string("binary_forward broadcast ") + dtype_name(dtype) + " op " + std::to_string(o), out, want,
                   tol, tol);
    }
    {
      // out[i][j] = a[j][i] + b (scalar): a read transposed, b fully broadcast.
      Buffer a(dtype, 7 * 9), b(dtype, 1), out(dtype, 9 * 7);
      a.fill_random();
      b.fill_random();
      binary_forward(BinaryOp::Add, dtype, a.span(), b.span(), out.span(), {9, 7}, {1, 9}, {0, 0});
      std::vector<double> want(63);
      for (int i = 0; i < 9; ++i)
        for (int j = 0; j < 7; ++j) want[static_cast<size_t>(i * 7 + j)] = a.get(j * 9 + i) + b.get(0);
      expect_close(std::string("binary_forward transposed + scalar ") + dtype_name(dtype), out, want, tol, tol);
    }
  }
}

// ---- softmax ----------------------------------------------------------------------------

void test_softmax() {
  struct Shape {
    int64_t rows, cols;
  };
  const Shape shapes[] = {{1, 1}, {3, 3}, {65, 769}, {3, 1500}, {9, 1025}};
  for (Dtype dtype : {Dtype::F32, Dtype::BF16}) {
    const double tol = dtype == Dtype::BF16 ? 1e-2 : 1e-5;
    for (bool log : {false, true}) {
      for (const Shape& s : shapes) {
        const int64_t n = s.rows * s.cols;
        Buffer x(dtype, n), y(dtype, n), gy(dtype, n), gx(dtype, n);
        x.fill_random(-4, 4);
        gy.fill_random();
        // A masked entry in the last row (if it has more than one column).
        if (s.cols > 1) x.set(n - 1, -INFINITY);
        softmax_forward(dtype, x.span(), y.span(), s.rows, s.cols, log);
        std::vector<double> want(static_cast<size_t>(n)), want_g(static_cast<size_t>(n));
        for (int64_t r = 0; r < s.rows; ++r) {
          double mx = -INFINITY, sum = 0;
          for (int64_t c = 0; c < s.cols; ++c) mx = std::fmax(mx, x.get(r * s.cols + c));
          for (int64_t c = 0; c < s.cols; ++c) sum += std::exp(x.get(r * s.cols + c) - mx);
          double dot = 0;
          for (int64_t c = 0; c < s.cols; ++c) {
            const int64_t i = r * s.cols + c;
            const double p = std::exp(x.get(i) - mx) / sum;
            want[static_cast<size_t>(i)] = log ? x.get(i) - mx - std::log(sum) : p;
            dot += log ? gy.get(i) : gy.get(i) * y.get(i);
          }
          for (int64_t c = 0; c < s.cols; ++c) {
            const int64_t i = r * s.cols + c;
            // Backward from the kernel's own y, so only the backward kernel is under test.
            want_g[static_cast<size_t>(i)] =
                log ? gy.get(i) - std::exp(y.get(i)) * dot : y.get(i) * (gy.get(i) - dot);
          }
        }
        const std::string tag = std::string(dtype_name(dtype)) + (log ? " log " : " ") + std::to_string(s.rows) + "x" +
                                std::to_string(s.cols);
        expect_close("softmax_forward " + tag, y, want, tol, tol);
        softmax_backward(dtype, y.span(), gy.span(), gx.span(), s.rows, s.cols, log);
        expect_close("softmax_backward " + tag, gx, want_g, tol, tol);
      }
    }
  }
}

// ---- layer norm --------------------------------------------------------------------------

void test_layernorm() {
  struct Shape {
    int64_t rows, cols;
  };
  const Shape shapes[] = {{1, 1}, {3, 7}, {65, 769}, {5, 1300}, {70, 33}};
  for (Dtype dtype : {Dtype::F32, Dtype::BF16}) {
    const double tol = dtype == Dtype::BF16 ? 2e-2 : 1e-4;
    for (bool affine : {true, false}) {
      for (const Shape& s : shapes) {
        const int64_t n = s.rows * s.cols;
        const float eps = 1e-5f;
        Buffer x(dtype, n), y(dtype, n), gy(dtype, n), gx(dtype, n);
        Buffer gamma(Dtype::F32, s.cols), beta(Dtype::F32, s.cols), mean(Dtype::F32, s.rows), rstd(Dtype::F32, s.rows);
        Buffer g_gamma(Dtype::F32, s.cols), g_beta(Dtype::F32, s.cols);
        x.fill_random(-2, 3);
        gy.fill_random();
        gamma.fill_random(0.5f, 1.5f);
        beta.fill_random();
        g_gamma.fill(0.25f);  // += semantics
        g_beta.fill(-0.5f);
        const DeviceSpan no{};
        layernorm_forward(dtype, x.span(), affine ? gamma.span() : no, affine ? beta.span() : no, y.span(), mean.span(),
                          rstd.span(), s.rows, s.cols, eps);
        layernorm_backward(dtype, x.span(), affine ? gamma.span() : no, mean.span(), rstd.span(), gy.span(), gx.span(),
                           g_gamma.span(), g_beta.span(), s.rows, s.cols);
        std::vector<double> want_y(static_cast<size_t>(n)), want_gx(static_cast<size_t>(n));
        std::vector<double> want_mean(static_cast<size_t>(s.rows)), want_rstd(static_cast<size_t>(s.rows));
        std::vector<double> want_gg(static_cast<size_t>(s.cols), 0.25), want_gb(static_cast<size_t>(s.cols), -0.5);
        for (int64_t r = 0; r < s.rows; ++r) {
          double mu = 0, var = 0;
          for (int64_t c = 0; c < s.cols; ++c) mu += x.get(r * s.cols + c);
          mu /= static_cast<double>(s.cols);
          for (int64_t c = 0; c < s.cols; ++c) var += std::pow(x.get(r * s.cols + c) - mu, 2);
          var /= static_cast<double>(s.cols);
          const double rs = 1 / std::sqrt(var + eps);
          want_mean[static_cast<size_t>(r)] = mu;
          want_rstd[static_cast<size_t>(r)] = rs;
          double sum_g = 0, sum_gx = 0;
          for (int64_t c = 0; c < s.cols; ++c) {
            const int64_t i = r * s.cols + c;
            const double xhat = (x.get(i) - mu) * rs, gm = affine ? gamma.get(c) : 1.0;
            want_y[static_cast<size_t>(i)] = xhat * gm + (affine ? beta.get(c) : 0.0);
            sum_g += gy.get(i) * gm;
            sum_gx += gy.get(i) * gm * xhat;
            want_gg[static_cast<size_t>(c)] += gy.get(i) * xhat;
            want_gb[static_cast<size_t>(c)] += gy.get(i);
          }
          for (int64_t c = 0; c < s.cols; ++c) {
            const int64_t i = r * s.cols + c;
            const double xhat = (x.get(i) - mu) * rs, gm = affine ? gamma.get(c) : 1.0;
            want_gx[static_cast<size_t>(i)] =
                rs * (gy.get(i) * gm - sum_g / static_cast<double>(s.cols) - xhat * sum_gx / static_cast<double>(s.cols));
          }
        }
        const std::string tag = std::string(dtype_name(dtype)) + (affine ? " affine " : " plain ") +
                                std::to_string(s.rows) + "x" + std::to_string(s.cols);
        expect_close("layernorm_forward y " + tag, y, want_y, tol, tol);
        expect_close("layernorm_forward mean " + tag, mean, want_mean, 1e-5, 1e-5);
        expect_close("layernorm_forward rstd " + tag, rstd, want_rstd, 1e-4, 1e-4);
        expect_close("layernorm_backward gx " + tag, gx, want_gx, tol * 5, tol * 5);
        // Column sums over up to 65 rows: float32 accumulation.
        expect_close("layernorm_backward gGamma " + tag, g_gamma, want_gg, 1e-3, 1e-3);
        expect_close("layernorm_backward gBeta " + tag, g_beta, want_gb, 1e-3, 1e-3);
      }
    }
  }
}

// ---- attention -----------------------------------------------------------------------------

struct AttentionCase {
  int64_t batch, heads, q_len, k_len, head_dim;
  bool fused;  // q, k, v interleaved as one [B, N, 3, H, D] tensor (k_len == q_len)
  bool mask;
};

void run_attention_case(const AttentionCase& t) {
  const int64_t B = t.batch, H = t.heads, D = t.head_dim;
  AttentionParams p;
  p.dtype = Dtype::BF16;
  p.batch = B;
  p.heads = H;
  p.q_len = t.q_len;
  p.k_len = t.k_len;
  p.head_dim = D;
  p.scale = 1.0f / std::sqrt(static_cast<float>(D));
  // Separate tensors are [B, H, N, D]; fused ones [B, N, 3, H, D] (as timm's qkv linear).
  std::unique_ptr<Buffer> qkv, q, k, v;
  if (t.fused) {
    qkv = std::make_unique<Buffer>(Dtype::BF16, B * t.q_len * 3 * H * D);
    qkv->fill_random(-2, 2);
    const AttentionStrides s{t.q_len * 3 * H * D, D, 3 * H * D};
    p.q_strides = p.k_strides = p.v_strides = s;
    p.q = {qkv->data, qkv->n};
    p.k = {static_cast<bfloat16*>(qkv->data) + H * D, qkv->n - H * D};
    p.v = {static_cast<bfloat16*>(qkv->data) + 2 * H * D, qkv->n - 2 * H * D};
  } else {
    q = std::make_unique<Buffer>(Dtype::BF16, B * H * t.q_len * D);
    k = std::make_unique<Buffer>(Dtype::BF16, B * H * t.k_len * D);
    v = std::make_unique<Buffer>(Dtype::BF16, B * H * t.k_len * D);
    q->fill_random(-2, 2);
    k->fill_random(-2, 2);
    v->fill_random(-2, 2);
    p.q_strides = {H * t.q_len * D, t.q_len * D, D};
    p.k_strides = p.v_strides = {H * t.k_len * D, t.k_len * D, D};
    p.q = q->span();
    p.k = k->span();
    p.v = v->span();
  }
  Buffer out(Dtype::BF16, B * H * t.q_len * D), lse(Dtype::F32, B * H * t.q_len);
  out.fill(NAN);
  p.out = out.span();
  p.out_strides = {H * t.q_len * D, t.q_len * D, D};
  p.lse = lse.span();
  std::vector<uint8_t> mask_host(static_cast<size_t>(B * t.k_len), 1);
  void* mask_dev = device_malloc(mask_host.size());
  if (t.mask) {
    for (int64_t j = 0; j < t.k_len; ++j) mask_host[static_cast<size_t>(j)] = j % 3 != 1;  // batch 0: some keys
    for (int64_t j = 0; j < t.k_len && B > 1; ++j) mask_host[static_cast<size_t>(t.k_len + j)] = 0;  // batch 1: none
    std::memcpy(mask_dev, mask_host.data(), mask_host.size());
    p.key_mask = {mask_dev, static_cast<int64_t>(mask_host.size())};
  }
  attention_forward(p);

  auto at = [&](const DeviceSpan& span, const AttentionStrides& s, int64_t b, int64_t h, int64_t n, int64_t d) {
    return static_cast<double>(to_float(static_cast<const bfloat16*>(span.data)[b * s.batch + h * s.head + n * s.row + d]));
  };
  std::vector<double> want(static_cast<size_t>(out.n)), want_lse(static_cast<size_t>(lse.n));
  std::vector<double> scores(static_cast<size_t>(t.k_len));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < t.q_len; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < t.k_len; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += at(p.q, p.q_strides, b, h, i, d) * at(p.k, p.k_strides, b, h, j, d);
          const bool attend = !t.mask || mask_host[static_cast<size_t>(b * t.k_len + j)];
          scores[static_cast<size_t>(j)] = attend ? dot * p.scale : -INFINITY;
          mx = std::fmax(mx, scores[static_cast<size_t>(j)]);
        }
        double sum = 0;
        for (int64_t j = 0; j < t.k_len; ++j) sum += mx == -INFINITY ? 0 : std::exp(scores[static_cast<size_t>(j)] - mx);
        const int64_t row = (b * H + h) * t.q_len + i;
        want_lse[static_cast<size_t>(row)] = sum > 0 ? mx + std::log(sum) : -INFINITY;
        for (int64_t d = 0; d < D; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < t.k_len && sum > 0; ++j) {
            acc += std::exp(scores[static_cast<size_t>(j)] - mx) / sum * at(p.v, p.v_strides, b, h, j, d);
          }
          want[static_cast<size_t>(row * D + d)] = acc;
        }
      }
  char label[160];
  std::snprintf(label, sizeof label, "attention bf16 B%lld H%lld Nq%lld Nk%lld D%lld%s%s", static_cast<long long>(B),
                static_cast<long long>(H), static_cast<long long>(t.q_len), static_cast<long long>(t.k_len),
                static_cast<long long>(D), t.fused ? " fused-qkv" : "", t.mask ? " mask" : "");
  // P is rounded to bfloat16 before P·V, and out is stored in bfloat16.
  expect_close(std::string(label) + " out", out, want, 2e-2, 2e-2);
  expect_close(std::string(label) + " lse", lse, want_lse, 1e-3, 1e-3);
  device_free(mask_dev);
}

void test_attention() {
  const AttentionCase cases[] = {
      {1, 1, 1, 1, 64, false, false},   {2, 2, 65, 3, 64, false, true},   {1, 2, 3, 197, 128, false, false},
      {2, 1, 130, 65, 128, false, true}, {2, 2, 70, 70, 64, true, false}, {1, 1, 20, 129, 64, false, true},
      {1, 1, 5, 0, 64, false, false},
  };
  for (const AttentionCase& c : cases) run_attention_case(c);
}

// ---- bag pooling --------------------------------------------------------------------------

// Uint8 "device" memory for masks.
struct ByteBuffer {
  std::vector<uint8_t> host;
  void* data;
  explicit ByteBuffer(const std::vector<uint8_t>& values)
      : host(values), data(device_malloc(values.size())) {
    if (!values.empty()) std::memcpy(data, values.data(), values.size());
  }
  ~ByteBuffer() { device_free(data); }
  ByteBuffer(const ByteBuffer&) = delete;
  DeviceSpan span() const { return {data, static_cast<int64_t>(host.size())}; }
};

struct BagPoolCase {
  std::vector<int64_t> bag_sizes;
  int64_t heads, dim, h_pad;
  bool mask;            // every 4th instance masked, and the last bag entirely
  bool neg_inf_head;    // head 0 of bag 0 has only −Infinity scores
};

void run_bag_pool_case(const BagPoolCase& t) {
  BagPoolParams p;
  p.bags = static_cast<int64_t>(t.bag_sizes.size());
  p.offsets.assign(1, 0);
  for (int64_t size : t.bag_sizes) p.offsets.push_back(p.offsets.back() + size);
  p.total = p.offsets.back();
  p.heads = t.heads;
  p.dim = t.dim;
  p.h_stride = t.dim + t.h_pad;
  const int64_t B = p.bags, T = p.total, K = p.heads, L = p.dim;
  Buffer scores(Dtype::F32, T * K), h(Dtype::F32, T == 0 ? 0 : (T - 1) * p.h_stride + L);
  Buffer attn(Dtype::F32, T * K), pooled(Dtype::F32, B * K * L), grad_pooled(Dtype::F32, B * K * L);
  Buffer grad_h(Dtype::F32, T * L), grad_scores(Dtype::F32, T * K);
  scores.fill_random(-3, 3);
  h.fill_random();
  grad_pooled.fill_random();
  attn.fill(NAN);  // every entry must be written
  pooled.fill(NAN);
  grad_h.fill(NAN);
  grad_scores.fill(NAN);
  if (t.neg_inf_head && B > 0) {
    for (int64_t i = p.offsets[0]; i < p.offsets[1]; ++i) scores.set(i * K, -INFINITY);
  }
  std::vector<uint8_t> valid(static_cast<size_t>(T), 1);
  if (t.mask) {
    for (int64_t i = 0; i < T; ++i) valid[static_cast<size_t>(i)] = i % 4 != 3;
    for (int64_t i = p.offsets[B - 1]; i < T; ++i) valid[static_cast<size_t>(i)] = 0;
  }
  ByteBuffer mask(valid);
  if (t.mask) p.mask = mask.span();
  p.scores = scores.span();
  p.h = h.span();
  p.attn = attn.span();
  p.pooled = pooled.span();
  p.grad_pooled = grad_pooled.span();
  p.grad_h = grad_h.span();
  p.grad_scores = grad_scores.span();
  bag_pool_forward(p);
  bag_pool_backward(p);

  // Forward reference in float64. The backward reference starts from the kernel's own
  // attn and pooled, so only the backward kernels are under test there.
  std::vector<double> want_attn(static_cast<size_t>(T * K)), want_pooled(static_cast<size_t>(B * K * L));
  std::vector<double> want_gh(static_cast<size_t>(T * L)), want_gs(static_cast<size_t>(T * K));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t begin = p.offsets[b], end = p.offsets[b + 1];
    for (int64_t k = 0; k < K; ++k) {
      double mx = -INFINITY, sum = 0, centre = 0;
      for (int64_t i = begin; i < end; ++i)
        if (valid[static_cast<size_t>(i)]) mx = std::fmax(mx, scores.get(i * K + k));
      for (int64_t i = begin; i < end; ++i)
        if (valid[static_cast<size_t>(i)] && mx != -INFINITY) sum += std::exp(scores.get(i * K + k) - mx);
      for (int64_t i = begin; i < end; ++i) {
        const bool use = valid[static_cast<size_t>(i)] && sum > 0;
        want_attn[static_cast<size_t>(i * K + k)] = use ? std::exp(scores.get(i * K + k) - mx) / sum : 0.0;
      }
      for (int64_t c = 0; c < L; ++c) {
        double acc = 0;
        for (int64_t i = begin; i < end; ++i) acc += want_attn[static_cast<size_t>(i * K + k)] * h.get(i * p.h_stride + c);
        want_pooled[static_cast<size_t>((b * K + k) * L + c)] = acc;
        centre += pooled.get((b * K + k) * L + c) * grad_pooled.get((b * K + k) * L + c);
      }
      for (int64_t i = begin; i < end; ++i) {
        const double a = attn.get(i * K + k);
        double dot = 0;
        for (int64_t c = 0; c < L; ++c) dot += h.get(i * p.h_stride + c) * grad_pooled.get((b * K + k) * L + c);
        want_gs[static_cast<size_t>(i * K + k)] = a == 0 ? 0.0 : a * (dot - centre);
      }
    }
    for (int64_t i = begin; i < end; ++i)
      for (int64_t c = 0; c < L; ++c) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += attn.get(i * K + k) * grad_pooled.get((b * K + k) * L + c);
        want_gh[static_cast<size_t>(i * L + c)] = acc;
      }
  }
  std::string tag = "bags [";
  for (size_t b = 0; b < t.bag_sizes.size(); ++b) tag += (b ? "," : "") + std::to_string(t.bag_sizes[b]);
  tag += "] K" + std::to_string(K) + " L" + std::to_string(L) + " hStride" + std::to_string(p.h_stride) +
         (t.mask ? " mask" : "") + (t.neg_inf_head ? " -inf" : "");
  expect_close("bag_pool_forward attn " + tag, attn, want_attn, 1e-6, 1e-5);
  expect_close("bag_pool_forward pooled " + tag, pooled, want_pooled, 1e-5, 1e-5);
  expect_close("bag_pool_backward gradH " + tag, grad_h, want_gh, 1e-5, 1e-5);
  // h·g − M·g cancels: the error is relative to the terms, not to the difference.
  expect_close("bag_pool_backward gradScores " + tag, grad_scores, want_gs, 2e-5 * std::sqrt(L + 1.0), 1e-4);

  // Each output alone: the other stays untouched.
  if (T > 0) {
    grad_h.fill(7.0f);
    grad_scores.fill(NAN);
    BagPoolParams only_scores = p;
    only_scores.grad_h = {};
    bag_pool_backward(only_scores);
    expect_close("bag_pool_backward gradScores alone " + tag, grad_scores, want_gs, 2e-5 * std::sqrt(L + 1.0), 1e-4);
    BagPoolParams only_h = p;
    only_h.grad_scores = {};
    grad_scores.fill(7.0f);
    bag_pool_backward(only_h);
    expect_close("bag_pool_backward gradH alone " + tag, grad_h, want_gh, 1e-5, 1e-5);
    expect_close("bag_pool_backward gradScores untouched " + tag, grad_scores,
                 std::vector<double>(static_cast<size_t>(T * K), 7.0), 0, 0);
  }
}

void test_bag_pool() {
  const BagPoolCase cases[] = {
      {{1}, 1, 1, 0, false, false},
      {{5, 0, 37, 3}, 3, 65, 2, true, false},     // an empty bag, a fully masked last bag
      {{65, 7}, 2, 33, 0, false, true},           // a head whose scores are all −Infinity
      {{1100, 30}, 1, 33, 5, true, false},        // a bag above 1024 rows: block-per-row softmax
      {{4, 3}, 2, 1030, 0, false, false},         // rows above 1024 columns: block-per-row backward
      {{0, 0}, 2, 3, 0, false, false},            // no instances at all: pooled is zero
      {{200, 1, 90, 300, 2}, 1, 40, 0, true, false},
  };
  for (const BagPoolCase& c : cases) run_bag_pool_case(c);

  Buffer small(Dtype::F32, 8), out(Dtype::F32, 64);
  BagPoolParams bad;
  bad.bags = 2;
  bad.total = 4;
  bad.heads = 1;
  bad.dim = 2;
  bad.h_stride = 2;
  bad.offsets = {0, 3, 2};
  bad.scores = small.span();
  bad.h = small.span();
  bad.attn = small.span();
  bad.pooled = small.span();
  expect_error("bag_pool rejects decreasing offsets", ErrorCode::Range, [&] { bag_pool_forward(bad); });
  bad.offsets = {0, 2, 3};
  expect_error("bag_pool rejects offsets not ending at total", ErrorCode::Range, [&] { bag_pool_forward(bad); });
  bad.offsets = {0, 2, 4};
  bad.dim = 3;
  bad.h_stride = 3;
  expect_error("bag_pool rejects a too-small h", ErrorCode::Shape, [&] { bag_pool_forward(bad); });
  bad.dim = 2;
  bad.h_stride = 2;
  bad.grad_pooled = small.span();
  bad.grad_h = small.span();
  bad.grad_scores = small.span();
  bad.heads = 3;
  expect_error("bag_pool backward rejects a too-small attn", ErrorCode::Shape, [&] { bag_pool_backward(bad); });
}

// ---- depthwise conv -----------------------------------------------------------------------

struct DwConvCase {
  int64_t batch, height, width, channels, kernel_h, kernel_w;
  int64_t row_begin, row_end;  // output rows of the call
  int64_t pad;                 // extra elements per pixel (a view into a wider buffer)
  bool bias;
};

void run_dwconv_case(const DwConvCase& t) {
  DwConv2dParams p;
  p.batch = t.batch;
  p.height = t.height;
  p.width = t.width;
  p.channels = t.channels;
  p.kernel_h = t.kernel_h;
  p.kernel_w = t.kernel_w;
  p.row_begin = t.row_begin;
  p.row_end = t.row_end;
  const int64_t B = t.batch, H = t.height, W = t.width, C = t.channels, kh = t.kernel_h, kw = t.kernel_w;
  const int64_t ph = kh / 2, pw = kw / 2, taps = kh * kw, stride = C + t.pad;
  // Inputs hold exactly the rows the call needs; outputs exactly the rows it writes.
  const int64_t in0 = std::max<int64_t>(0, t.row_begin - ph), in1 = std::min(H, t.row_end + ph);
  const int64_t out0 = t.row_begin, out_rows = t.row_end - t.row_begin;
  auto elems = [&](int64_t rows) { return B * rows * W == 0 ? 0 : (B * rows * W - 1) * stride + C; };
  Buffer x(Dtype::F32, elems(in1 - in0)), gy_in(Dtype::F32, elems(in1 - in0));
  Buffer y(Dtype::F32, elems(out_rows)), gx(Dtype::F32, elems(out_rows)), gy_out(Dtype::F32, elems(out_rows));
  Buffer weight(Dtype::F32, C * taps), bias(Dtype::F32, C);
  Buffer g_weight(Dtype::F32, C * taps), g_bias(Dtype::F32, C);
  x.fill_random();
  gy_in.fill_random();
  gy_out.fill_random();
  weight.fill_random();
  bias.fill_random();
  y.fill(NAN);  // padding between pixels stays NaN: it must be neither written nor read
  gx.fill(NAN);
  g_weight.fill(0.25f);  // += semantics
  g_bias.fill(-0.5f);
  const std::vector<double> y_before = y.values(), gx_before = gx.values();
  p.weight = weight.span();
  if (t.bias) p.bias = bias.span();
  const DwConvBuffer xb{x.span(), in0, in1 - in0, stride}, gyb_in{gy_in.span(), in0, in1 - in0, stride};
  const DwConvBuffer yb{y.span(), out0, out_rows, stride}, gxb{gx.span(), out0, out_rows, stride};
  const DwConvBuffer gyb_out{gy_out.span(), out0, out_rows, stride};
  dwconv2d_forward(p, xb, yb);
  dwconv2d_backward_input(p, gyb_in, gxb);
  dwconv2d_backward_weight(p, xb, gyb_out, g_weight.span(), g_bias.span());

  auto at = [&](const Buffer& buf, int64_t row0, int64_t rows, int64_t b, int64_t r, int64_t col, int64_t c) {
    return static_cast<double>(buf.get(((b * rows + r - row0) * W + col) * stride + c));
  };
  std::vector<double> want_y = y_before, want_gx = gx_before;
  std::vector<double> want_gw(static_cast<size_t>(C * taps), 0.25), want_gb(static_cast<size_t>(C), -0.5);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = t.row_begin; r < t.row_end; ++r)
      for (int64_t col = 0; col < W; ++col)
        for (int64_t c = 0; c < C; ++c) {
          double acc = t.bias ? bias.get(c) : 0.0, acc_in = 0;
          const double g = at(gy_out, out0, out_rows, b, r, col, c);
          want_gb[static_cast<size_t>(c)] += g;
          for (int64_t i = 0; i < kh; ++i)
            for (int64_t j = 0; j < kw; ++j) {
              const double w = weight.get(c * taps + i * kw + j);
              const int64_t rr = r + i - ph, xx = col + j - pw;
              if (rr >= 0 && rr < H && xx >= 0 && xx < W) {
                const double xv = at(x, in0, in1 - in0, b, rr, xx, c);
                acc += w * xv;
                want_gw[static_cast<size_t>(c * taps + i * kw + j)] += g * xv;
              }
              const int64_t fr = r - i + ph, fx = col - j + pw;
              if (fr >= 0 && fr < H && fx >= 0 && fx < W) acc_in += w * at(gy_in, in0, in1 - in0, b, fr, fx, c);
            }
          const int64_t o = ((b * out_rows + r - out0) * W + col) * stride + c;
          want_y[static_cast<size_t>(o)] = acc;
          want_gx[static_cast<size_t>(o)] = acc_in;
        }
  char tag[160];
  std::snprintf(tag, sizeof tag, "B%lld H%lld W%lld C%lld %lldx%lld rows [%lld, %lld) stride %lld%s",
                static_cast<long long>(B), static_cast<long long>(H), static_cast<long long>(W),
                static_cast<long long>(C), static_cast<long long>(kh), static_cast<long long>(kw),
                static_cast<long long>(t.row_begin), static_cast<long long>(t.row_end),
                static_cast<long long>(stride), t.bias ? " bias" : "");
  expect_close(std::string("dwconv2d_forward ") + tag, y, want_y, 1e-5, 1e-5);
  expect_close(std::string("dwconv2d_backward_input ") + tag, gx, want_gx, 1e-5, 1e-5);
  // Sums over up to B·rows·W pixels in float32.
  const double ptol = 1e-5 * std::sqrt(static_cast<double>(B * out_rows * W) + 1.0) * 4;
  expect_close(std::string("dwconv2d_backward_weight gWeight ") + tag, g_weight, want_gw, ptol, 1e-5);
  expect_close(std::string("dwconv2d_backward_weight gBias ") + tag, g_bias, want_gb, ptol, 1e-5);

  // Bias gradient alone, then weight gradient alone: the absent one is not needed.
  g_bias.fill(-0.5f);
  dwconv2d_backward_weight(p, xb, gyb_out, {}, g_bias.span());
  expect_close(std::string("dwconv2d_backward_weight gBias alone ") + tag, g_bias, want_gb, ptol, 1e-5);
  g_weight.fill(0.25f);
  dwconv2d_backward_weight(p, xb, gyb_out, g_weight.span(), {});
  expect_close(std::string("dwconv2d_backward_weight gWeight alone ") + tag, g_weight, want_gw, ptol, 1e-5);
}

void test_dwconv2d() {
  const DwConvCase cases[] = {
      {1, 1, 1, 1, 1, 1, 0, 1, 0, false},
      {2, 7, 5, 3, 3, 3, 0, 7, 0, true},
      {1, 9, 9, 37, 7, 7, 2, 6, 3, true},     // a row chunk, inputs holding only the rows it reaches
      {1, 70, 1, 8, 33, 1, 0, 70, 16, false},  // the Nyström residual: (33, 1) taps over a sequence
      {1, 6, 6, 65, 5, 5, 0, 6, 0, false},     // three channel tiles
      {2, 20, 20, 5, 3, 3, 3, 17, 1, true},    // several pixel chunks in the weight gradient
      {1, 4, 3, 2, 5, 3, 4, 4, 0, true},       // an empty row range: nothing is written
  };
  for (const DwConvCase& c : cases) run_dwconv_case(c);

  Buffer buf(Dtype::F32, 64), w(Dtype::F32, 64);
  DwConv2dParams p;
  p.batch = 1;
  p.height = 4;
  p.width = 4;
  p.channels = 2;
  p.kernel_h = 2;
  p.kernel_w = 3;
  p.row_begin = 0;
  p.row_end = 4;
  p.weight = w.span();
  const DwConvBuffer whole{buf.span(), 0, 4, 2};
  expect_error("dwconv2d rejects an even kernel", ErrorCode::Shape, [&] { dwconv2d_forward(p, whole, whole); });
  p.kernel_h = 3;
  const DwConvBuffer part{buf.span(), 1, 3, 2};
  expect_error("dwconv2d rejects an input missing rows the taps reach", ErrorCode::Range,
               [&] { dwconv2d_forward(p, part, whole); });
  const DwConvBuffer wide{buf.span(), 0, 4, 5};
  expect_error("dwconv2d rejects a buffer too small for its stride", ErrorCode::Shape,
               [&] { dwconv2d_backward_input(p, wide, whole); });
}

// ---- Nyström groups -----------------------------------------------------------------------

void test_nystrom() {
  struct Case {
    int64_t row_begin, row_end, cols, group, pad;
  };
  const Case cases[] = {{0, 1, 1, 1, 0}, {5, 83, 33, 7, 64}, {0, 300, 65, 256, 3}, {130, 131, 3, 65, 0}, {4, 4, 5, 2, 0}};
  for (const Case& t : cases) {
    const int64_t rows = t.row_end - t.row_begin, stride = t.cols + t.pad;
    const int64_t groups = rows == 0 ? 0 : (t.row_end - 1) / t.group + 1;
    const int64_t strided = rows == 0 ? 0 : (rows - 1) * stride + t.cols;
    char tag[128];
    std::snprintf(tag, sizeof tag, "rows [%lld, %lld) cols %lld group %lld stride %lld",
                  static_cast<long long>(t.row_begin), static_cast<long long>(t.row_end),
                  static_cast<long long>(t.cols), static_cast<long long>(t.group), static_cast<long long>(stride));

    Buffer x(Dtype::F32, strided), sums(Dtype::F32, groups * t.cols);
    x.fill_random();
    sums.fill_random();  // accumulated into
    std::vector<double> want = sums.values();
    for (int64_t r = t.row_begin; r < t.row_end; ++r)
      for (int64_t c = 0; c < t.cols; ++c)
        want[static_cast<size_t>((r / t.group) * t.cols + c)] += x.get((r - t.row_begin) * stride + c);
    group_row_sum(x.span(), stride, t.row_begin, t.row_end, t.cols, t.group, sums.span());
    expect_close(std::string("group_row_sum ") + tag, sums, want, 1e-5 * std::sqrt(t.group + 1.0), 1e-5);

    for (bool accumulate : {false, true}) {
      Buffer g(Dtype::F32, groups * t.cols), out(Dtype::F32, strided);
      g.fill_random();
      out.fill_random();
      const float alpha = 0.75f;
      std::vector<double> want_out = out.values();
      for (int64_t r = t.row_begin; r < t.row_end; ++r)
        for (int64_t c = 0; c < t.cols; ++c) {
          double& o = want_out[static_cast<size_t>((r - t.row_begin) * stride + c)];
          const double v = alpha * g.get((r / t.group) * t.cols + c);
          o = accumulate ? o + v : v;
        }
      group_row_broadcast(g.span(), t.row_begin, t.row_end, t.cols, t.group, alpha, out.span(), stride, accumulate);
      expect_close(std::string("group_row_broadcast ") + (accumulate ? "accumulate " : "write ") + tag, out, want_out,
                   1e-6, 1e-6);
    }
  }
  Buffer small(Dtype::F32, 10), smaller(Dtype::F32, 8);
  expect_error("group_row_sum rejects a too-small out", ErrorCode::Shape,
               [&] { group_row_sum(small.span(), 2, 0, 5, 2, 1, smaller.span()); });
  expect_error("group_row_broadcast rejects a stride below cols", ErrorCode::Shape,
               [&] { group_row_broadcast(small.span(), 0, 2, 3, 1, 1.0f, small.span(), 2, false); });
  expect_error("group_row_sum rejects group 0", ErrorCode::Range,
               [&] { group_row_sum(small.span(), 2, 0, 2, 2, 0, small.span()); });
}

// ---- contrastive loss -----------------------------------------------------------------------

// |got − want| for a scalar; prints like expect_close.
void expect_scalar(const std::string& label, double got, double want, double atol, double rtol) {
  ++g_checks;
  const double err = std::fabs(got - want);
  if (!(err <= atol + rtol * std::fabs(want))) {
    ++g_failures;
    std::printf("FAIL %s: got %.9g want %.9g (err %.3g)\n", label.c_str(), got, want, err);
  } else {
    std::printf("ok   %s (abs err %.2g)\n", label.c_str(), err);
  }
}

struct ContrastiveCase {
  int64_t n, d;
  float scale;
  int64_t tile_rows;
};

void run_contrastive_case(const ContrastiveCase& t) {
  const int64_t n = t.n, d = t.d;
  Buffer a(Dtype::F32, n * d), b(Dtype::F32, n * d), lse_rows(Dtype::F32, n), lse_cols(Dtype::F32, n);
  Buffer grad_a(Dtype::F32, n * d), grad_b(Dtype::F32, n * d);
  a.fill_random();
  b.fill_random();
  // Pairs more alike than the rest, as after training: b_i = a_i + noise; rows of about
  // unit length (as CLIP normalizes them), so that S = O(scale) and the softmaxes are not one-hot.
  const float unit = static_cast<float>(std::sqrt(3.0 / static_cast<double>(d)));
  for (int64_t i = 0; i < n * d; ++i) {
    a.set(i, unit * a.get(i));
    b.set(i, 0.5f * unit * b.get(i) + a.get(i));
  }
  lse_rows.fill(NAN);
  lse_cols.fill(NAN);
  grad_a.fill(NAN);  // every entry must be written (beta = 0 on the first tile)
  grad_b.fill(NAN);
  const float g_loss = 0.75f;
  ContrastiveParams p;
  p.a = a.span();
  p.b = b.span();
  p.n = n;
  p.d = d;
  p.scale = t.scale;
  p.tile_rows = t.tile_rows;
  p.lse_rows = lse_rows.span();
  p.lse_cols = lse_cols.span();
  p.g_loss = g_loss;
  p.grad_a = grad_a.span();
  p.grad_b = grad_b.span();
  const double loss = contrastive_forward(p);
  const double scale_grad = contrastive_backward(p);

  // float64 reference from the float inputs.
  std::vector<double> S(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < d; ++k) acc += static_cast<double>(a.get(i * d + k)) * b.get(j * d + k);
      S[static_cast<size_t>(i * n + j)] = t.scale * acc;
    }
  std::vector<double> want_rows(static_cast<size_t>(n)), want_cols(static_cast<size_t>(n));
  double want_loss = 0;
  for (int64_t i = 0; i < n; ++i) {
    double mr = -INFINITY, mc = -INFINITY, sr = 0, sc = 0;
    for (int64_t j = 0; j < n; ++j) {
      mr = std::fmax(mr, S[static_cast<size_t>(i * n + j)]);
      mc = std::fmax(mc, S[static_cast<size_t>(j * n + i)]);
    }
    for (int64_t j = 0; j < n; ++j) {
      sr += std::exp(S[static_cast<size_t>(i * n + j)] - mr);
      sc += std::exp(S[static_cast<size_t>(j * n + i)] - mc);
    }
    want_rows[static_cast<size_t>(i)] = mr + std::log(sr);
    want_cols[static_cast<size_t>(i)] = mc + std::log(sc);
  }
  for (int64_t i = 0; i < n; ++i) {
    want_loss += want_rows[static_cast<size_t>(i)] + want_cols[static_cast<size_t>(i)] - 2 * S[static_cast<size_t>(i * n + i)];
  }
  want_loss /= 2.0 * n;
  const double c = g_loss / (2.0 * n);
  std::vector<double> G(static_cast<size_t>(n * n)), want_ga(static_cast<size_t>(n * d), 0), want_gb(static_cast<size_t>(n * d), 0);
  double want_scale_grad = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const double s = S[static_cast<size_t>(i * n + j)];
      const double g = c * (std::exp(s - want_rows[static_cast<size_t>(i)]) + std::exp(s - want_cols[static_cast<size_t>(j)])) -
                       (i == j ? 2 * c : 0.0);
      G[static_cast<size_t>(i * n + j)] = g;
      want_scale_grad += g * s;
    }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const double g = t.scale * G[static_cast<size_t>(i * n + j)];
      for (int64_t k = 0; k < d; ++k) {
        want_ga[static_cast<size_t>(i * d + k)] += g * b.get(j * d + k);
        want_gb[static_cast<size_t>(j * d + k)] += g * a.get(i * d + k);
      }
    }
  char tag[96];
  std::snprintf(tag, sizeof tag, "n%lld d%lld scale %g tile %lld", static_cast<long long>(n), static_cast<long long>(d),
                static_cast<double>(t.scale), static_cast<long long>(t.tile_rows));
  // S carries float32 GEMM error (~1e-7·scale·Σ|a||b|); the lse inherits it.
  const double stol = 2e-6 * t.scale * std::sqrt(static_cast<double>(d)) + 1e-6;
  expect_scalar(std::string("contrastive_forward loss ") + tag, loss, want_loss, stol, 1e-6);
  expect_close(std::string("contrastive_forward lseRows ") + tag, lse_rows, want_rows, stol, 1e-6);
  expect_close(std::string("contrastive_forward lseCols ") + tag, lse_cols, want_cols, stol, 1e-6);
  // Gradients: scale · Σ_j G_ij b_j with |G| ≤ ~g_loss/n; errors relative to the largest entry.
  double gmax = 0;
  for (double v : want_ga) gmax = std::fmax(gmax, std::fabs(v));
  for (double v : want_gb) gmax = std::fmax(gmax, std::fabs(v));
  const double gtol = 1e-5 * gmax * (1 + stol) + 1e-7;
  expect_close(std::string("contrastive_backward gradA ") + tag, grad_a, want_ga, gtol, 1e-4);
  expect_close(std::string("contrastive_backward gradB ") + tag, grad_b, want_gb, gtol, 1e-4);
  // Σ G⊙S cancels twice: the rows of G sum to ~0, and with peaked softmaxes G_ii = c·(p + q) − 2c
  // is itself a small difference (formed in float32, as on the CPU). The tolerance is relative to
  // the terms before any cancellation: Σ c·(p + q)·|S| + 2c·Σ|S_ii|.
  double abs_terms = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const size_t k = static_cast<size_t>(i * n + j);
      abs_terms += std::fabs((G[k] + (i == j ? 2 * c : 0.0)) * S[k]) + (i == j ? 2 * c * std::fabs(S[k]) : 0.0);
    }
  expect_scalar(std::string("contrastive_backward scaleGrad ") + tag, scale_grad, want_scale_grad, 2e-6 * abs_terms + 1e-7,
                1e-5);

  // Deterministic: a second run gives the same bits.
  const std::vector<double> ga1 = grad_a.values(), gb1 = grad_b.values(), rows1 = lse_rows.values();
  const double loss2 = contrastive_forward(p), scale_grad2 = contrastive_backward(p);
  ++g_checks;
  if (loss2 != loss || scale_grad2 != scale_grad || grad_a.values() != ga1 || grad_b.values() != gb1 ||
      lse_rows.values() != rows1) {
    ++g_failures;
    std::printf("FAIL contrastive rerun differs %s\n", tag);
  } else {
    std::printf("ok   contrastive rerun is bit-identical %s\n", tag);
  }
}

void test_contrastive() {
  const ContrastiveCase cases[] = {
      {1, 1, 1.0f, 0},
      {5, 3, 2.5f, 2},     // tiles of 2, 2 and 1 rows
      {65, 33, 10.0f, 0},  // one tile
      {67, 17, 1.0f, 7},   // ragged last tile
      {130, 9, 20.0f, 64}, // S tiles spanning two GEMM column blocks, a 2-row last tile
      {37, 70, 14.3f, 1},  // one row per tile
  };
  for (const ContrastiveCase& c : cases) run_contrastive_case(c);
  // Rows above 1024 columns take the block-per-row kernels. Its GEMMs take minutes under
  // the emulator on a small machine, hence opt-in.
  if (const char* slow = std::getenv("CUDA_EMU_SLOW"); slow != nullptr && std::strcmp(slow, "1") == 0) {
    run_contrastive_case({1030, 2, 3.0f, 600});
  } else {
    std::printf("skip contrastive n1030 (block-per-row kernels; CUDA_EMU_SLOW=1 runs it)\n");
  }

  Buffer x(Dtype::F32, 64), small(Dtype::F32, 2), out(Dtype::F32, 64), out2(Dtype::F32, 64);
  ContrastiveParams p;
  p.a = x.span();
  p.b = x.span();
  p.n = 4;
  p.d = 4;
  p.lse_rows = out.span();
  p.lse_cols = {static_cast<float*>(out.data) + 8, 8};
  p.grad_a = out2.span();
  p.grad_b = {static_cast<float*>(out2.data) + 16, 16};
  ContrastiveParams bad = p;
  bad.scale = 0.0f;
  expect_error("contrastive rejects scale 0", ErrorCode::Argument, [&] { contrastive_forward(bad); });
  bad = p;
  bad.n = 0;
  expect_error("contrastive rejects n 0", ErrorCode::Shape, [&] { contrastive_forward(bad); });
  bad = p;
  bad.lse_rows = small.span();
  expect_error("contrastive rejects a too-small lseRows", ErrorCode::Shape, [&] { contrastive_forward(bad); });
  bad = p;
  bad.a = {x.data, 8};
  expect_error("contrastive rejects a too-small a", ErrorCode::Shape, [&] { contrastive_backward(bad); });
  bad = p;
  bad.grad_b = {static_cast<float*>(out2.data) + 8, 16};
  expect_error("contrastive rejects gradB overlapping gradA", ErrorCode::Argument, [&] { contrastive_backward(bad); });
  bad = p;
  bad.lse_cols = {static_cast<float*>(x.data) + 4, 8};
  expect_error("contrastive rejects lseCols overlapping a", ErrorCode::Argument, [&] { contrastive_forward(bad); });
  bad = p;
  bad.g_loss = NAN;
  expect_error("contrastive rejects a NaN gLoss", ErrorCode::Argument, [&] { contrastive_backward(bad); });
}

// ---- optimizers -----------------------------------------------------------------------------

// The CPU kernel's float operations on AVX2 (cpp/ops/optim.cc), spelled out in scalar code:
// the device must match it bit for bit.
struct HostAdamW {
  static void step(float& p, float g, float& m, float& v, const AdamWParams& h) {
    const double step = static_cast<double>(h.step);
    const float w = static_cast<float>(1.0 - h.beta1);
    const bool from_m = std::fabs(w) < 0.5f;
    const float lerp = from_m ? w : w - 1.0f;
    const float b2 = static_cast<float>(h.beta2), omb2 = static_cast<float>(1.0 - h.beta2);
    const float bc2 = static_cast<float>(std::sqrt(1.0 - std::pow(h.beta2, step)));
    const float nss = static_cast<float>(-(h.lr / (1.0 - std::pow(h.beta1, step))));
    if (h.weight_decay != 0) p = p * static_cast<float>(1.0 - h.lr * h.weight_decay);
    m = std::fmaf(lerp, g - m, from_m ? m : g);
    v = std::fmaf(omb2 * g, g, v * b2);
    const float denom = std::sqrt(v) / bc2 + static_cast<float>(h.eps);
    p = p + (nss * m) / denom;
  }
};

void test_optim() {
  const int64_t sizes[] = {1, 3, 1000, 70001};
  for (int64_t n : sizes) {
    for (double wd : {0.0, 0.05}) {
      for (double beta1 : {0.9, 0.3}) {  // 1 − β1 below and above 0.5: both lerp forms
        Buffer param(Dtype::F32, n), grad(Dtype::F32, n), m(Dtype::F32, n), v(Dtype::F32, n);
        param.fill_random();
        m.fill(0);
        v.fill(0);
        std::vector<float> hp(static_cast<size_t>(n)), hm(static_cast<size_t>(n), 0), hv(static_cast<size_t>(n), 0);
        std::vector<double> dp(static_cast<size_t>(n)), dm(static_cast<size_t>(n), 0), dv(static_cast<size_t>(n), 0);
        for (int64_t i = 0; i < n; ++i) hp[static_cast<size_t>(i)] = param.get(i), dp[static_cast<size_t>(i)] = param.get(i);
        AdamWParams h;
        h.param = param.span();
        h.grad = grad.span();
        h.m = m.span();
        h.v = v.span();
        h.n = n;
        h.lr = 1e-2;
        h.beta1 = beta1;
        h.beta2 = 0.999;
        h.eps = 1e-8;
        h.weight_decay = wd;
        for (int64_t step = 1; step <= 5; ++step) {
          grad.fill_random();
          h.step = step;
          adamw_step(h);
          for (int64_t i = 0; i < n; ++i) {
            const size_t k = static_cast<size_t>(i);
            const double g = grad.get(i);
            HostAdamW::step(hp[k], grad.get(i), hm[k], hv[k], h);
            dp[k] *= 1 - h.lr * wd;
            dm[k] = beta1 * dm[k] + (1 - beta1) * g;
            dv[k] = h.beta2 * dv[k] + (1 - h.beta2) * g * g;
            const double mhat = dm[k] / (1 - std::pow(beta1, step)), vhat = dv[k] / (1 - std::pow(h.beta2, step));
            dp[k] -= h.lr * mhat / (std::sqrt(vhat) + h.eps);
          }
        }
        char tag[96];
        std::snprintf(tag, sizeof tag, "n%lld wd %g beta1 %g, 5 steps", static_cast<long long>(n), wd, beta1);
        expect_close(std::string("adamw_step param vs float64 ") + tag, param, dp, 1e-5, 1e-5);
        expect_close(std::string("adamw_step m vs float64 ") + tag, m, dm, 1e-6, 1e-5);
        expect_close(std::string("adamw_step v vs float64 ") + tag, v, dv, 1e-7, 1e-5);
        expect_close(std::string("adamw_step param vs the CPU's float ops (exact) ") + tag, param,
                     std::vector<double>(hp.begin(), hp.end()), 0, 0);
        expect_close(std::string("adamw_step m, v exact ") + tag, m, std::vector<double>(hm.begin(), hm.end()), 0, 0);
        expect_close(std::string("adamw_step v exact ") + tag, v, std::vector<double>(hv.begin(), hv.end()), 0, 0);
      }
    }
  }

  struct SgdCase {
    double momentum, dampening, wd;
    bool nesterov;
  };
  const SgdCase cases[] = {{0, 0, 0, false}, {0, 0, 0.01, false}, {0.9, 0, 0, false},
                           {0.9, 0.1, 0.01, false}, {0.9, 0, 0.01, true}};
  for (int64_t n : sizes) {
    for (const SgdCase& t : cases) {
      Buffer param(Dtype::F32, n), grad(Dtype::F32, n), buf(Dtype::F32, n);
      param.fill_random();
      buf.fill(NAN);  // the first step must not read it
      std::vector<float> hp(static_cast<size_t>(n)), hb(static_cast<size_t>(n), 0);
      std::vector<double> dp(static_cast<size_t>(n)), db(static_cast<size_t>(n), 0);
      for (int64_t i = 0; i < n; ++i) hp[static_cast<size_t>(i)] = param.get(i), dp[static_cast<size_t>(i)] = param.get(i);
      SgdParams h;
      h.param = param.span();
      h.grad = grad.span();
      if (t.momentum != 0) h.momentum_buffer = buf.span();
      h.n = n;
      h.lr = 0.05;
      h.momentum = t.momentum;
      h.dampening = t.dampening;
      h.weight_decay = t.wd;
      h.nesterov = t.nesterov;
      const float wd = static_cast<float>(t.wd), mom = static_cast<float>(t.momentum);
      const float omd = static_cast<float>(1.0 - t.dampening), neg_lr = static_cast<float>(-h.lr);
      for (int step = 0; step < 4; ++step) {
        grad.fill_random();
        h.first = step == 0;
        sgd_step(h);
        for (int64_t i = 0; i < n; ++i) {
          const size_t k = static_cast<size_t>(i);
          // The CPU's float operations.
          float d = grad.get(i);
          if (t.wd != 0) d = std::fmaf(hp[k], wd, d);
          if (t.momentum != 0) {
            hb[k] = h.first ? d : std::fmaf(d, omd, hb[k] * mom);
            d = t.nesterov ? std::fmaf(hb[k], mom, d) : hb[k];
          }
          hp[k] = std::fmaf(d, neg_lr, hp[k]);
          // float64.
          double dd = grad.get(i) + t.wd * dp[k];
          if (t.momentum != 0) {
            db[k] = h.first ? dd : t.momentum * db[k] + (1 - t.dampening) * dd;
            dd = t.nesterov ? dd + t.momentum * db[k] : db[k];
          }
          dp[k] -= h.lr * dd;
        }
      }
      char tag[112];
      std::snprintf(tag, sizeof tag, "n%lld momentum %g dampening %g wd %g%s, 4 steps", static_cast<long long>(n),
                    t.momentum, t.dampening, t.wd, t.nesterov ? " nesterov" : "");
      expect_close(std::string("sgd_step param vs float64 ") + tag, param, dp, 1e-6, 1e-5);
      expect_close(std::string("sgd_step param exact ") + tag, param, std::vector<double>(hp.begin(), hp.end()), 0, 0);
      if (t.momentum != 0) {
        expect_close(std::string("sgd_step buffer vs float64 ") + tag, buf, db, 1e-6, 1e-5);
        expect_close(std::string("sgd_step buffer exact ") + tag, buf, std::vector<double>(hb.begin(), hb.end()), 0, 0);
      }
    }
  }

  Buffer x(Dtype::F32, 16), y(Dtype::F32, 16), z(Dtype::F32, 16), w(Dtype::F32, 16), small(Dtype::F32, 4);
  AdamWParams a;
  a.param = x.span();
  a.grad = y.span();
  a.m = z.span();
  a.v = w.span();
  a.n = 16;
  a.lr = 1e-3;
  AdamWParams bad = a;
  bad.beta1 = 1.0;
  expect_error("adamw rejects beta1 = 1", ErrorCode::Argument, [&] { adamw_step(bad); });
  bad = a;
  bad.eps = 0;
  expect_error("adamw rejects eps = 0", ErrorCode::Argument, [&] { adamw_step(bad); });
  bad = a;
  bad.step = 0;
  expect_error("adamw rejects step 0", ErrorCode::Argument, [&] { adamw_step(bad); });
  bad = a;
  bad.v = small.span();
  expect_error("adamw rejects a too-small v", ErrorCode::Shape, [&] { adamw_step(bad); });
  bad = a;
  bad.m = {static_cast<float*>(x.data) + 4, 12};
  bad.n = 8;
  expect_error("adamw rejects m overlapping param", ErrorCode::Argument, [&] { adamw_step(bad); });
  SgdParams s;
  s.param = x.span();
  s.grad = y.span();
  s.n = 16;
  s.lr = 0.1;
  s.momentum = 0.9;
  expect_error("sgd rejects momentum without a buffer", ErrorCode::Argument, [&] { sgd_step(s); });
  s.momentum_buffer = z.span();
  s.nesterov = true;
  s.dampening = 0.5;
  expect_error("sgd rejects nesterov with dampening", ErrorCode::Argument, [&] { sgd_step(s); });
  s.nesterov = false;
  s.momentum_buffer = y.span();
  expect_error("sgd rejects a buffer aliasing grad", ErrorCode::Argument, [&] { sgd_step(s); });
  s.dampening = 1.5;
  expect_error("sgd rejects dampening > 1", ErrorCode::Argument, [&] { sgd_step(s); });
}

}  // namespace

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "";
  auto want = [&](const char* name) { return only.empty() || only == name; };
  if (want("gemm")) test_gemm();
  if (want("elementwise")) test_elementwise();
  if (want("softmax")) test_softmax();
  if (want("layernorm")) test_layernorm();
  if (want("attention")) test_attention();
  if (want("bag_pool")) test_bag_pool();
  if (want("dwconv2d")) test_dwconv2d();
  if (want("nystrom")) test_nystrom();
  if (want("contrastive")) test_contrastive();
  if (want("optim")) test_optim();
  if (emulated_live_allocations() != 0) {
    std::printf("FAIL %zu emulated device allocations leaked\n", emulated_live_allocations());
    ++g_failures;
  }
  std::printf("%d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
