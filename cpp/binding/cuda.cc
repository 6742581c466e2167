// CUDA entry points. Compiled in both builds: the CPU addon (binding.gyp) registers
// only cudaDeviceCount() -> 0 and cudaInfo() -> {built: false}, so callers can probe any
// build; the CUDA addon (CMakeLists.txt, MSTAR_WITH_CUDA) adds device buffers and one
// `cuda<Op>` per kernel, taking device buffers in the argument order of the CPU function
// in lib/native.ts, plus an optional trailing dtype. As everywhere in the binding, this
// file only converts: every check on sizes and extents happens in cuda/<op>.cu.
//
// Device buffers are Napi::External handles, type-tagged so that no other external
// can be passed for one. cudaFree releases memory at once (views of the buffer then
// throw ERR_DETACHED); the GC finalizer is only a safety net.
#include "../core/error.h"
#include "args.h"
#include "dwconv_args.h"
#include "registry.h"

#ifdef MSTAR_WITH_CUDA
#include "../../cuda/attention.cuh"
#include "../../cuda/bag_pool.cuh"
#include "../../cuda/contrastive.cuh"
#include "../../cuda/dwconv2d.cuh"
#include "../../cuda/elementwise.cuh"
#include "../../cuda/gemm.cuh"
#include "../../cuda/layernorm.cuh"
#include "../../cuda/nystrom.cuh"
#include "../../cuda/optim.cuh"
#include "../../cuda/runtime.cuh"
#include "../../cuda/softmax.cuh"
#endif

using namespace mstar::binding;

#ifndef MSTAR_WITH_CUDA

MSTAR_BINDING(cudaDeviceCount) { return Napi::Number::New(info.Env(), 0); }

MSTAR_BINDING(cudaInfo) {
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("built", Napi::Boolean::New(info.Env(), false));
  return out;
}

#else  // MSTAR_WITH_CUDA

namespace {

namespace cu = mstar::cuda;

// Marks externals made by cudaAlloc/cudaView (a random 128-bit constant).
constexpr napi_type_tag kDeviceBufferTag = {0x6d737461722d6375ULL, 0x64612d6275666672ULL};

// Largest single allocation accepted from JS (64 TiB): far above any device, far below overflow.
constexpr int64_t kMaxAllocBytes = int64_t{1} << 46;

Napi::Value wrap_buffer(Napi::Env env, cu::DeviceBuffer buffer) {
  auto* owned = new cu::DeviceBuffer(std::move(buffer));
  auto handle = Napi::External<cu::DeviceBuffer>::New(env, owned, [](Napi::Env, cu::DeviceBuffer* b) { delete b; });
  handle.TypeTag(&kDeviceBufferTag);
  return handle;
}

bool has_arg(const Napi::CallbackInfo& info, size_t index) {
  return index < info.Length() && !info[index].IsUndefined();
}

cu::DeviceBuffer& arg_buffer(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = index < info.Length() ? info[index] : info.Env().Undefined();
  if (!value.IsExternal() || !value.As<Napi::External<cu::DeviceBuffer>>().CheckTypeTag(&kDeviceBufferTag)) {
    throw_js(info.Env(), "ERR_ARGUMENT", std::string(name) + " must be a CUDA device buffer (from cudaAlloc)");
  }
  return *value.As<Napi::External<cu::DeviceBuffer>>().Data();
}

// The buffer's memory as elements of `dtype` (ERR_DETACHED once freed).
cu::DeviceSpan arg_span(const Napi::CallbackInfo& info, size_t index, const char* name, cu::Dtype dtype) {
  return arg_buffer(info, index, name).span(dtype);
}

// Same; null or undefined gives an absent span.
cu::DeviceSpan arg_span_optional(const Napi::CallbackInfo& info, size_t index, const char* name, cu::Dtype dtype) {
  if (index >= info.Length() || info[index].IsNull() || info[index].IsUndefined()) return {};
  return arg_span(info, index, name, dtype);
}

// Trailing storage dtype (DtypeCode), float32 when omitted.
cu::Dtype arg_dtype(const Napi::CallbackInfo& info, size_t index) {
  if (!has_arg(info, index)) return cu::Dtype::F32;
  int64_t code = arg_int(info, index, "dtype");
  if (code < 0 || code > 2) throw_js(info.Env(), "ERR_ARGUMENT", "dtype must be a DtypeCode (0, 1 or 2)", true);
  return static_cast<cu::Dtype>(code);
}

int32_t arg_enum(const Napi::CallbackInfo& info, size_t index, const char* name) {
  int64_t v = arg_int(info, index, name);
  if (v < 0 || v > 255) throw_js(info.Env(), "ERR_ARGUMENT", std::string(name) + " is not a valid code", true);
  return static_cast<int32_t>(v);
}

// Host memory of any typed array, for uploads and downloads (bytes are copied as they are).
struct HostBytes {
  void* data;
  size_t bytes;
};

HostBytes arg_host(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Env env = info.Env();
  Napi::Value value = index < info.Length() ? info[index] : env.Undefined();
  if (!value.IsTypedArray()) throw_js(env, "ERR_ARGUMENT", std::string(name) + " must be a typed array");
  Napi::TypedArray array = value.As<Napi::TypedArray>();
  Napi::ArrayBuffer buffer = array.ArrayBuffer();
  bool detached = false;
  napi_is_detached_arraybuffer(env, buffer, &detached);
  if (detached) throw_js(env, "ERR_DETACHED", std::string(name) + " was released (its buffer is detached)");
  const size_t bytes = array.ByteLength();
  return {bytes == 0 ? nullptr : static_cast<uint8_t*>(buffer.Data()) + array.ByteOffset(), bytes};
}

Napi::Number number(Napi::Env env, double v) { return Napi::Number::New(env, v); }

}  // namespace

// ---- runtime ------------------------------------------------------------------------

// cudaDeviceCount() -> number of usable GPUs (compute capability 8.0+); 0 without a driver or GPU.
MSTAR_BINDING(cudaDeviceCount) { return number(info.Env(), cu::device_count()); }

// cudaInfo() -> {built, runtimeVersion, driverVersion, devices: [...], deviceLost, lostReason}
MSTAR_BINDING(cudaInfo) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("built", Napi::Boolean::New(env, true));
  out.Set("runtimeVersion", number(env, cu::runtime_version()));
  out.Set("driverVersion", number(env, cu::driver_version()));
  // A lost device cannot be queried; say so instead of throwing from an info call.
  const int count = cu::device_lost() ? 0 : cu::device_count();
  Napi::Array devices = Napi::Array::New(env, count);
  for (int i = 0; i < count; ++i) {
    const cu::DeviceInfo d = cu::device_info(i);
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", number(env, d.index));
    o.Set("name", Napi::String::New(env, d.name));
    o.Set("computeCapability", Napi::String::New(env, std::to_string(d.major) + "." + std::to_string(d.minor)));
    o.Set("multiprocessors", number(env, d.multiprocessors));
    o.Set("totalMemory", number(env, static_cast<double>(d.total_memory)));
    devices.Set(static_cast<uint32_t>(i), o);
  }
  out.Set("devices", devices);
  out.Set("deviceLost", Napi::Boolean::New(env, cu::device_lost()));
  out.Set("lostReason", Napi::String::New(env, cu::device_lost_reason()));
  return out;
}

// cudaSupportedOps() -> names of the ops this backend runs (the rest run on the CPU).
MSTAR_BINDING(cudaSupportedOps) {
  Napi::Env env = info.Env();
  static const char* const kOps[] = {"gemm",
                                     "unaryForward",
                                     "unaryBackward",
                                     "binaryForward",
                                     "softmaxForward",
                                     "softmaxBackward",
                                     "layerNormForward",
                                     "layerNormBackward",
                                     "attentionForward",
                                     "bagPoolForward",
                                     "bagPoolBackward",
                                     "dwconv2dForward",
                                     "dwconv2dBackwardInput",
                                     "dwconv2dBackwardWeight",
                                     "groupRowSum",
                                     "groupRowBroadcast",
                                     "contrastiveForward",
                                     "contrastiveBackward",
                                     "adamwStep",
                                     "sgdStep"};
  Napi::Array out = Napi::Array::New(env, sizeof(kOps) / sizeof(kOps[0]));
  for (uint32_t i = 0; i < sizeof(kOps) / sizeof(kOps[0]); ++i) out.Set(i, Napi::String::New(env, kOps[i]));
  return out;
}

MSTAR_BINDING(cudaSynchronize) {
  cu::synchronize();
  return info.Env().Undefined();
}

// cudaTestFault(): makes the device fault (illegal address) so tests can check that it is
// reported as lost. Only for tests, in a child process: the GPU stays unusable after it.
MSTAR_BINDING(cudaTestFault) {
  cu::trigger_device_fault_for_test();
  return info.Env().Undefined();
}

// ---- memory -------------------------------------------------------------------------

// cudaAlloc(bytes) -> device buffer handle (contents undefined).
MSTAR_BINDING(cudaAlloc) {
  int64_t bytes = arg_size(info, 0, "bytes");
  if (bytes > kMaxAllocBytes) {
    throw_js(info.Env(), "ERR_CUDA_OOM", "bytes: " + std::to_string(bytes) + " is too large", true);
  }
  return wrap_buffer(info.Env(), cu::DeviceBuffer::allocate(static_cast<size_t>(bytes)));
}

// cudaFree(buffer): returns the allocation to the cache now (idempotent). Every view of
// it throws ERR_DETACHED afterwards.
MSTAR_BINDING(cudaFree) {
  arg_buffer(info, 0, "buffer").release();
  return info.Env().Undefined();
}

// cudaView(buffer, byteOffset, bytes) -> a handle on a sub-range sharing the allocation.
MSTAR_BINDING(cudaView) {
  const cu::DeviceBuffer& buffer = arg_buffer(info, 0, "buffer");
  int64_t offset = arg_size(info, 1, "byteOffset");
  int64_t bytes = arg_size(info, 2, "bytes");
  return wrap_buffer(info.Env(), buffer.view(static_cast<size_t>(offset), static_cast<size_t>(bytes)));
}

// cudaUpload(host: TypedArray, buffer): host bytes -> start of buffer.
MSTAR_BINDING(cudaUpload) {
  HostBytes host = arg_host(info, 0, "host");
  const cu::DeviceBuffer& buffer = arg_buffer(info, 1, "buffer");
  if (host.bytes > buffer.bytes()) {
    throw_js(info.Env(), "ERR_SHAPE",
             "host: " + std::to_string(host.bytes) + " bytes do not fit the device buffer of " +
                 std::to_string(buffer.bytes()),
             true);
  }
  cu::copy_to_device(buffer.data(), host.data, host.bytes);
  return info.Env().Undefined();
}

// cudaDownload(buffer, host: TypedArray): start of buffer -> all of host. Waits for the
// queued work, so asynchronous kernel errors surface here.
MSTAR_BINDING(cudaDownload) {
  const cu::DeviceBuffer& buffer = arg_buffer(info, 0, "buffer");
  HostBytes host = arg_host(info, 1, "host");
  if (host.bytes > buffer.bytes()) {
    throw_js(info.Env(), "ERR_SHAPE",
             "host: " + std::to_string(host.bytes) + " bytes exceed the device buffer of " +
                 std::to_string(buffer.bytes()),
             true);
  }
  cu::copy_to_host(host.data, buffer.data(), host.bytes);
  return info.Env().Undefined();
}

// cudaCopy(src, dst, bytes): device -> device, queued.
MSTAR_BINDING(cudaCopy) {
  const cu::DeviceBuffer& src = arg_buffer(info, 0, "src");
  const cu::DeviceBuffer& dst = arg_buffer(info, 1, "dst");
  int64_t bytes = arg_size(info, 2, "bytes");
  if (static_cast<uint64_t>(bytes) > src.bytes() || static_cast<uint64_t>(bytes) > dst.bytes()) {
    throw_js(info.Env(), "ERR_SHAPE", "bytes: " + std::to_string(bytes) + " exceeds src or dst", true);
  }
  cu::copy_device(dst.data(), src.data(), static_cast<size_t>(bytes));
  return info.Env().Undefined();
}

// cudaZero(buffer): fills with zero bytes, queued.
MSTAR_BINDING(cudaZero) {
  const cu::DeviceBuffer& buffer = arg_buffer(info, 0, "buffer");
  cu::fill_zero(buffer.data(), buffer.bytes());
  return info.Env().Undefined();
}

MSTAR_BINDING(cudaMemoryStats) {
  Napi::Env env = info.Env();
  const cu::AllocatorStats s = cu::allocator_stats();
  Napi::Object out = Napi::Object::New(env);
  out.Set("bytesInUse", number(env, static_cast<double>(s.bytes_in_use)));
  out.Set("bytesCached", number(env, static_cast<double>(s.bytes_cached)));
  out.Set("bytesReserved", number(env, static_cast<double>(s.bytes_reserved)));
  out.Set("peakBytesInUse", number(env, static_cast<double>(s.peak_bytes_in_use)));
  out.Set("budget", number(env, static_cast<double>(s.budget)));
  out.Set("liveAllocations", number(env, static_cast<double>(s.live_allocations)));
  out.Set("allocations", number(env, static_cast<double>(s.allocations)));
  out.Set("cacheHits", number(env, static_cast<double>(s.cache_hits)));
  out.Set("deviceMallocs", number(env, static_cast<double>(s.device_mallocs)));
  out.Set("oomRetries", number(env, static_cast<double>(s.oom_retries)));
  return out;
}

MSTAR_BINDING(cudaResetPeakMemory) {
  cu::reset_peak_bytes_in_use();
  return info.Env().Undefined();
}

// cudaSetMemoryBudget(bytes): caps device memory held by the allocator; 0 = no cap.
MSTAR_BINDING(cudaSetMemoryBudget) {
  cu::set_memory_budget(static_cast<size_t>(arg_size(info, 0, "bytes")));
  return info.Env().Undefined();
}

MSTAR_BINDING(cudaEmptyCache) {
  cu::empty_cache();
  return info.Env().Undefined();
}

// ---- kernels (argument order of the CPU function, then dtype) -------------------------

// cudaGemm(a, b, c, bias, batch, m, n, k, transA, transB, lda, ldb, ldc,
//          strideA, strideB, strideC, alpha, beta, activation, dtype?, math?)
MSTAR_BINDING(cudaGemm) {
  cu::GemmParams p;
  p.dtype = arg_dtype(info, 19);
  p.a = arg_span(info, 0, "a", p.dtype);
  p.b = arg_span(info, 1, "b", p.dtype);
  p.c = arg_span(info, 2, "c", p.dtype);
  p.bias = arg_span_optional(info, 3, "bias", p.dtype);
  p.batch = arg_size(info, 4, "batch");
  p.m = arg_size(info, 5, "m");
  p.n = arg_size(info, 6, "n");
  p.k = arg_size(info, 7, "k");
  p.trans_a = arg_bool(info, 8, "transA");
  p.trans_b = arg_bool(info, 9, "transB");
  p.lda = arg_size(info, 10, "lda");
  p.ldb = arg_size(info, 11, "ldb");
  p.ldc = arg_size(info, 12, "ldc");
  p.stride_a = arg_size(info, 13, "strideA");
  p.stride_b = arg_size(info, 14, "strideB");
  p.stride_c = arg_size(info, 15, "strideC");
  p.alpha = static_cast<float>(arg_number(info, 16, "alpha"));
  p.beta = static_cast<float>(arg_number(info, 17, "beta"));
  p.activation = static_cast<cu::Activation>(arg_enum(info, 18, "activation"));
  p.math = has_arg(info, 20) ? static_cast<cu::GemmMath>(arg_enum(info, 20, "math")) : cu::GemmMath::Fp32;
  cu::gemm(p);
  return info.Env().Undefined();
}

// cudaUnaryForward(op, x, y, n, dtype?)
MSTAR_BINDING(cudaUnaryForward) {
  const cu::Dtype dtype = arg_dtype(info, 4);
  cu::unary_forward(static_cast<cu::UnaryOp>(arg_enum(info, 0, "op")), dtype, arg_span(info, 1, "x", dtype),
                    arg_span(info, 2, "y", dtype), arg_size(info, 3, "n"));
  return info.Env().Undefined();
}

// cudaUnaryBackward(op, x, y, gy, gx, n, dtype?)
MSTAR_BINDING(cudaUnaryBackward) {
  const cu::Dtype dtype = arg_dtype(info, 6);
  cu::unary_backward(static_cast<cu::UnaryOp>(arg_enum(info, 0, "op")), dtype, arg_span(info, 1, "x", dtype),
                     arg_span(info, 2, "y", dtype), arg_span(info, 3, "gy", dtype), arg_span(info, 4, "gx", dtype),
                     arg_size(info, 5, "n"));
  return info.Env().Undefined();
}

// cudaBinaryForward(op, a, b, out, shape, aStrides, bStrides, dtype?)
MSTAR_BINDING(cudaBinaryForward) {
  const cu::Dtype dtype = arg_dtype(info, 7);
  cu::binary_forward(static_cast<cu::BinaryOp>(arg_enum(info, 0, "op")), dtype, arg_span(info, 1, "a", dtype),
                     arg_span(info, 2, "b", dtype), arg_span(info, 3, "out", dtype), arg_sizes(info, 4, "shape"),
                     arg_ints(info, 5, "aStrides"), arg_ints(info, 6, "bStrides"));
  return info.Env().Undefined();
}

// cudaSoftmaxForward(x, y, rows, cols, log, dtype?)
MSTAR_BINDING(cudaSoftmaxForward) {
  const cu::Dtype dtype = arg_dtype(info, 5);
  cu::softmax_forward(dtype, arg_span(info, 0, "x", dtype), arg_span(info, 1, "y", dtype), arg_size(info, 2, "rows"),
                      arg_size(info, 3, "cols"), arg_bool(info, 4, "log"));
  return info.Env().Undefined();
}

// cudaSoftmaxBackward(y, gy, gx, rows, cols, log, dtype?)
MSTAR_BINDING(cudaSoftmaxBackward) {
  const cu::Dtype dtype = arg_dtype(info, 6);
  cu::softmax_backward(dtype, arg_span(info, 0, "y", dtype), arg_span(info, 1, "gy", dtype),
                       arg_span(info, 2, "gx", dtype), arg_size(info, 3, "rows"), arg_size(info, 4, "cols"),
                       arg_bool(info, 5, "log"));
  return info.Env().Undefined();
}

// cudaLayerNormForward(x, gamma, beta, y, mean, rstd, rows, cols, eps, dtype?)
// gamma, beta, mean, rstd are float32 whatever dtype is.
MSTAR_BINDING(cudaLayerNormForward) {
  const cu::Dtype dtype = arg_dtype(info, 9);
  const cu::Dtype f32 = cu::Dtype::F32;
  cu::layernorm_forward(dtype, arg_span(info, 0, "x", dtype), arg_span_optional(info, 1, "gamma", f32),
                        arg_span_optional(info, 2, "beta", f32), arg_span(info, 3, "y", dtype),
                        arg_span(info, 4, "mean", f32), arg_span(info, 5, "rstd", f32), arg_size(info, 6, "rows"),
                        arg_size(info, 7, "cols"), static_cast<float>(arg_number(info, 8, "eps")));
  return info.Env().Undefined();
}

// cudaLayerNormBackward(x, gamma, mean, rstd, gy, gx, gGamma, gBeta, rows, cols, dtype?)
// gamma, mean, rstd, gGamma, gBeta are float32 whatever dtype is.
MSTAR_BINDING(cudaLayerNormBackward) {
  const cu::Dtype dtype = arg_dtype(info, 10);
  const cu::Dtype f32 = cu::Dtype::F32;
  cu::layernorm_backward(dtype, arg_span(info, 0, "x", dtype), arg_span_optional(info, 1, "gamma", f32),
                         arg_span(info, 2, "mean", f32), arg_span(info, 3, "rstd", f32),
                         arg_span(info, 4, "gy", dtype), arg_span(info, 5, "gx", dtype),
                         arg_span_optional(info, 6, "gGamma", f32), arg_span_optional(info, 7, "gBeta", f32),
                         arg_size(info, 8, "rows"), arg_size(info, 9, "cols"));
  return info.Env().Undefined();
}

// [sB, sH, sN] strides of one attention tensor.
cu::AttentionStrides arg_attention_strides(const Napi::CallbackInfo& info, size_t index, const char* name) {
  std::vector<int64_t> s = arg_sizes(info, index, name);
  if (s.size() != 3) throw_js(info.Env(), "ERR_SHAPE", std::string(name) + " must be [batch, head, row] strides", true);
  return {s[0], s[1], s[2]};
}

// cudaAttentionForward(q, k, v, out, lse, keyMask, dims, qStrides, kStrides, vStrides, outStrides, scale, dtype?)
// dims = [B, H, Nq, Nk, D]; lse float32 [B, H, Nq]; keyMask a uint8 device buffer [B, Nk] or null.
MSTAR_BINDING(cudaAttentionForward) {
  cu::AttentionParams p;
  p.dtype = arg_dtype(info, 12);
  p.q = arg_span(info, 0, "q", p.dtype);
  p.k = arg_span(info, 1, "k", p.dtype);
  p.v = arg_span(info, 2, "v", p.dtype);
  p.out = arg_span(info, 3, "out", p.dtype);
  p.lse = arg_span(info, 4, "lse", cu::Dtype::F32);
  if (has_arg(info, 5) && !info[5].IsNull()) {
    const cu::DeviceBuffer& mask = arg_buffer(info, 5, "keyMask");
    p.key_mask = {mask.data(), static_cast<int64_t>(mask.bytes())};  // one byte per key
  }
  std::vector<int64_t> dims = arg_sizes(info, 6, "dims");
  if (dims.size() != 5) throw_js(info.Env(), "ERR_SHAPE", "dims must be [B, H, Nq, Nk, D]", true);
  p.batch = dims[0];
  p.heads = dims[1];
  p.q_len = dims[2];
  p.k_len = dims[3];
  p.head_dim = dims[4];
  p.q_strides = arg_attention_strides(info, 7, "qStrides");
  p.k_strides = arg_attention_strides(info, 8, "kStrides");
  p.v_strides = arg_attention_strides(info, 9, "vStrides");
  p.out_strides = arg_attention_strides(info, 10, "outStrides");
  p.scale = static_cast<float>(arg_number(info, 11, "scale"));
  cu::attention_forward(p);
  return info.Env().Undefined();
}

// ---- slide-level aggregation (float32 only, like the CPU kernels) ---------------------

namespace {

// A uint8 device buffer (one byte per element), null or undefined = absent.
cu::DeviceSpan arg_bytes_optional(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (index >= info.Length() || info[index].IsNull() || info[index].IsUndefined()) return {};
  const cu::DeviceBuffer& buffer = arg_buffer(info, index, name);
  return {buffer.data(), static_cast<int64_t>(buffer.bytes())};
}

// Bag offsets stay on the host (an Int32Array, as for the CPU kernel); cuda/bag_pool.cu checks them.
std::vector<int64_t> arg_offsets(const Napi::CallbackInfo& info, size_t index) {
  const I32Span offsets = arg_i32(info, index, "offsets");
  return std::vector<int64_t>(offsets.data, offsets.data + offsets.length);
}

// bags, total, heads, dim, hStride from `first` on.
void read_bag_sizes(const Napi::CallbackInfo& info, size_t first, cu::BagPoolParams& p) {
  p.bags = arg_size(info, first, "bags");
  p.total = arg_size(info, first + 1, "total");
  p.heads = arg_size(info, first + 2, "heads");
  p.dim = arg_size(info, first + 3, "dim");
  p.h_stride = arg_size(info, first + 4, "hStride");
}

}  // namespace

// cudaBagPoolForward(scores, h, offsets: Int32Array, mask | null, attn, pooled, bags, total, heads, dim, hStride)
// mask is a uint8 device buffer [total].
MSTAR_BINDING(cudaBagPoolForward) {
  const cu::Dtype f32 = cu::Dtype::F32;
  cu::BagPoolParams p;
  p.scores = arg_span(info, 0, "scores", f32);
  p.h = arg_span(info, 1, "h", f32);
  p.offsets = arg_offsets(info, 2);
  p.mask = arg_bytes_optional(info, 3, "mask");
  p.attn = arg_span(info, 4, "attn", f32);
  p.pooled = arg_span(info, 5, "pooled", f32);
  read_bag_sizes(info, 6, p);
  cu::bag_pool_forward(p);
  return info.Env().Undefined();
}

// cudaBagPoolBackward(h, offsets: Int32Array, mask | null, attn, pooled, gradPooled, gradH | null, gradScores | null,
//                     bags, total, heads, dim, hStride)
MSTAR_BINDING(cudaBagPoolBackward) {
  const cu::Dtype f32 = cu::Dtype::F32;
  cu::BagPoolParams p;
  p.h = arg_span(info, 0, "h", f32);
  p.offsets = arg_offsets(info, 1);
  p.mask = arg_bytes_optional(info, 2, "mask");
  p.attn = arg_span(info, 3, "attn", f32);
  p.pooled = arg_span(info, 4, "pooled", f32);
  p.grad_pooled = arg_span(info, 5, "gradPooled", f32);
  p.grad_h = arg_span_optional(info, 6, "gradH", f32);
  p.grad_scores = arg_span_optional(info, 7, "gradScores", f32);
  read_bag_sizes(info, 8, p);
  cu::bag_pool_backward(p);
  return info.Env().Undefined();
}

namespace {

// dims = [B, H, W, C, kh, kw] at `index`, then rowBegin, rowEnd.
cu::DwConv2dParams arg_dwconv_params(const Napi::CallbackInfo& info, size_t index) {
  return arg_dwconv_geometry<cu::DwConv2dParams>(info, index);
}

// (buffer, row0, rows, stride) at consecutive indices.
cu::DwConvBuffer arg_dwconv_buffer(const Napi::CallbackInfo& info, size_t index, const char* name) {
  cu::DwConvBuffer buf;
  buf.data = arg_span(info, index, name, cu::Dtype::F32);
  buf.row0 = arg_size(info, index + 1, "row0");
  buf.rows = arg_size(info, index + 2, "rows");
  buf.stride = arg_size(info, index + 3, "stride");
  return buf;
}

}  // namespace

// cudaDwconv2dForward(x, xRow0, xRows, xStride, weight, bias | null, y, yRow0, yRows, yStride, dims, rowBegin, rowEnd)
MSTAR_BINDING(cudaDwconv2dForward) {
  cu::DwConv2dParams p = arg_dwconv_params(info, 10);
  const cu::DwConvBuffer x = arg_dwconv_buffer(info, 0, "x");
  p.weight = arg_span(info, 4, "weight", cu::Dtype::F32);
  p.bias = arg_span_optional(info, 5, "bias", cu::Dtype::F32);
  const cu::DwConvBuffer y = arg_dwconv_buffer(info, 6, "y");
  cu::dwconv2d_forward(p, x, y);
  return info.Env().Undefined();
}

// cudaDwconv2dBackwardInput(gy, gyRow0, gyRows, gyStride, weight, gx, gxRow0, gxRows, gxStride, dims, rowBegin,
//                           rowEnd)
MSTAR_BINDING(cudaDwconv2dBackwardInput) {
  cu::DwConv2dParams p = arg_dwconv_params(info, 9);
  const cu::DwConvBuffer gy = arg_dwconv_buffer(info, 0, "gy");
  p.weight = arg_span(info, 4, "weight", cu::Dtype::F32);
  const cu::DwConvBuffer gx = arg_dwconv_buffer(info, 5, "gx");
  cu::dwconv2d_backward_input(p, gy, gx);
  return info.Env().Undefined();
}

// cudaDwconv2dBackwardWeight(x, xRow0, xRows, xStride, gy, gyRow0, gyRows, gyStride, gWeight | null, gBias | null,
//                            dims, rowBegin, rowEnd)
MSTAR_BINDING(cudaDwconv2dBackwardWeight) {
  cu::DwConv2dParams p = arg_dwconv_params(info, 10);
  const cu::DwConvBuffer x = arg_dwconv_buffer(info, 0, "x");
  const cu::DwConvBuffer gy = arg_dwconv_buffer(info, 4, "gy");
  cu::dwconv2d_backward_weight(p, x, gy, arg_span_optional(info, 8, "gWeight", cu::Dtype::F32),
                               arg_span_optional(info, 9, "gBias", cu::Dtype::F32));
  return info.Env().Undefined();
}

// cudaGroupRowSum(x, xStride, rowBegin, rowEnd, cols, group, out)
MSTAR_BINDING(cudaGroupRowSum) {
  const cu::Dtype f32 = cu::Dtype::F32;
  cu::group_row_sum(arg_span(info, 0, "x", f32), arg_size(info, 1, "xStride"), arg_size(info, 2, "rowBegin"),
                    arg_size(info, 3, "rowEnd"), arg_size(info, 4, "cols"), arg_size(info, 5, "group"),
                    arg_span(info, 6, "out", f32));
  return info.Env().Undefined();
}

// cudaGroupRowBroadcast(g, rowBegin, rowEnd, cols, group, alpha, out, outStride, accumulate)
MSTAR_BINDING(cudaGroupRowBroadcast) {
  const cu::Dtype f32 = cu::Dtype::F32;
  cu::group_row_broadcast(arg_span(info, 0, "g", f32), arg_size(info, 1, "rowBegin"), arg_size(info, 2, "rowEnd"),
                          arg_size(info, 3, "cols"), arg_size(info, 4, "group"),
                          static_cast<float>(arg_number(info, 5, "alpha")), arg_span(info, 6, "out", f32),
                          arg_size(info, 7, "outStride"), arg_bool(info, 8, "accumulate"));
  return info.Env().Undefined();
}

// ---- training (float32 only, like the CPU kernels) -------------------------------------

namespace {

// The leading arguments of both contrastive functions: (a, b, n, d, scale, tileRows, lseRows, lseCols).
cu::ContrastiveParams arg_contrastive(const Napi::CallbackInfo& info) {
  const cu::Dtype f32 = cu::Dtype::F32;
  cu::ContrastiveParams p;
  p.a = arg_span(info, 0, "a", f32);
  p.b = arg_span(info, 1, "b", f32);
  p.n = arg_size(info, 2, "n");
  p.d = arg_size(info, 3, "d");
  p.scale = static_cast<float>(arg_number(info, 4, "scale"));
  p.tile_rows = arg_size(info, 5, "tileRows");
  p.lse_rows = arg_span(info, 6, "lseRows", f32);
  p.lse_cols = arg_span(info, 7, "lseCols", f32);
  return p;
}

}  // namespace

// cudaContrastiveForward(a, b, n, d, scale, tileRows, lseRows, lseCols) -> loss (waits for the device)
MSTAR_BINDING(cudaContrastiveForward) {
  const cu::ContrastiveParams p = arg_contrastive(info);
  return number(info.Env(), cu::contrastive_forward(p));
}

// cudaContrastiveBackward(a, b, n, d, scale, tileRows, lseRows, lseCols, gLoss, gradA, gradB)
//   -> d loss / d logit_scale (waits for the device)
MSTAR_BINDING(cudaContrastiveBackward) {
  cu::ContrastiveParams p = arg_contrastive(info);
  p.g_loss = static_cast<float>(arg_number(info, 8, "gLoss"));
  p.grad_a = arg_span(info, 9, "gradA", cu::Dtype::F32);
  p.grad_b = arg_span(info, 10, "gradB", cu::Dtype::F32);
  return number(info.Env(), cu::contrastive_backward(p));
}

// cudaAdamwStep(param, grad, m, v, n, lr, beta1, beta2, eps, weightDecay, step)
MSTAR_BINDING(cudaAdamwStep) {
  const cu::Dtype f32 = cu::Dtype::F32;
  cu::AdamWParams p;
  p.param = arg_span(info, 0, "param", f32);
  p.grad = arg_span(info, 1, "grad", f32);
  p.m = arg_span(info, 2, "m", f32);
  p.v = arg_span(info, 3, "v", f32);
  p.n = arg_size(info, 4, "n");
  p.lr = arg_number(info, 5, "lr");
  p.beta1 = arg_number(info, 6, "beta1");
  p.beta2 = arg_number(info, 7, "beta2");
  p.eps = arg_number(info, 8, "eps");
  p.weight_decay = arg_number(info, 9, "weightDecay");
  p.step = arg_size(info, 10, "step");
  cu::adamw_step(p);
  return info.Env().Undefined();
}

// cudaSgdStep(param, grad, momentumBuffer | null, n, lr, momentum, dampening, weightDecay, nesterov, first)
MSTAR_BINDING(cudaSgdStep) {
  const cu::Dtype f32 = cu::Dtype::F32;
  cu::SgdParams p;
  p.param = arg_span(info, 0, "param", f32);
  p.grad = arg_span(info, 1, "grad", f32);
  p.momentum_buffer = arg_span_optional(info, 2, "momentumBuffer", f32);
  p.n = arg_size(info, 3, "n");
  p.lr = arg_number(info, 4, "lr");
  p.momentum = arg_number(info, 5, "momentum");
  p.dampening = arg_number(info, 6, "dampening");
  p.weight_decay = arg_number(info, 7, "weightDecay");
  p.nesterov = arg_bool(info, 8, "nesterov");
  p.first = arg_bool(info, 9, "first");
  cu::sgd_step(p);
  return info.Env().Undefined();
}

#endif  // MSTAR_WITH_CUDA
