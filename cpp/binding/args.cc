#include "args.h"

#include <cmath>

namespace mstar::binding {
namespace {

constexpr double kMaxSafeInteger = 9007199254740991.0;

Napi::Value arg_at(const Napi::CallbackInfo& info, size_t index) {
  return index < info.Length() ? info[index] : info.Env().Undefined();
}

template <typename T>
ArraySpan<T> typed_array(const Napi::CallbackInfo& info, size_t index, const char* name, napi_typedarray_type kind,
                         const char* kind_name, int64_t min_length) {
  Napi::Env env = info.Env();
  Napi::Value value = arg_at(info, index);
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != kind) {
    throw_js(env, "ERR_DTYPE", std::string(name) + " must be a " + kind_name);
  }
  Napi::TypedArray array = value.As<Napi::TypedArray>();
  Napi::ArrayBuffer buffer = array.ArrayBuffer();
  bool detached = false;
  napi_is_detached_arraybuffer(env, buffer, &detached);
  if (detached) throw_js(env, "ERR_DETACHED", std::string(name) + " was released (its buffer is detached)");
  ArraySpan<T> span;
  span.length = array.ElementLength();
  span.data = span.length == 0 ? nullptr
                               : reinterpret_cast<T*>(static_cast<uint8_t*>(buffer.Data()) + array.ByteOffset());
  if (min_length >= 0) require_length(env, span, min_length, name);
  return span;
}

}  // namespace

void throw_js(Napi::Env env, const char* code, const std::string& message, bool range) {
  Napi::Error error = range ? Napi::Error(Napi::RangeError::New(env, message))
                            : Napi::Error(Napi::TypeError::New(env, message));
  error.Set("code", Napi::String::New(env, code));
  throw error;
}

F32Span arg_f32(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t min_length) {
  return typed_array<float>(info, index, name, napi_float32_array, "Float32Array", min_length);
}
U16Span arg_u16(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t min_length) {
  return typed_array<uint16_t>(info, index, name, napi_uint16_array, "Uint16Array", min_length);
}
I32Span arg_i32(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t min_length) {
  return typed_array<int32_t>(info, index, name, napi_int32_array, "Int32Array", min_length);
}
U8Span arg_u8(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t min_length) {
  return typed_array<uint8_t>(info, index, name, napi_uint8_array, "Uint8Array", min_length);
}
F32Span arg_f32_optional(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t min_length) {
  Napi::Value value = arg_at(info, index);
  if (value.IsNull() || value.IsUndefined()) return {};
  return arg_f32(info, index, name, min_length);
}

int64_t arg_int(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = arg_at(info, index);
  if (!value.IsNumber()) throw_js(info.Env(), "ERR_ARGUMENT", std::string(name) + " must be an integer");
  double d = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d || std::fabs(d) > kMaxSafeInteger) {
    throw_js(info.Env(), "ERR_ARGUMENT", std::string(name) + " must be a safe integer, got " + std::to_string(d), true);
  }
  return static_cast<int64_t>(d);
}

int64_t arg_size(const Napi::CallbackInfo& info, size_t index, const char* name) {
  int64_t v = arg_int(info, index, name);
  if (v < 0) throw_js(info.Env(), "ERR_ARGUMENT", std::string(name) + " must be >= 0, got " + std::to_string(v), true);
  return v;
}

double arg_number(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = arg_at(info, index);
  if (!value.IsNumber()) throw_js(info.Env(), "ERR_ARGUMENT", std::string(name) + " must be a number");
  double d = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) throw_js(info.Env(), "ERR_ARGUMENT", std::string(name) + " must be finite", true);
  return d;
}

bool arg_bool(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = arg_at(info, index);
  if (!value.IsBoolean()) throw_js(info.Env(), "ERR_ARGUMENT", std::string(name) + " must be a boolean");
  return value.As<Napi::Boolean>().Value();
}

std::string arg_string(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = arg_at(info, index);
  if (!value.IsString()) throw_js(info.Env(), "ERR_ARGUMENT", std::string(name) + " must be a string");
  return value.As<Napi::String>().Utf8Value();
}

static std::vector<int64_t> int_array(const Napi::CallbackInfo& info, size_t index, const char* name, bool sizes) {
  Napi::Env env = info.Env();
  Napi::Value value = arg_at(info, index);
  if (!value.IsArray()) throw_js(env, "ERR_ARGUMENT", std::string(name) + " must be an array of integers");
  Napi::Array array = value.As<Napi::Array>();
  uint32_t n = array.Length();
  if (n > 64) throw_js(env, "ERR_ARGUMENT", std::string(name) + " has more than 64 entries", true);
  std::vector<int64_t> out(n);
  for (uint32_t i = 0; i < n; ++i) {
    Napi::Value item = array.Get(i);
    double d = item.IsNumber() ? item.As<Napi::Number>().DoubleValue() : NAN;
    if (!std::isfinite(d) || std::floor(d) != d || std::fabs(d) > kMaxSafeInteger || (sizes && d < 0)) {
      throw_js(env, "ERR_ARGUMENT",
               std::string(name) + "[" + std::to_string(i) + "] must be a " + (sizes ? "non-negative " : "") +
                   "safe integer",
               true);
    }
    out[i] = static_cast<int64_t>(d);
  }
  return out;
}

std::vector<int64_t> arg_sizes(const Napi::CallbackInfo& info, size_t index, const char* name) {
  return int_array(info, index, name, true);
}
std::vector<int64_t> arg_ints(const Napi::CallbackInfo& info, size_t index, const char* name) {
  return int_array(info, index, name, false);
}

int64_t checked_product(Napi::Env env, std::initializer_list<int64_t> factors, const char* what) {
  int64_t product = 1;
  for (int64_t f : factors) {
    if (f < 0) throw_js(env, "ERR_SHAPE", std::string(what) + ": negative size", true);
    if (f != 0 && product > static_cast<int64_t>(kMaxSafeInteger) / f) {
      throw_js(env, "ERR_SHAPE", std::string(what) + ": size overflows", true);
    }
    product *= f;
  }
  return product;
}

}  // namespace mstar::binding
