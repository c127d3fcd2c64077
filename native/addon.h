// Per-environment data of the addon (one per Node.js environment: main thread, workers).
#pragma once

#include <napi.h>

#include <string>

namespace cospot {

struct AddonData {
  Napi::FunctionReference model_constructor;
  Napi::FunctionReference projector_constructor;
  Napi::FunctionReference session_constructor;
};

inline AddonData & GetAddonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

// The C++ object behind a JS value, after checking it really is an instance of `constructor`
// (unwrapping anything else would read foreign memory).
template <typename T>
T * UnwrapInstance(Napi::Env env, Napi::Value value, const Napi::FunctionReference & constructor, const char * name) {
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(constructor.Value())) {
    throw Napi::TypeError::New(env, std::string("expected a native ") + name);
  }
  return T::Unwrap(value.As<Napi::Object>());
}

}  // namespace cospot
