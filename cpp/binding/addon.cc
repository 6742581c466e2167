// Module entry: exports every function registered with MSTAR_BINDING, wrapped so
// that engine errors become JS errors with a stable `code`.
#include <napi.h>

#include <new>

#include "../core/error.h"
#include "args.h"
#include "registry.h"

namespace mstar::binding {

std::vector<Registration>& registry() {
  static std::vector<Registration> entries;
  return entries;
}

namespace {

Napi::Value dispatch(const Napi::CallbackInfo& info) {
  auto fn = reinterpret_cast<BindingFn>(info.Data());
  try {
    return fn(info);
  } catch (const mstar::Error& e) {
    bool range = e.code() == ErrorCode::Shape || e.code() == ErrorCode::Range;
    throw_js(info.Env(), error_code_name(e.code()), e.what(), range);
  } catch (const std::bad_alloc&) {
    throw_js(info.Env(), "ERR_OOM", "out of host memory", true);
  }
}

}  // namespace

Napi::Object init(Napi::Env env, Napi::Object exports) {
  for (const Registration& r : registry()) {
    exports.Set(r.name, Napi::Function::New(env, dispatch, r.name, reinterpret_cast<void*>(r.fn)));
  }
  return exports;
}

}  // namespace mstar::binding

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return mstar::binding::init(env, exports); }

NODE_API_MODULE(mstar, InitModule)
