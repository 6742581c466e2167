// Argument conversion for binding functions. Every getter checks the JS type and
// value and throws a JS TypeError/RangeError whose `code` is stable and whose
// message names the parameter.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>

namespace mstar::binding {

[[noreturn]] void throw_js(Napi::Env env, const char* code, const std::string& message, bool range = false);

template <typename T>
struct ArraySpan {
  T* data = nullptr;
  size_t length = 0;  // elements
};

using F32Span = ArraySpan<float>;
using U16Span = ArraySpan<uint16_t>;
using I32Span = ArraySpan<int32_t>;
using U8Span = ArraySpan<uint8_t>;

// Typed-array arguments. The array must be of the named kind and not detached.
// `min_length` (elements) is checked when >= 0.
F32Span arg_f32(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t min_length = -1);
U16Span arg_u16(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t min_length = -1);
I32Span arg_i32(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t min_length = -1);
U8Span arg_u8(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t min_length = -1);
// Same, but `null`/`undefined` gives an empty span with data == nullptr.
F32Span arg_f32_optional(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t min_length = -1);

// A non-negative integer no larger than 2^53 - 1 (a dimension, count or stride).
int64_t arg_size(const Napi::CallbackInfo& info, size_t index, const char* name);
// Any integer in the safe range (strides may be negative).
int64_t arg_int(const Napi::CallbackInfo& info, size_t index, const char* name);
// A finite number.
double arg_number(const Napi::CallbackInfo& info, size_t index, const char* name);
bool arg_bool(const Napi::CallbackInfo& info, size_t index, const char* name);
std::string arg_string(const Napi::CallbackInfo& info, size_t index, const char* name);
// An array of sizes (shape) / of integers (strides).
std::vector<int64_t> arg_sizes(const Napi::CallbackInfo& info, size_t index, const char* name);
std::vector<int64_t> arg_ints(const Napi::CallbackInfo& info, size_t index, const char* name);

// Throws ERR_SHAPE unless span.length >= needed.
template <typename T>
void require_length(Napi::Env env, const ArraySpan<T>& span, int64_t needed, const char* name) {
  if (needed < 0 || static_cast<int64_t>(span.length) < needed) {
    throw_js(env, "ERR_SHAPE",
             std::string(name) + ": needs " + std::to_string(needed) + " elements, got " + std::to_string(span.length),
             true);
  }
}

// a*b*... with overflow checking (ERR_SHAPE on overflow beyond 2^53).
int64_t checked_product(Napi::Env env, std::initializer_list<int64_t> factors, const char* what);

}  // namespace mstar::binding
