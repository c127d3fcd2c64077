// Model: a llama.cpp text model (GGUF). JS: lib/model.ts wraps it.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>

#include "handles.h"

namespace cospot {

class Model : public Napi::ObjectWrap<Model> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Model(const Napi::CallbackInfo & info);

  // The loaded model; throws ERR_DISPOSED (or "not loaded") on the JS thread otherwise.
  std::shared_ptr<ModelHandle> Handle(Napi::Env env) const;
  static Model * FromValue(Napi::Env env, Napi::Value value);

 private:
  friend class ModelLoadWorker;
  Napi::Value Load(const Napi::CallbackInfo & info);
  Napi::Value AbortLoad(const Napi::CallbackInfo & info);
  Napi::Value Info(const Napi::CallbackInfo & info);
  Napi::Value Tokenize(const Napi::CallbackInfo & info);
  Napi::Value Detokenize(const Napi::CallbackInfo & info);
  Napi::Value Dispose(const Napi::CallbackInfo & info);

  std::shared_ptr<ModelHandle> handle_;
  std::shared_ptr<std::atomic<bool>> abort_ = std::make_shared<std::atomic<bool>>(false);
  bool loading_ = false;
  bool disposed_ = false;
};

}  // namespace cospot
