// The N-API bindings of the JS class Session (see session.h): each method checks its arguments on
// the JS thread and either answers at once (info, position, truncate, copySequence, clear, logits,
// interruptStep, abort) or starts a worker (session_workers.cpp, session_step.cpp).
#include "session.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "addon.h"
#include "generation.h"
#include "model.h"
#include "projector.h"
#include "session_decode.h"
#include "session_internal.h"

namespace cospot {

SessionState::SessionState(llama_context * context, ggml_threadpool * threadpool, std::shared_ptr<ModelHandle> model,
                           int sequences)
    : context(context),
      threadpool(threadpool),
      model(std::move(model)),
      sequences(sequences),
      batch(llama_batch_init(static_cast<int32_t>(llama_n_batch(context)), 0, 1)) {}

SessionState::~SessionState() {
  llama_batch_free(batch);
  llama_free(context);
  if (threadpool != nullptr) ggml_threadpool_free(threadpool);  // after the context that uses it
}

Napi::Function Session::Define(Napi::Env env) {
  return DefineWith(env, {
                             {"create", &Session::Create},
                             {"info", &Session::Info},
                             {"evaluate", &Session::Evaluate},
                             {"evaluateImage", &Session::EvaluateImage},
                             {"generate", &Session::Generate},
                             {"step", &Session::Step},
                             {"interruptStep", &Session::InterruptStep},
                             {"position", &Session::Position},
                             {"truncate", &Session::Truncate},
                             {"copySequence", &Session::CopySequence},
                             {"clear", &Session::Clear},
                             {"logits", &Session::Logits},
                             {"abort", &Session::Abort},
                         });
}

std::shared_ptr<SessionState> Session::Ready(Napi::Env env) const {
  std::shared_ptr<SessionState> state = Handle(env);
  if (busy_) throw Napi::Error::New(env, "the session is busy: one native operation runs at a time");
  return state;
}

int SequenceArg(Napi::Env env, const SessionState & state, Napi::Value value) {
  const int32_t seq_id = value.IsNumber() ? value.As<Napi::Number>().Int32Value() : 0;
  if (seq_id < 0 || seq_id >= static_cast<int32_t>(state.sequences.size())) {
    throw Napi::RangeError::New(env, "sequence must be in [0, " + std::to_string(state.sequences.size()) + ")");
  }
  return seq_id;
}

std::vector<llama_token> TokenArg(Napi::Env env, const SessionState & state, Napi::Value value) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    throw Napi::TypeError::New(env, "tokens must be an Int32Array");
  }
  Napi::Int32Array array = value.As<Napi::Int32Array>();
  const int32_t n_vocab = llama_vocab_n_tokens(state.model->vocab);
  std::vector<llama_token> tokens(array.Data(), array.Data() + array.ElementLength());
  for (llama_token token : tokens) {
    if (token < 0 || token >= n_vocab) throw Napi::RangeError::New(env, "token id out of range");
  }
  return tokens;
}

void Session::PublishPositions() {
  positions_.resize(handle_->sequences.size());
  for (size_t i = 0; i < positions_.size(); i++) positions_[i] = handle_->sequences[i].Position();
}

// create(model, { contextSize, batchSize, threads, sequences }) -> Promise<void>
Napi::Value Session::Create(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  ThrowIfDisposed(env);
  std::shared_ptr<ModelHandle> model = Model::FromValue(env, info[0])->Handle(env);
  Napi::Object options = info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);

  llama_context_params params = llama_context_default_params();
  params.n_ctx = OptionOr<uint32_t>(options, "contextSize", 2048);
  params.n_batch = OptionOr<uint32_t>(options, "batchSize", 512);
  params.n_ubatch = params.n_batch;
  params.n_seq_max = std::max<uint32_t>(1, OptionOr<uint32_t>(options, "sequences", 1));
  // llama.cpp keeps an output row per sequence, and asserts (aborting the process) that they fit
  // n_outputs_max, n_batch by default: a batch smaller than the sequences needs more rows.
  params.n_outputs_max = std::max(params.n_batch, params.n_seq_max);
  // lib/native/threads.ts gives the default (the physical cores); this one is for direct callers.
  const int32_t threads = OptionOr<int32_t>(options, "threads", GGML_DEFAULT_N_THREADS);
  params.n_threads = std::max(1, threads);
  params.n_threads_batch = params.n_threads;
  // One cache for all sequences: copying a prefix costs nothing, but every decode attends over the
  // cells of all of them. Without it, each sequence has contextSize / sequences cells of its own.
  params.kv_unified = OptionOr<bool>(options, "unifiedCache", true);
  params.no_perf = true;

  BeginCreate(env);
  return StartCreate(env, this, std::move(model), params);
}

Napi::Value Session::Info(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<SessionState> state = Handle(env);
  Napi::Object result = Napi::Object::New(env);
  result.Set("contextSize", llama_n_ctx_seq(state->context));
  result.Set("batchSize", llama_n_batch(state->context));
  result.Set("sequences", static_cast<double>(state->sequences.size()));
  return result;
}

// evaluate(tokens: Int32Array, sequence) -> Promise<{ position, tokens, decodeCalls, ms }>
Napi::Value Session::Evaluate(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<SessionState> state = Ready(env);
  std::vector<llama_token> tokens = TokenArg(env, *state, info[0]);
  const int seq_id = SequenceArg(env, *state, info[1]);
  return StartEvaluate(env, this, std::move(state), seq_id, std::move(tokens));
}

// evaluateImage(projector, rgb: Uint8Array, width, height, sequence) -> Promise<{ position, tokens, encodeMs, decodeMs }>
Napi::Value Session::EvaluateImage(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<SessionState> state = Ready(env);
  std::shared_ptr<ProjectorHandle> projector = Projector::FromValue(env, info[0])->Handle(env);
  if (projector->model != state->model) {
    ThrowCoded(env, code::kProjectorMismatch, "the projector was loaded for another model than this session's");
  }
  if (!projector->supports_vision) ThrowCoded(env, code::kProjectorLoad, "this projector has no vision encoder");
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(env, "pixels must be a Uint8Array of RGB bytes");
  }
  Napi::Uint8Array pixels = info[1].As<Napi::Uint8Array>();
  const double width = info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : 0;
  const double height = info[3].IsNumber() ? info[3].As<Napi::Number>().DoubleValue() : 0;
  if (!(width >= 1 && height >= 1 && width <= 65535 && height <= 65535) || width != std::floor(width) ||
      height != std::floor(height)) {
    ThrowCoded(env, code::kImage, "image width and height must be whole numbers from 1 to 65535");
  }
  if (pixels.ElementLength() != static_cast<size_t>(width) * static_cast<size_t>(height) * 3) {
    ThrowCoded(env, code::kImage, "pixels must hold width * height * 3 bytes (RGB)");
  }
  const int seq_id = SequenceArg(env, *state, info[4]);
  return StartEvaluateImage(env, this, std::move(state), seq_id, std::move(projector),
                            std::vector<unsigned char>(pixels.Data(), pixels.Data() + pixels.ElementLength()),
                            static_cast<uint32_t>(width), static_cast<uint32_t>(height));
}

// generate({ maxTokens, temperature, topK, topP, seed, grammar, stop }, sequence, onText?) -> Promise<result>
Napi::Value Session::Generate(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<SessionState> state = Ready(env);
  GenerateOptions parsed = ParseGenerateOptions(env, info[0]);
  const int seq_id = SequenceArg(env, *state, info[1]);
  return StartGenerate(env, this, std::move(state), seq_id, std::move(parsed), info[2]);
}

// step([{ sequence, tokens } | { sequence, generate: options | true } | { sequence, cancel: position }])
//   -> Promise<[{ position, done, evaluated, text, result? } | { position, error }]>
// One item per sequence at most.
Napi::Value Session::Step(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<SessionState> state = Ready(env);
  return StartStep(env, this, std::move(state), info[0]);
}

// position(sequence): the position when the last operation ended (one in flight changes it meanwhile).
Napi::Value Session::Position(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<SessionState> state = Handle(env);
  const int seq_id = SequenceArg(env, *state, info[0]);
  if (!busy_) PublishPositions();
  return Napi::Number::New(env, positions_[seq_id]);
}

// truncate(position, sequence): forget everything from `position` on.
Napi::Value Session::Truncate(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<SessionState> state = Ready(env);
  const int seq_id = SequenceArg(env, *state, info[1]);
  Sequence & sequence = state->sequences[seq_id];
  const double position = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  if (!(position >= 0 && position <= sequence.Position()) || position != std::floor(position)) {
    throw Napi::RangeError::New(env, "position must be a whole number from 0 to " + std::to_string(sequence.Position()));
  }
  TruncateSequence(*state, seq_id, static_cast<int32_t>(position));
  return env.Undefined();
}

// copySequence(source, destination): the destination becomes a copy of the source (cache shared).
Napi::Value Session::CopySequence(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<SessionState> state = Ready(env);
  const int src = SequenceArg(env, *state, info[0]);
  const int dst = SequenceArg(env, *state, info[1]);
  if (src == dst) return env.Undefined();
  llama_memory_t memory = llama_get_memory(state->context);
  llama_memory_seq_rm(memory, dst, -1, -1);
  llama_memory_seq_cp(memory, src, dst, -1, -1);
  state->sequences[dst] = state->sequences[src];
  state->generations.erase(dst);
  return env.Undefined();
}

Napi::Value Session::Clear(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<SessionState> state = Ready(env);
  // The cells only: zeroing the buffer (a GiB for a 7B context) is not needed, masked cells are never read.
  llama_memory_clear(llama_get_memory(state->context), false);
  for (Sequence & sequence : state->sequences) sequence = Sequence{};
  state->generations.clear();
  return env.Undefined();
}

// logits(sequence) -> Float32Array | null: the logits predicting the token at position().
Napi::Value Session::Logits(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<SessionState> state = Ready(env);
  const Sequence & sequence = state->sequences[SequenceArg(env, *state, info[0])];
  if (!sequence.LogitsCurrent()) return env.Null();
  Napi::Float32Array result = Napi::Float32Array::New(env, sequence.logits.size());
  std::copy(sequence.logits.begin(), sequence.logits.end(), result.Data());
  return result;
}

// interruptStep(): a step in flight returns after its current decode (new work waits).
Napi::Value Session::InterruptStep(const Napi::CallbackInfo & info) {
  if (handle_) handle_->step_interrupt.store(true);
  return info.Env().Undefined();
}

Napi::Value Session::Abort(const Napi::CallbackInfo & info) {
  if (handle_) handle_->abort.store(true);
  return info.Env().Undefined();
}

}  // namespace cospot
