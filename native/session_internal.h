// What the files of the native Session share: the base of its workers (session_workers.cpp), the
// checks of its arguments (session.cpp), and how each binding starts its worker (the create,
// evaluate, evaluateImage and generate workers in session_workers.cpp, the batched step in
// session_step.cpp).
#pragma once

#include <napi.h>

#include <memory>
#include <vector>

#include "generation.h"
#include "session.h"
#include "worker.h"

namespace cospot {

// Base of every worker on an existing session: keeps the state alive, marks the session busy while
// it runs, and restores the sequence when the work fails or is aborted.
class SessionWorker : public OwnerWorker<Session> {
 public:
  SessionWorker(Napi::Env env, const char * name, Session * owner, std::shared_ptr<SessionState> state, int seq_id);

 protected:
  virtual void Work() = 0;

  void Run() override;

  // The compute threads stop polling until the next decode resumes them.
  void PauseThreads();

  Sequence & sequence() { return state_->sequences[seq_id_]; }

  std::shared_ptr<SessionState> state_;
  const int seq_id_;

 private:
  void OnSettle() override;
};

// The sequence index argument, checked against the session's sequences (default 0).
int SequenceArg(Napi::Env env, const SessionState & state, Napi::Value value);

// An Int32Array of token ids, each checked against the vocabulary.
std::vector<llama_token> TokenArg(Napi::Env env, const SessionState & state, Napi::Value value);

// Each starts its worker and returns its promise (the arguments checked already).
Napi::Value StartCreate(Napi::Env env, Session * owner, std::shared_ptr<ModelHandle> model, llama_context_params params);
Napi::Value StartEvaluate(Napi::Env env, Session * owner, std::shared_ptr<SessionState> state, int seq_id,
                          std::vector<llama_token> tokens);
Napi::Value StartEvaluateImage(Napi::Env env, Session * owner, std::shared_ptr<SessionState> state, int seq_id,
                               std::shared_ptr<ProjectorHandle> projector, std::vector<unsigned char> pixels,
                               uint32_t width, uint32_t height);
Napi::Value StartGenerate(Napi::Env env, Session * owner, std::shared_ptr<SessionState> state, int seq_id,
                          GenerateOptions options, Napi::Value on_text);
// Checks the items (an array, one per sequence at most) and starts the step.
Napi::Value StartStep(Napi::Env env, Session * owner, std::shared_ptr<SessionState> state, Napi::Value items);

}  // namespace cospot
