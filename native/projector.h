// Projector: an mtmd context (CLIP image encoder + projector, an "mmproj" GGUF) bound to a Model.
// JS: lib/llama/projector.ts wraps it.
#pragma once

#include <napi.h>

#include <memory>

#include "handles.h"
#include "native_object.h"

namespace cospot {

class Projector : public NativeObject<Projector, ProjectorHandle> {
 public:
  static constexpr ObjectTraits kTraits = {"Projector", "projector", "load", "loaded", code::kProjectorLoad,
                                           &AddonData::projector_constructor};

  static Napi::Function Define(Napi::Env env);
  explicit Projector(const Napi::CallbackInfo & info) : Base(info) {}

 private:
  friend class ProjectorLoadWorker;
  Napi::Value Load(const Napi::CallbackInfo & info);
  Napi::Value Info(const Napi::CallbackInfo & info);
};

}  // namespace cospot
