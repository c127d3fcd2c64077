// Model: a llama.cpp text model (GGUF). JS: lib/llama/model.ts wraps it.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>

#include "handles.h"
#include "native_object.h"

namespace cospot {

class Model : public NativeObject<Model, ModelHandle> {
 public:
  static constexpr ObjectTraits kTraits = {"Model", "model", "load", "loaded", code::kModelLoad, &AddonData::model_constructor};

  static Napi::Function Define(Napi::Env env);
  explicit Model(const Napi::CallbackInfo & info) : Base(info) {}
  void OnDispose() { abort_->store(true); }  // a load in flight stops at its next progress report

 private:
  friend class ModelLoadWorker;
  Napi::Value Load(const Napi::CallbackInfo & info);
  Napi::Value AbortLoad(const Napi::CallbackInfo & info);
  Napi::Value Info(const Napi::CallbackInfo & info);
  Napi::Value Tokenize(const Napi::CallbackInfo & info);
  Napi::Value Detokenize(const Napi::CallbackInfo & info);

  std::shared_ptr<std::atomic<bool>> abort_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace cospot
