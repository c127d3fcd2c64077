#include "worker.h"

#include <cstdint>
#include <exception>
#include <memory>
#include <new>

namespace cospot {

Napi::Error CodedError(Napi::Env env, const char * code, const std::string & message) {
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  return error;
}

void ThrowCoded(Napi::Env env, const char * code, const std::string & message) {
  throw CodedError(env, code, message);
}

PromiseWorker::PromiseWorker(Napi::Env env, const char * name)
    : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)) {}

PromiseWorker::~PromiseWorker() {
  if (streaming_) stream_.Release();
}

Napi::Promise PromiseWorker::Start() {
  Napi::Promise promise = deferred_.Promise();
  Queue();
  return promise;
}

void PromiseWorker::SetStream(Napi::Env env, Napi::Value callback, const char * name) {
  if (!callback.IsFunction()) return;
  stream_ = Napi::ThreadSafeFunction::New(env, callback.As<Napi::Function>(), name, 0, 1);
  streaming_ = true;
  SuppressDestruct();  // FinishStream() deletes the worker, after OnWorkComplete and the last call
}

namespace {

using StreamCall = std::function<void(Napi::Env, Napi::Function)>;

void RunStreamCall(Napi::Env env, Napi::Function fn, StreamCall * raw) {
  std::unique_ptr<StreamCall> call(raw);  // freed whatever the call does
  if (env == nullptr) return;  // the environment is going away
  Napi::HandleScope scope(env);
  (*call)(env, fn);
}

}  // namespace

void PromiseWorker::Stream(std::function<void(Napi::Env, Napi::Function)> deliver) {
  if (!streaming_) return;
  auto * call = new StreamCall([this, deliver = std::move(deliver)](Napi::Env env, Napi::Function fn) {
    if (callback_failed_) return;  // the calls after one that threw are dropped
    try {
      deliver(env, fn);
    } catch (const Napi::Error & error) {
      callback_failed_ = true;
      if (outcome_.IsEmpty()) outcome_ = Napi::Persistent(Napi::Object::New(env));
      outcome_.Set("callbackError", error.Value());
      OnCallbackError();
    }
  });
  if (stream_.NonBlockingCall(call, RunStreamCall) != napi_ok) delete call;
}

void PromiseWorker::Execute() {
  try {
    Run();
  } catch (const Failure & failure) {
    failure_code_ = failure.code;
    // AsyncWorker takes an empty message for success: never report a failure without one.
    SetError(failure.message.empty() ? std::string("failed (") + failure.code + ")" : failure.message);
  } catch (const std::bad_alloc &) {
    failure_code_ = code::kNative;
    SetError("out of memory");
  } catch (const std::exception & e) {
    failure_code_ = code::kNative;
    const std::string what = e.what();
    SetError(what.empty() ? "native exception without a message" : what);
  } catch (...) {
    failure_code_ = code::kNative;
    SetError("unknown native exception");
  }
  if (!streaming_) return;
  // Calls run in order: when this last one runs, every earlier one has.
  auto * last = new StreamCall([this](Napi::Env, Napi::Function) {
    stream_done_.store(true);
    FinishStream();
  });
  if (stream_.NonBlockingCall(last, RunStreamCall) != napi_ok) {
    delete last;
    stream_done_.store(true);
  }
}

void PromiseWorker::OnOK() {
  Napi::HandleScope scope(Env());
  if (streaming_) {
    if (callback_failed_) return;  // what the callback threw is the outcome
    outcome_ = Napi::Persistent(Napi::Object::New(Env()));
    try {
      outcome_.Set("value", Result(Env()));
    } catch (const Napi::Error & error) {
      outcome_.Set("error", error.Value());
    }
    return;
  }
  try {
    deferred_.Resolve(Result(Env()));
  } catch (const Napi::Error & error) {
    deferred_.Reject(error.Value());
  }
}

void PromiseWorker::OnError(const Napi::Error & error) {
  Napi::HandleScope scope(Env());
  Napi::Error coded = CodedError(Env(), failure_code_, error.Message());
  if (streaming_) {
    if (callback_failed_) return;
    outcome_ = Napi::Persistent(Napi::Object::New(Env()));
    outcome_.Set("error", coded.Value());
    return;
  }
  deferred_.Reject(coded.Value());
}

void PromiseWorker::OnWorkComplete(Napi::Env env, napi_status status) {
  if (!streaming_) {
    OnSettle();
    Napi::AsyncWorker::OnWorkComplete(env, status);  // settles, then deletes the worker
    return;
  }
  Napi::AsyncWorker::OnWorkComplete(env, status);  // records the outcome
  work_done_ = true;
  FinishStream();
}

void PromiseWorker::FinishStream() {
  if (!work_done_ || !stream_done_.load()) return;
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  OnSettle();
  if (outcome_.IsEmpty()) {
    deferred_.Reject(CodedError(env, code::kNative, "the operation was cancelled").Value());
  } else if (outcome_.Value().Has("callbackError")) {
    deferred_.Reject(outcome_.Get("callbackError"));
  } else if (outcome_.Value().Has("error")) {
    deferred_.Reject(outcome_.Get("error"));
  } else {
    deferred_.Resolve(outcome_.Get("value"));
  }
  Destroy();
}

template <>
bool OptionOr<bool>(const Napi::Object & options, const char * key, bool fallback) {
  Napi::Value value = options.Get(key);
  return value.IsBoolean() ? value.As<Napi::Boolean>().Value() : fallback;
}

template <>
int32_t OptionOr<int32_t>(const Napi::Object & options, const char * key, int32_t fallback) {
  Napi::Value value = options.Get(key);
  return value.IsNumber() ? value.As<Napi::Number>().Int32Value() : fallback;
}

template <>
uint32_t OptionOr<uint32_t>(const Napi::Object & options, const char * key, uint32_t fallback) {
  Napi::Value value = options.Get(key);
  return value.IsNumber() ? value.As<Napi::Number>().Uint32Value() : fallback;
}

template <>
double OptionOr<double>(const Napi::Object & options, const char * key, double fallback) {
  Napi::Value value = options.Get(key);
  return value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : fallback;
}

template <>
std::string OptionOr<std::string>(const Napi::Object & options, const char * key, std::string fallback) {
  Napi::Value value = options.Get(key);
  return value.IsString() ? value.As<Napi::String>().Utf8Value() : fallback;
}

}  // namespace cospot
