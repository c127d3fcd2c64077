// Per-environment data of the addon (one per Node.js environment: main thread, workers).
#pragma once

#include <napi.h>

namespace cospot {

struct AddonData {
  Napi::FunctionReference model_constructor;
  Napi::FunctionReference projector_constructor;
  Napi::FunctionReference session_constructor;
};

inline AddonData & GetAddonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace cospot
