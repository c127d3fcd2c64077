#include "logger.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>

#include "llama.h"
#include "mtmd-helper.h"
#include "mtmd.h"

namespace cospot {
namespace {

struct JsLogger {
  std::mutex mutex;
  Napi::ThreadSafeFunction function;
  bool active = false;
  uint64_t generation = 0;  // which setLogger call `function` came from
  int min_level = GGML_LOG_LEVEL_WARN;
};

JsLogger & js_logger() {
  static JsLogger * logger = new JsLogger();  // never destroyed: log calls may come during exit
  return *logger;
}

thread_local LogCapture * current_capture = nullptr;
thread_local int last_level = GGML_LOG_LEVEL_INFO;

const bool debug_to_stderr = [] {
  const char * value = std::getenv("CHAIN_OF_SPOT_DEBUG");
  return value != nullptr && value[0] != '\0' && std::string(value) != "0";
}();

const char * LevelName(int level) {
  switch (level) {
    case GGML_LOG_LEVEL_DEBUG: return "debug";
    case GGML_LOG_LEVEL_INFO: return "info";
    case GGML_LOG_LEVEL_WARN: return "warn";
    case GGML_LOG_LEVEL_ERROR: return "error";
    default: return "info";
  }
}

struct LogLine {
  int level;
  std::string text;
};

void OnLog(ggml_log_level level, const char * text, void *) {
  if (text == nullptr) return;
  // CONT lines continue the previous line and share its level.
  int effective = level == GGML_LOG_LEVEL_CONT ? last_level : static_cast<int>(level);
  last_level = effective;
  AppendToCapture(effective, text);

  JsLogger & logger = js_logger();
  {
    std::lock_guard<std::mutex> lock(logger.mutex);
    if (logger.active) {
      if (effective >= logger.min_level) {
        auto * line = new LogLine{effective, text};
        const napi_status status = logger.function.NonBlockingCall(line, [](Napi::Env env, Napi::Function fn, LogLine * raw) {
          std::unique_ptr<LogLine> owned(raw);  // freed whatever the logger does
          if (env == nullptr) return;
          try {
            fn.Call({Napi::String::New(env, LevelName(owned->level)), Napi::String::New(env, owned->text)});
          } catch (const Napi::Error &) {
            // lib/native/logger.ts reports what a logger throws; nothing may escape into the loop here
          }
        });
        if (status != napi_ok) delete line;
      }
      return;
    }
  }
  if (debug_to_stderr) std::fputs(text, stderr);
}

}  // namespace

void AppendToCapture(int level, const char * text) {
  if (current_capture != nullptr && level >= GGML_LOG_LEVEL_WARN) current_capture->text_ += text;
}

LogCapture::LogCapture() : previous_(current_capture) { current_capture = this; }
LogCapture::~LogCapture() { current_capture = previous_; }

std::string LogCapture::Explain(const std::string & message) const {
  if (text_.empty()) return message;
  std::string detail = text_;
  while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
  return message + " (llama.cpp says: " + detail + ")";
}

void InstallLogCallbacks() {
  llama_log_set(OnLog, nullptr);  // also sets ggml's
  mtmd_helper_log_set(OnLog, nullptr);  // also sets mtmd's and clip's
}

Napi::Value SetLogger(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  JsLogger & logger = js_logger();
  std::lock_guard<std::mutex> lock(logger.mutex);
  if (logger.active) {
    logger.function.Release();
    logger.active = false;
  }
  if (info.Length() > 0 && info[0].IsFunction()) {
    // The environment may tear the function down (at exit, in a worker); then stop using it.
    uint64_t * generation = new uint64_t(++logger.generation);
    logger.function = Napi::ThreadSafeFunction::New(
        env, info[0].As<Napi::Function>(), "chain-of-spot log", 0, 1, [](Napi::Env, uint64_t * finalized) {
          JsLogger & current = js_logger();
          std::lock_guard<std::mutex> finalize_lock(current.mutex);
          if (current.generation == *finalized) current.active = false;
          delete finalized;
        },
        generation);
    logger.function.Unref(env);  // a logger must never keep the process alive
    logger.min_level = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value()
                                                                : GGML_LOG_LEVEL_WARN;
    logger.active = true;
  }
  return env.Undefined();
}

}  // namespace cospot
