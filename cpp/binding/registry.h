// The binding only converts. Each cpp/binding/<op>.cc converts JS arguments into
// plain values, re-checks them (never trusting the TS layer) and calls one core
// function. Functions register themselves by name at static-initialization time:
//
//   MSTAR_BINDING(gemm) { ...; return info.Env().Undefined(); }
//
// and addon.cc exports every registered function wrapped so that mstar::Error
// becomes a JS Error with `code`.
#pragma once
#include <napi.h>

#include <vector>

namespace mstar::binding {

using BindingFn = Napi::Value (*)(const Napi::CallbackInfo&);

struct Registration {
  const char* name;
  BindingFn fn;
};

std::vector<Registration>& registry();

struct Registrar {
  Registrar(const char* name, BindingFn fn) { registry().push_back({name, fn}); }
};

}  // namespace mstar::binding

#define MSTAR_BINDING(name)                                                           \
  static Napi::Value bind_##name(const Napi::CallbackInfo& info);                     \
  static ::mstar::binding::Registrar registrar_##name(#name, &bind_##name);           \
  static Napi::Value bind_##name(const Napi::CallbackInfo& info)
