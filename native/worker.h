// Shared machinery of the addon's asynchronous operations.
//
// Every slow operation is a PromiseWorker: its constructor runs on the JS thread and copies what it
// needs out of V8 (the "baton"), Execute() runs on a libuv thread and never touches V8, and
// OnOK/OnError settle a promise. Failures carry a stable `code` so the TypeScript layer can
// re-throw them as ChainOfSpotError with the caller's stack.
#pragma once

#include <napi.h>

#include <atomic>
#include <string>

namespace cospot {

// The codes the native side reports; lib/errors.ts documents them.
namespace code {
constexpr const char * kModelLoad = "ERR_MODEL_LOAD";
constexpr const char * kProjectorLoad = "ERR_PROJECTOR_LOAD";
constexpr const char * kProjectorMismatch = "ERR_PROJECTOR_MISMATCH";
constexpr const char * kContextFull = "ERR_CONTEXT_FULL";
constexpr const char * kImage = "ERR_IMAGE";
constexpr const char * kGrammar = "ERR_GRAMMAR";
constexpr const char * kDisposed = "ERR_DISPOSED";
constexpr const char * kAborted = "ERR_ABORTED";
constexpr const char * kGpuMemory = "ERR_GPU_MEMORY";
constexpr const char * kNative = "ERR_NATIVE";
}  // namespace code

// A failure inside Execute(): thrown there, turned into a coded rejection by PromiseWorker.
struct Failure {
  const char * code;
  std::string message;
};

// A JS Error object with a `code` property.
Napi::Error CodedError(Napi::Env env, const char * code, const std::string & message);

// Throws a coded JS error from a synchronous method (the JS thread).
[[noreturn]] void ThrowCoded(Napi::Env env, const char * code, const std::string & message);

class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env, const char * name);
  Napi::Promise Promise() { return deferred_.Promise(); }

  // Queues the worker and returns its promise.
  Napi::Promise Start();

 protected:
  // The work, on a libuv thread. Throw Failure to reject with a code.
  virtual void Run() = 0;
  // The resolved value, on the JS thread.
  virtual Napi::Value Result(Napi::Env env) { return env.Undefined(); }

 private:
  void Execute() final;
  void OnOK() final;
  void OnError(const Napi::Error & error) final;

  Napi::Promise::Deferred deferred_;
  const char * failure_code_ = code::kNative;
};

// Reads an optional property of an options object, with a default.
template <typename T>
T OptionOr(const Napi::Object & options, const char * key, T fallback);

}  // namespace cospot
