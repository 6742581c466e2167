// OpenSlide functions (cpp/ops/openslide_reader.h): converts, re-checks sizes and
// calls one core function. openslideReadRegion runs on the libuv thread pool
// (Napi::AsyncWorker; Execute touches no JS) and returns a Promise; its output
// buffer is pinned by a reference for the whole read.
//
// Handles live in a process-wide table, but each is owned by the JS environment
// (main thread or worker) that opened it: an env cleanup hook closes whatever that
// environment left open when it is torn down (a terminated worker leaks nothing).
#include "../ops/openslide_reader.h"

#include <mutex>
#include <new>
#include <set>
#include <unordered_map>

#include "../core/error.h"
#include "args.h"
#include "registry.h"

using namespace mstar::binding;
namespace os = mstar::openslide;

namespace {

// [r, g, b] integers in [0, 255].
std::array<uint8_t, 3> arg_rgb(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Env env = info.Env();
  Napi::Value value = index < info.Length() ? info[index] : env.Undefined();
  if (!value.IsArray() || value.As<Napi::Array>().Length() != 3) throw_js(env, "ERR_ARGUMENT", std::string(name) + " must be an array [r, g, b]");
  Napi::Array array = value.As<Napi::Array>();
  std::array<uint8_t, 3> out{};
  for (uint32_t i = 0; i < 3; i++) {
    Napi::Value c = array.Get(i);
    double d = c.IsNumber() ? c.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d <= 255) || static_cast<double>(static_cast<int>(d)) != d) {
      throw_js(env, "ERR_ARGUMENT", std::string(name) + " must hold integers in [0, 255]", true);
    }
    out[i] = static_cast<uint8_t>(d);
  }
  return out;
}

// Handles opened by each JS environment and not closed yet.
std::mutex g_env_mutex;
std::unordered_map<napi_env, std::set<int64_t>> g_env_handles;

void close_env_handles(void* arg) {
  std::set<int64_t> handles;
  {
    std::lock_guard<std::mutex> lock(g_env_mutex);
    auto it = g_env_handles.find(static_cast<napi_env>(arg));
    if (it == g_env_handles.end()) return;
    handles = std::move(it->second);
    g_env_handles.erase(it);
  }
  for (int64_t h : handles) os::close(h);
}

void track_handle(napi_env env, int64_t handle) {
  std::lock_guard<std::mutex> lock(g_env_mutex);
  auto [it, first] = g_env_handles.try_emplace(env);
  it->second.insert(handle);
  if (first) napi_add_env_cleanup_hook(env, close_env_handles, env);
}

void untrack_handle(napi_env env, int64_t handle) {
  std::lock_guard<std::mutex> lock(g_env_mutex);
  auto it = g_env_handles.find(env);
  if (it != g_env_handles.end()) it->second.erase(handle);
}

int32_t arg_level(const Napi::CallbackInfo& info, size_t index) {
  int64_t level = arg_size(info, index, "level");
  if (level > INT32_MAX) throw_js(info.Env(), "ERR_RANGE", "level " + std::to_string(level) + " is out of range", true);
  return static_cast<int32_t>(level);
}

// Reads one region off the main thread and resolves (or rejects with a coded error).
// Completion uses raw N-API calls whose failures are ignored: when the environment is
// being torn down (a worker terminating) JS cannot run, and a throwing wrapper there
// would end in std::terminate.
class ReadRegionWorker : public Napi::AsyncWorker {
 public:
  ReadRegionWorker(Napi::Env env, Napi::Uint8Array out, int64_t handle, int64_t x, int64_t y, int32_t level, int64_t w,
                   int64_t h, std::array<uint8_t, 3> background)
      : Napi::AsyncWorker(env, "mstar:openslideReadRegion"),
        out_ref_(Napi::Persistent(out)),
        data_(out.Data()),
        handle_(handle), x_(x), y_(y), level_(level), w_(w), h_(h), background_(background) {
    if (napi_create_promise(env, &deferred_, &promise_) != napi_ok) throw_js(env, "ERR_INTERNAL", "cannot create a promise");
  }

  napi_value promise() const { return promise_; }

  void Execute() override {
    try {
      os::read_region_rgb(handle_, x_, y_, level_, w_, h_, background_, data_);
    } catch (const mstar::Error& e) {
      fail(mstar::error_code_name(e.code()), e.what(), e.code() == mstar::ErrorCode::Range);
    } catch (const std::bad_alloc&) {
      fail("ERR_OOM", "out of host memory reading a " + std::to_string(w_) + "×" + std::to_string(h_) + " region", true);
    }
  }

  void OnOK() override {
    napi_value undefined;
    if (napi_get_undefined(Env(), &undefined) == napi_ok) napi_resolve_deferred(Env(), deferred_, undefined);
  }

  void OnError(const Napi::Error&) override {
    napi_env env = Env();
    napi_value message, code, error;
    if (napi_create_string_utf8(env, message_.c_str(), message_.size(), &message) != napi_ok) return;
    if (napi_create_string_utf8(env, code_.c_str(), code_.size(), &code) != napi_ok) return;
    napi_status status = range_ ? napi_create_range_error(env, nullptr, message, &error) : napi_create_error(env, nullptr, message, &error);
    if (status != napi_ok) return;
    napi_set_named_property(env, error, "code", code);
    napi_reject_deferred(env, deferred_, error);
  }

 private:
  void fail(const char* code, const std::string& message, bool range) {
    code_ = code;
    message_ = message;
    range_ = range;
    SetError(message);
  }

  napi_deferred deferred_ = nullptr;
  napi_value promise_ = nullptr;
  Napi::Reference<Napi::Uint8Array> out_ref_;  // pins the output buffer
  uint8_t* data_;
  int64_t handle_, x_, y_;
  int32_t level_;
  int64_t w_, h_;
  std::array<uint8_t, 3> background_;
  std::string code_ = "ERR_INTERNAL";
  std::string message_;
  bool range_ = false;
};

}  // namespace

// openslideVersion() -> string | null
MSTAR_BINDING(openslideVersion) {
  if (!os::built()) return info.Env().Null();
  return Napi::String::New(info.Env(), os::library_version());
}

// openslideDetectVendor(path) -> string | null
MSTAR_BINDING(openslideDetectVendor) {
  std::string vendor = os::detect_vendor(arg_string(info, 0, "path"));
  if (vendor.empty()) return info.Env().Null();
  return Napi::String::New(info.Env(), vendor);
}

// openslideOpen(path) -> handle
MSTAR_BINDING(openslideOpen) {
  std::string path = arg_string(info, 0, "path");
  if (path.empty() || path.find('\0') != std::string::npos) throw_js(info.Env(), "ERR_ARGUMENT", "path must be a non-empty string without NUL");
  const int64_t handle = os::open(path);
  track_handle(info.Env(), handle);
  return Napi::Number::New(info.Env(), static_cast<double>(handle));
}

// openslideClose(handle) -> boolean (false when it was not open)
MSTAR_BINDING(openslideClose) {
  const int64_t handle = arg_size(info, 0, "handle");
  untrack_handle(info.Env(), handle);
  return Napi::Boolean::New(info.Env(), os::close(handle));
}

// openslideInfo(handle) -> { levelDimensions: [w, h][], levelDownsamples: number[], properties: {name: value} }
MSTAR_BINDING(openslideInfo) {
  Napi::Env env = info.Env();
  os::SlideInfo s = os::info(arg_size(info, 0, "handle"));
  Napi::Array dims = Napi::Array::New(env, s.level_dimensions.size());
  Napi::Array downsamples = Napi::Array::New(env, s.level_downsamples.size());
  for (uint32_t l = 0; l < s.level_dimensions.size(); l++) {
    Napi::Array wh = Napi::Array::New(env, 2);
    wh.Set(0u, Napi::Number::New(env, static_cast<double>(s.level_dimensions[l][0])));
    wh.Set(1u, Napi::Number::New(env, static_cast<double>(s.level_dimensions[l][1])));
    dims.Set(l, wh);
    downsamples.Set(l, Napi::Number::New(env, s.level_downsamples[l]));
  }
  Napi::Object properties = Napi::Object::New(env);
  for (const auto& [name, value] : s.properties) properties.Set(name, value);
  Napi::Object out = Napi::Object::New(env);
  out.Set("levelDimensions", dims);
  out.Set("levelDownsamples", downsamples);
  out.Set("properties", properties);
  return out;
}

// openslideReadRegion(handle, x, y, level, w, h, out: Uint8Array [h·w·3], background: [r, g, b]) -> Promise<void>
MSTAR_BINDING(openslideReadRegion) {
  Napi::Env env = info.Env();
  const int64_t handle = arg_size(info, 0, "handle");
  const int64_t x = arg_int(info, 1, "x");
  const int64_t y = arg_int(info, 2, "y");
  const int32_t level = arg_level(info, 3);
  const int64_t w = arg_size(info, 4, "w");
  const int64_t h = arg_size(info, 5, "h");
  if (w < 1 || h < 1) throw_js(env, "ERR_RANGE", "region size " + std::to_string(w) + "×" + std::to_string(h) + " must be at least 1×1", true);
  const int64_t bytes = checked_product(env, {w, h, 3}, "openslideReadRegion");
  if (bytes > os::kMaxRegionBytes) throw_js(env, "ERR_RANGE", "region of " + std::to_string(bytes) + " bytes exceeds the limit of one read", true);
  arg_u8(info, 6, "out", bytes);  // checks its kind, that it is attached, and its length
  const std::array<uint8_t, 3> background = arg_rgb(info, 7, "background");
  // Fail fast on a closed handle or a bad level, before queueing work.
  const int32_t levels = os::level_count(handle);
  if (level >= levels) throw_js(env, "ERR_RANGE", "level " + std::to_string(level) + " is out of range [0, " + std::to_string(levels) + ")", true);
  auto* worker = new ReadRegionWorker(env, info[6].As<Napi::Uint8Array>(), handle, x, y, level, w, h, background);
  napi_value promise = worker->promise();
  worker->Queue();  // the worker deletes itself after OnOK/OnError
  return Napi::Value(env, promise);
}

// openslideArgbToRgb(argb: Uint32Array [n], rgb: Uint8Array [n·3], background: [r, g, b]): the pixel conversion alone
// (always built, so it can be tested without libopenslide).
MSTAR_BINDING(openslideArgbToRgb) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    throw_js(env, "ERR_DTYPE", "argb must be a Uint32Array");
  }
  Napi::Uint32Array argb = info[0].As<Napi::Uint32Array>();
  bool detached = false;
  napi_is_detached_arraybuffer(env, argb.ArrayBuffer(), &detached);
  if (detached) throw_js(env, "ERR_DETACHED", "argb was released (its buffer is detached)");
  const int64_t n = static_cast<int64_t>(argb.ElementLength());
  const U8Span rgb = arg_u8(info, 1, "rgb", checked_product(env, {n, 3}, "openslideArgbToRgb"));
  const std::array<uint8_t, 3> background = arg_rgb(info, 2, "background");
  if (n > 0) os::argb_to_rgb(argb.Data(), n, background, rgb.data);
  return env.Undefined();
}
