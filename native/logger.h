// Routes llama.cpp's, ggml's and mtmd's log lines: silent by default, to a JS function the user
// sets (lib/logger.ts), or to stderr when CHAIN_OF_SPOT_DEBUG is set. Also captures the error
// lines a load produces on its thread, so a failed load can say why.
#pragma once

#include <napi.h>

#include <string>

namespace cospot {

// Installs our callback into llama.cpp, ggml and mtmd. Called once per process.
void InstallLogCallbacks();

// setLogger(fn | null, minLevel): JS entry point.
Napi::Value SetLogger(const Napi::CallbackInfo & info);

// Adds a log line to the capture active on this thread, if any.
void AppendToCapture(int level, const char * text);

// Collects the warning and error lines logged on this thread while it lives.
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  LogCapture(const LogCapture &) = delete;
  LogCapture & operator=(const LogCapture &) = delete;

  const std::string & text() const { return text_; }
  // The captured lines appended to a message, or the message alone.
  std::string Explain(const std::string & message) const;

 private:
  friend void AppendToCapture(int level, const char * text);
  std::string text_;
  LogCapture * previous_;
};

}  // namespace cospot
