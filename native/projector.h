// Projector: an mtmd context (CLIP image encoder + projector, an "mmproj" GGUF) bound to a Model.
// JS: lib/projector.ts wraps it.
#pragma once

#include <napi.h>

#include <memory>

#include "handles.h"

namespace cospot {

class Projector : public Napi::ObjectWrap<Projector> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Projector(const Napi::CallbackInfo & info);

  std::shared_ptr<ProjectorHandle> Handle(Napi::Env env) const;
  static Projector * FromValue(Napi::Env env, Napi::Value value);

 private:
  friend class ProjectorLoadWorker;
  Napi::Value Load(const Napi::CallbackInfo & info);
  Napi::Value Info(const Napi::CallbackInfo & info);
  Napi::Value Dispose(const Napi::CallbackInfo & info);

  std::shared_ptr<ProjectorHandle> handle_;
  bool loading_ = false;
  bool disposed_ = false;
};

}  // namespace cospot
