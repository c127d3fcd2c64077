// The workers of a Session's single-sequence operations, off the JS thread: create (the context and
// its threads), evaluate, evaluateImage and generate; and SessionWorker, the base they share with
// the batched step.
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "addon.h"
#include "logger.h"
#include "model.h"
#include "mtmd-helper.h"
#include "projector.h"
#include "session_decode.h"
#include "session_internal.h"

namespace cospot {

namespace {

bool OnAbortCheck(void * data) { return static_cast<std::atomic<bool> *>(data)->load(); }

}  // namespace

SessionWorker::SessionWorker(Napi::Env env, const char * name, Session * owner, std::shared_ptr<SessionState> state,
                             int seq_id)
    : OwnerWorker<Session>(env, name, owner), state_(std::move(state)), seq_id_(seq_id) {
  owner_->PublishPositions();  // what position() answers until this work is done
  owner_->busy_ = true;
  state_->abort.store(false);
}

void SessionWorker::Run() {
  const Sequence checkpoint = state_->sequences[seq_id_];
  try {
    Work();
  } catch (...) {
    Restore(*state_, seq_id_, checkpoint);
    PauseThreads();
    throw;
  }
  PauseThreads();
}

void SessionWorker::PauseThreads() {
  if (state_->threadpool != nullptr) ggml_threadpool_pause(state_->threadpool);
}

void SessionWorker::OnSettle() { owner_->busy_ = false; }

class SessionCreateWorker : public Session::CreateWorker {
 public:
  SessionCreateWorker(Napi::Env env, Session * owner, std::shared_ptr<ModelHandle> model, llama_context_params params)
      : CreateWorker(env, "chain-of-spot:session.create", owner), model_(std::move(model)), params_(params) {}

 protected:
  void Run() override {
    LogCapture capture;
    // Without a threadpool of its own, ggml starts and joins its threads for every decode.
    // Its threads poll for work between decodes (waking sleeping threads costs more than a token on a
    // busy machine) and sleep between operations: SessionWorker pauses it when its work is done.
    ggml_threadpool_params pool_params = ggml_threadpool_params_default(params_.n_threads);
    pool_params.paused = true;
    ggml_threadpool * pool = ggml_threadpool_new(&pool_params);
    llama_context * context = llama_init_from_model(model_->model, params_);
    if (context == nullptr) {
      if (pool != nullptr) ggml_threadpool_free(pool);
      const bool oom = capture.text().find("out of memory") != std::string::npos ||
                       capture.text().find("failed to allocate") != std::string::npos;
      throw Failure{oom ? code::kGpuMemory : code::kNative,
                    capture.Explain("llama.cpp could not create a context of " + std::to_string(params_.n_ctx) +
                                    " tokens; try a smaller contextSize")};
    }
    if (pool != nullptr) llama_attach_threadpool(context, pool, pool);
    created_ = std::make_shared<SessionState>(context, pool, model_, static_cast<int>(params_.n_seq_max));
    llama_set_abort_callback(context, OnAbortCheck, &created_->abort);
  }

 private:
  std::shared_ptr<ModelHandle> model_;
  llama_context_params params_;
};

class EvaluateWorker : public SessionWorker {
 public:
  EvaluateWorker(Napi::Env env, Session * owner, std::shared_ptr<SessionState> state, int seq_id,
                 std::vector<llama_token> tokens)
      : SessionWorker(env, "chain-of-spot:session.evaluate", owner, std::move(state), seq_id),
        tokens_(std::move(tokens)) {}

 protected:
  void Work() override {
    const auto start = Clock::now();
    const int32_t room = ContextRoom(*state_, sequence());
    if (static_cast<int32_t>(tokens_.size()) > room) throw ContextFull(*state_, tokens_.size(), room);
    std::vector<llama_token> all = sequence().pending;
    all.insert(all.end(), tokens_.begin(), tokens_.end());
    sequence().pending.clear();
    DecodeTokens(*state_, seq_id_, all, true, &decode_calls_);
    milliseconds_ = MillisecondsSince(start);
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object result = Napi::Object::New(env);
    result.Set("position", sequence().Position());
    result.Set("tokens", static_cast<double>(tokens_.size()));
    result.Set("decodeCalls", decode_calls_);
    result.Set("ms", milliseconds_);
    return result;
  }

 private:
  std::vector<llama_token> tokens_;
  int decode_calls_ = 0;
  double milliseconds_ = 0;
};

class EvaluateImageWorker : public SessionWorker {
 public:
  EvaluateImageWorker(Napi::Env env, Session * owner, std::shared_ptr<SessionState> state, int seq_id,
                      std::shared_ptr<ProjectorHandle> projector, std::vector<unsigned char> pixels, uint32_t width,
                      uint32_t height)
      : SessionWorker(env, "chain-of-spot:session.evaluateImage", owner, std::move(state), seq_id),
        projector_(std::move(projector)),
        pixels_(std::move(pixels)),
        width_(width),
        height_(height) {}

 protected:
  void Work() override {
    FlushPending(*state_, seq_id_, false);

    std::lock_guard<std::mutex> lock(projector_->encode_mutex);  // guards mtmd's output buffer too
    mtmd_bitmap * bitmap = mtmd_bitmap_init(width_, height_, pixels_.data());
    mtmd_input_chunks * chunks = mtmd_input_chunks_init();
    try {
      EvaluateBitmap(bitmap, chunks);
    } catch (...) {
      mtmd_input_chunks_free(chunks);
      mtmd_bitmap_free(bitmap);
      throw;
    }
    mtmd_input_chunks_free(chunks);
    mtmd_bitmap_free(bitmap);
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object result = Napi::Object::New(env);
    result.Set("position", sequence().Position());
    result.Set("tokens", image_tokens_);
    result.Set("markerTokens", marker_tokens_);
    Napi::Array grids = Napi::Array::New(env, grids_.size());
    for (size_t i = 0; i < grids_.size(); i++) {
      Napi::Object grid = Napi::Object::New(env);
      grid.Set("width", grids_[i].first);
      grid.Set("height", grids_[i].second);
      grids.Set(static_cast<uint32_t>(i), grid);
    }
    result.Set("grids", grids);
    result.Set("encodeMs", encode_ms_);
    result.Set("decodeMs", decode_ms_);
    return result;
  }

 private:
  void EvaluateBitmap(mtmd_bitmap * bitmap, mtmd_input_chunks * chunks) {
    mtmd_context * mtmd = projector_->context;
    LogCapture capture;
    mtmd_input_text text = {mtmd_default_marker(), std::strlen(mtmd_default_marker()), false, true};
    const mtmd_bitmap * bitmaps[] = {bitmap};
    if (mtmd_tokenize(mtmd, chunks, &text, bitmaps, 1) != 0) {
      throw Failure{code::kImage, capture.Explain("the projector could not preprocess the image")};
    }
    const int32_t n_batch = static_cast<int32_t>(llama_n_batch(state_->context));
    for (size_t i = 0; i < mtmd_input_chunks_size(chunks); i++) {
      ThrowIfAborted(*state_);
      const mtmd_input_chunk * chunk = mtmd_input_chunks_get(chunks, i);
      if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
        size_t n_tokens = 0;
        const llama_token * tokens = mtmd_input_chunk_get_tokens_text(chunk, &n_tokens);
        DecodeTokens(*state_, seq_id_, std::vector<llama_token>(tokens, tokens + n_tokens), false);
        marker_tokens_ += static_cast<int32_t>(n_tokens);
        continue;
      }
      const int32_t n_tokens = static_cast<int32_t>(mtmd_input_chunk_get_n_tokens(chunk));
      if (n_tokens > ContextRoom(*state_, sequence())) throw ContextFull(*state_, n_tokens, ContextRoom(*state_, sequence()));
      auto start = Clock::now();
      if (mtmd_encode_chunk(mtmd, chunk) != 0) {
        throw Failure{code::kImage, capture.Explain("the projector failed to encode the image")};
      }
      encode_ms_ += MillisecondsSince(start);
      ThrowIfAborted(*state_);
      start = Clock::now();
      llama_pos new_position = 0;
      const int32_t status = mtmd_helper_decode_image_chunk(mtmd, state_->context, chunk, mtmd_get_output_embd(mtmd),
                                                            sequence().cached, seq_id_, n_batch, &new_position,
                                                            nullptr, nullptr);
      // The helper returns llama_decode's status: 1 is "no KV slot" (sequences share the cache).
      if (status != 0) throw DecodeFailure(*state_, status, capture);
      decode_ms_ += MillisecondsSince(start);
      sequence().cached = new_position;
      image_tokens_ += n_tokens;
      // Models with 2-D positions (M-RoPE: Qwen-VL) lay the tokens out on a grid, which is the
      // resolution mtmd resized the image to: a box in the model's pixels is read against it.
      if (mtmd_input_chunk_get_n_pos(chunk) != n_tokens && n_tokens > 0) {
        const mtmd_decoder_pos last =
            mtmd_image_tokens_get_decoder_pos(mtmd_input_chunk_get_tokens_image(chunk), 0, n_tokens - 1);
        grids_.emplace_back(last.x + 1, last.y + 1);
      }
    }
  }

  std::shared_ptr<ProjectorHandle> projector_;
  std::vector<unsigned char> pixels_;
  uint32_t width_;
  uint32_t height_;
  int32_t image_tokens_ = 0;
  int32_t marker_tokens_ = 0;  // the text mtmd puts around the image (<|vision_start|>, <img>...)
  std::vector<std::pair<uint32_t, uint32_t>> grids_;  // width, height in tokens, per image chunk
  double encode_ms_ = 0;
  double decode_ms_ = 0;
};

class GenerateWorker : public SessionWorker {
 public:
  GenerateWorker(Napi::Env env, Session * owner, std::shared_ptr<SessionState> state, int seq_id,
                 GenerateOptions options, Napi::Value on_text)
      : SessionWorker(env, "chain-of-spot:session.generate", owner, std::move(state), seq_id),
        generation_(*state_, seq_id_, std::move(options)) {
    SetStream(env, on_text, "chain-of-spot:text");
  }

 protected:
  void Work() override {
    const auto start = Clock::now();
    if (!sequence().pending.empty()) FlushPending(*state_, seq_id_, true, &decode_calls_);
    generation_.Begin();
    while (!generation_.finished()) {
      ThrowIfAborted(*state_);
      generation_.Advance();
      Emit(false);
      if (generation_.finished()) break;
      try {
        FlushPending(*state_, seq_id_, true, &decode_calls_);
      } catch (const Failure & failure) {
        if (failure.code != code::kContextFull) throw;
        generation_.EndForContext();
      }
    }
    generation_.End();
    Emit(true);
    milliseconds_ = MillisecondsSince(start);
  }

  // onText threw: stop generating (the call rejects with what it threw).
  void OnCallbackError() override { state_->abort.store(true); }

  Napi::Value Result(Napi::Env env) override { return generation_.Result(env, decode_calls_, milliseconds_); }

 private:
  void Emit(bool final) {
    if (!streaming()) return;
    std::string piece = generation_.TakeEmittable(final);
    if (piece.empty()) return;
    Stream([piece = std::move(piece)](Napi::Env env, Napi::Function fn) { fn.Call({Napi::String::New(env, piece)}); });
  }

  Generation generation_;
  int decode_calls_ = 0;
  double milliseconds_ = 0;
};

Napi::Value StartCreate(Napi::Env env, Session * owner, std::shared_ptr<ModelHandle> model, llama_context_params params) {
  return (new SessionCreateWorker(env, owner, std::move(model), params))->Start();
}

Napi::Value StartEvaluate(Napi::Env env, Session * owner, std::shared_ptr<SessionState> state, int seq_id,
                          std::vector<llama_token> tokens) {
  return (new EvaluateWorker(env, owner, std::move(state), seq_id, std::move(tokens)))->Start();
}

Napi::Value StartEvaluateImage(Napi::Env env, Session * owner, std::shared_ptr<SessionState> state, int seq_id,
                               std::shared_ptr<ProjectorHandle> projector, std::vector<unsigned char> pixels,
                               uint32_t width, uint32_t height) {
  return (new EvaluateImageWorker(env, owner, std::move(state), seq_id, std::move(projector), std::move(pixels), width,
                                  height))
      ->Start();
}

Napi::Value StartGenerate(Napi::Env env, Session * owner, std::shared_ptr<SessionState> state, int seq_id,
                          GenerateOptions options, Napi::Value on_text) {
  return (new GenerateWorker(env, owner, std::move(state), seq_id, std::move(options), on_text))->Start();
}

}  // namespace cospot
