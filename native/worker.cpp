#include "worker.h"

#include <cstdint>
#include <exception>
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

Napi::Promise PromiseWorker::Start() {
  Napi::Promise promise = deferred_.Promise();
  Queue();
  return promise;
}

void PromiseWorker::Execute() {
  try {
    Run();
  } catch (const Failure & failure) {
    failure_code_ = failure.code;
    SetError(failure.message);
  } catch (const std::bad_alloc &) {
    failure_code_ = code::kNative;
    SetError("out of memory");
  } catch (const std::exception & e) {
    failure_code_ = code::kNative;
    SetError(e.what());
  }
}

void PromiseWorker::OnOK() {
  Napi::HandleScope scope(Env());
  try {
    deferred_.Resolve(Result(Env()));
  } catch (const Napi::Error & error) {
    deferred_.Reject(error.Value());
  }
}

void PromiseWorker::OnError(const Napi::Error & error) {
  Napi::HandleScope scope(Env());
  deferred_.Reject(CodedError(Env(), failure_code_, error.Message()).Value());
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
