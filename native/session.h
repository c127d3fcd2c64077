// Session: a llama.cpp context (KV cache) over a Model, holding one or more sequences.
// JS: lib/llama/session.ts wraps it and queues calls, so one native operation runs at a time.
// One N-API class, in five files: its bindings (session.cpp), the decode primitives
// (session_decode.*), the generation (generation.*), the batched step (session_step.cpp) and the
// other workers (session_workers.cpp); session_internal.h is what they share.
#pragma once

#include <napi.h>

#include <atomic>
#include <map>
#include <memory>
#include <vector>

#include "ggml-cpu.h"
#include "handles.h"
#include "native_object.h"

namespace cospot {

// One sequence of the context. Tokens the generator sampled are not decoded at once: they are
// "pending" and go into the cache with the next evaluation, in the same batch (one decode fewer).
struct Sequence {
  int32_t cached = 0;                    // positions in the KV cache
  std::vector<llama_token> pending;      // sampled, not yet decoded; follow `cached`
  std::vector<float> logits;             // logits after the last decoded token ...
  int32_t logits_position = -1;          // ... which `cached` was when they were computed

  // Whether `logits` predict the token at Position(), as generation needs.
  bool LogitsCurrent() const { return pending.empty() && cached > 0 && logits_position == cached; }

  int32_t Position() const { return cached + static_cast<int32_t>(pending.size()); }

  // Keeps the first `position` cached tokens (the caller removes the rest from the KV cache) and
  // drops the pending ones. Logits computed further on predict nothing any more.
  void Truncate(int32_t position) {
    cached = position;
    pending.clear();
    if (logits_position > position) logits_position = -1;
  }
};

class Generation;

struct SessionState {
  SessionState(llama_context * context, ggml_threadpool * threadpool, std::shared_ptr<ModelHandle> model, int sequences);
  ~SessionState();
  SessionState(const SessionState &) = delete;
  SessionState & operator=(const SessionState &) = delete;

  llama_context * const context;
  ggml_threadpool * const threadpool;  // the compute threads, kept between decodes
  const std::shared_ptr<ModelHandle> model;
  std::vector<Sequence> sequences;
  std::map<int, std::unique_ptr<Generation>> generations;  // parallel decoding's generations in progress
  llama_batch batch;  // n_batch tokens, reused by every decode
  std::atomic<bool> abort{false};
  std::atomic<bool> step_interrupt{false};  // new work waits: a step in flight returns soon
};

class Session : public NativeObject<Session, SessionState> {
 public:
  static constexpr ObjectTraits kTraits = {"Session", "session", "create", "created", code::kNative, &AddonData::session_constructor};

  static Napi::Function Define(Napi::Env env);
  explicit Session(const Napi::CallbackInfo & info) : Base(info) {}
  void OnDispose() {
    if (handle_) handle_->abort.store(true);  // a running worker stops soon and frees the context
  }

 private:
  friend class SessionCreateWorker;
  friend class SessionWorker;
  Napi::Value Create(const Napi::CallbackInfo & info);
  Napi::Value Info(const Napi::CallbackInfo & info);
  Napi::Value Evaluate(const Napi::CallbackInfo & info);
  Napi::Value EvaluateImage(const Napi::CallbackInfo & info);
  Napi::Value Generate(const Napi::CallbackInfo & info);
  Napi::Value Step(const Napi::CallbackInfo & info);
  Napi::Value InterruptStep(const Napi::CallbackInfo & info);
  Napi::Value Position(const Napi::CallbackInfo & info);
  Napi::Value Truncate(const Napi::CallbackInfo & info);
  Napi::Value CopySequence(const Napi::CallbackInfo & info);
  Napi::Value Clear(const Napi::CallbackInfo & info);
  Napi::Value Logits(const Napi::CallbackInfo & info);
  Napi::Value Abort(const Napi::CallbackInfo & info);

  // The state for a call on the JS thread: throws if disposed, not created, or busy.
  std::shared_ptr<SessionState> Ready(Napi::Env env) const;
  // Copies the sequences' positions for position(), which must not read what a worker changes.
  void PublishPositions();

  std::vector<int32_t> positions_;
  bool busy_ = false;
};

}  // namespace cospot
