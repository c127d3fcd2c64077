// Shared machinery of the addon's asynchronous operations.
//
// Every slow operation is a PromiseWorker: its constructor runs on the JS thread and copies what it
// needs out of V8 (the "baton"), Execute() runs on a libuv thread and never touches V8, and
// OnOK/OnError settle a promise. Failures carry a stable `code` so the TypeScript layer can
// re-throw them as ChainOfSpotError with the caller's stack.
#pragma once

#include <napi.h>

#include <atomic>
#include <functional>
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
constexpr const char * kRemote = "ERR_REMOTE";
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
  ~PromiseWorker() override;
  Napi::Promise Promise() { return deferred_.Promise(); }

  // Queues the worker and returns its promise.
  Napi::Promise Start();

 protected:
  // The work, on a libuv thread. Throw Failure to reject with a code.
  virtual void Run() = 0;
  // The resolved value, on the JS thread.
  virtual Napi::Value Result(Napi::Env env) { return env.Undefined(); }

  // A JS function that Run() calls as it goes (progress, text pieces) through Stream(). The promise
  // settles only after the last of those calls has run, so a caller never sees the promise settle
  // with calls still to come. A call that throws makes the promise reject with what it threw; the
  // calls after it are dropped and OnCallbackError() may stop the work early.
  void SetStream(Napi::Env env, Napi::Value callback, const char * name);
  bool streaming() const { return streaming_; }
  // From Run(): queues one call of the stream function; `deliver` runs on the JS thread.
  void Stream(std::function<void(Napi::Env, Napi::Function)> deliver);
  // On the JS thread, when a stream call threw: e.g. set the abort flag.
  virtual void OnCallbackError() {}

  // On the JS thread, just before the promise settles (after the stream's last call): clear a
  // busy flag here.
  virtual void OnSettle() {}

 private:
  void Execute() final;
  void OnOK() final;
  void OnError(const Napi::Error & error) final;
  void OnWorkComplete(Napi::Env env, napi_status status) final;
  // With a stream: settles once both the work and the stream's calls are done, then deletes this.
  void FinishStream();

  Napi::Promise::Deferred deferred_;
  const char * failure_code_ = code::kNative;
  Napi::ThreadSafeFunction stream_;
  bool streaming_ = false;
  std::atomic<bool> stream_done_{false};  // the last queued call has run (or none can run any more)
  bool work_done_ = false;
  Napi::ObjectReference outcome_;  // { value } or { error }, held from OnOK / OnError until settled
  bool callback_failed_ = false;
};

// A worker on one native object: keeps the object's JS wrapper (and so the C++ object) alive while
// it runs.
template <typename Owner>
class OwnerWorker : public PromiseWorker {
 public:
  OwnerWorker(Napi::Env env, const char * name, Owner * owner)
      : PromiseWorker(env, name), owner_(owner), owner_ref_(Napi::Persistent(owner->Value())) {}

 protected:
  Owner * const owner_;

 private:
  Napi::ObjectReference owner_ref_;
};

// Reads an optional property of an options object, with a default.
template <typename T>
T OptionOr(const Napi::Object & options, const char * key, T fallback);

}  // namespace cospot
