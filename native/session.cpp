#include "session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>

#include "addon.h"
#include "logger.h"
#include "model.h"
#include "mtmd-helper.h"
#include "projector.h"
#include "worker.h"

namespace cospot {

namespace {

using Clock = std::chrono::steady_clock;

double MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

bool OnAbortCheck(void * data) { return static_cast<std::atomic<bool> *>(data)->load(); }

// Puts a sequence back as it was before a failed or aborted operation (`saved` is its copy).
void Restore(SessionState & state, int seq_id, const Sequence & saved) {
  llama_memory_seq_rm(llama_get_memory(state.context), seq_id, saved.cached, -1);
  state.sequences[seq_id] = saved;
}

void ThrowIfAborted(const SessionState & state) {
  if (state.abort.load()) throw Failure{code::kAborted, "the operation was aborted"};
}

int32_t ContextRoom(const SessionState & state, const Sequence & sequence) {
  return static_cast<int32_t>(llama_n_ctx_seq(state.context)) - sequence.Position();
}

Failure ContextFull(const SessionState & state, int32_t needed, int32_t room) {
  return Failure{code::kContextFull, "the context is full: " + std::to_string(needed) + " more tokens do not fit in the " +
                                         std::to_string(room) + " left of " +
                                         std::to_string(llama_n_ctx_seq(state.context)) +
                                         "; shorten the input or create the session with a larger contextSize"};
}

Failure DecodeFailure(const SessionState & state, int32_t status, const LogCapture & capture) {
  if (status == 2 || state.abort.load()) return Failure{code::kAborted, "the operation was aborted"};
  if (status == 1) return Failure{code::kContextFull, "the context has no room for this batch; use a larger contextSize"};
  if (capture.text().find("out of memory") != std::string::npos) {
    return Failure{code::kGpuMemory, capture.Explain("out of device memory while evaluating")};
  }
  return Failure{code::kNative, capture.Explain("llama_decode failed with status " + std::to_string(status))};
}

// Decodes tokens at the end of a sequence, in batches of n_batch; the logits of the last token are
// kept when asked for. Throws Failure; the caller restores its checkpoint.
void DecodeTokens(SessionState & state, int seq_id, const std::vector<llama_token> & tokens, bool want_logits,
                  int * decode_calls = nullptr) {
  Sequence & sequence = state.sequences[seq_id];
  const int32_t n_batch = static_cast<int32_t>(llama_n_batch(state.context));
  llama_batch & batch = state.batch;
  LogCapture capture;
  for (size_t start = 0; start < tokens.size(); start += n_batch) {
    ThrowIfAborted(state);
    const size_t end = std::min(tokens.size(), start + static_cast<size_t>(n_batch));
    batch.n_tokens = 0;
    for (size_t i = start; i < end; i++) {
      const int32_t k = batch.n_tokens++;
      batch.token[k] = tokens[i];
      batch.pos[k] = sequence.cached + static_cast<int32_t>(i - start);
      batch.n_seq_id[k] = 1;
      batch.seq_id[k][0] = seq_id;
      batch.logits[k] = want_logits && i + 1 == tokens.size();
    }
    const int32_t status = llama_decode(state.context, batch);
    if (decode_calls != nullptr) (*decode_calls)++;
    if (status != 0) throw DecodeFailure(state, status, capture);
    sequence.cached += batch.n_tokens;
  }
  if (want_logits && !tokens.empty()) {
    const float * logits = llama_get_logits_ith(state.context, -1);
    const int32_t n_vocab = llama_vocab_n_tokens(state.model->vocab);
    sequence.logits.assign(logits, logits + n_vocab);
    sequence.logits_position = sequence.cached;
  }
}

// Moves a sequence's pending tokens into the cache. On failure, what was not decoded stays pending.
void FlushPending(SessionState & state, int seq_id, bool want_logits, int * decode_calls = nullptr) {
  Sequence & sequence = state.sequences[seq_id];
  if (sequence.pending.empty()) return;
  std::vector<llama_token> pending;
  pending.swap(sequence.pending);
  const int32_t start = sequence.cached;
  try {
    DecodeTokens(state, seq_id, pending, want_logits, decode_calls);
  } catch (...) {
    sequence.pending.assign(pending.begin() + (sequence.cached - start), pending.end());
    throw;
  }
}

// Text produced by generation: holds back what could be an incomplete UTF-8 character or the start
// of a stop string, so what is streamed never has to be taken back.
class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stops) : stops_(std::move(stops)) {
    for (const std::string & stop : stops_) longest_stop_ = std::max(longest_stop_, stop.size());
  }

  // Appends a piece; true when a stop string now appears (the text is cut before it).
  bool Append(const std::string & piece) {
    const size_t search_from = text_.size() > longest_stop_ ? text_.size() - longest_stop_ : 0;
    text_ += piece;
    size_t cut = std::string::npos;
    for (const std::string & stop : stops_) {
      if (stop.empty()) continue;
      cut = std::min(cut, text_.find(stop, search_from));
    }
    if (cut == std::string::npos) return false;
    text_.resize(cut);
    return true;
  }

  // The text not yet emitted that is safe to emit now (everything when `final`).
  std::string TakeEmittable(bool final) {
    size_t end = text_.size();
    if (!final) {
      end = CompleteUtf8End(end);
      for (const std::string & stop : stops_) {
        for (size_t k = std::min(stop.size() - 1, end); k > 0; k--) {
          if (text_.compare(end - k, k, stop, 0, k) == 0) {
            end -= k;
            break;
          }
        }
      }
    }
    if (end <= emitted_) return "";
    std::string out = text_.substr(emitted_, end - emitted_);
    emitted_ = end;
    return out;
  }

  const std::string & text() const { return text_; }

 private:
  // The end of the text less a trailing, incomplete UTF-8 sequence.
  size_t CompleteUtf8End(size_t end) const {
    for (size_t back = 1; back <= 4 && back <= end; back++) {
      const unsigned char byte = static_cast<unsigned char>(text_[end - back]);
      if ((byte & 0xC0) == 0x80) continue;  // continuation byte: look further back
      size_t length = byte < 0x80 ? 1 : (byte >> 5) == 0x6 ? 2 : (byte >> 4) == 0xE ? 3 : (byte >> 3) == 0x1E ? 4 : 1;
      return length > back ? end - back : end;
    }
    return end;
  }

  std::vector<std::string> stops_;
  size_t longest_stop_ = 0;
  std::string text_;
  size_t emitted_ = 0;
};

std::string TokenPiece(const llama_vocab * vocab, llama_token token) {
  char buffer[256];
  int32_t n = llama_token_to_piece(vocab, token, buffer, sizeof(buffer), 0, false);
  if (n >= 0) return std::string(buffer, n);
  std::string piece(-n, '\0');
  n = llama_token_to_piece(vocab, token, piece.data(), static_cast<int32_t>(piece.size()), 0, false);
  piece.resize(std::max(n, 0));
  return piece;
}

}  // namespace

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

// Base of every worker on an existing session: keeps the state alive, marks the session busy while
// it runs, and restores the sequence when the work fails or is aborted.
class SessionWorker : public OwnerWorker<Session> {
 public:
  SessionWorker(Napi::Env env, const char * name, Session * owner, std::shared_ptr<SessionState> state, int seq_id)
      : OwnerWorker<Session>(env, name, owner), state_(std::move(state)), seq_id_(seq_id) {
    owner_->PublishPositions();  // what position() answers until this work is done
    owner_->busy_ = true;
    state_->abort.store(false);
  }

 protected:
  virtual void Work() = 0;

  void Run() override {
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

  // The compute threads stop polling until the next decode resumes them.
  void PauseThreads() {
    if (state_->threadpool != nullptr) ggml_threadpool_pause(state_->threadpool);
  }

  Sequence & sequence() { return state_->sequences[seq_id_]; }

  std::shared_ptr<SessionState> state_;
  const int seq_id_;

 private:
  void OnSettle() override { owner_->busy_ = false; }
};

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
    const int32_t room = ContextRoom(*state_, sequence());
    if (projector_->tokens_per_image > room) throw ContextFull(*state_, projector_->tokens_per_image, room);
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
    }
  }

  std::shared_ptr<ProjectorHandle> projector_;
  std::vector<unsigned char> pixels_;
  uint32_t width_;
  uint32_t height_;
  int32_t image_tokens_ = 0;
  double encode_ms_ = 0;
  double decode_ms_ = 0;
};

struct GenerateOptions {
  int32_t max_tokens = 128;
  float temperature = 0.0f;
  int32_t top_k = 40;
  float top_p = 0.95f;
  uint32_t seed = 0;
  std::string grammar;
  std::vector<std::string> stops;
};

// One generation on one sequence: its samplers, grammar and text. GenerateWorker runs one to its end;
// a step of parallel decoding (StepWorker) advances several by one token each, in one batch.
class Generation {
 public:
  Generation(SessionState & state, int seq_id, GenerateOptions options)
      : state_(state), seq_id_(seq_id), options_(std::move(options)), text_(options_.stops) {}

  // Starts from the sequence's current logits. Throws Failure.
  void Begin() {
    const llama_vocab * vocab = state_.model->vocab;
    MakeSamplers(vocab);
    if (!sequence().LogitsCurrent()) {
      throw Failure{code::kNative, "generate() needs the logits of the last token: evaluate text first"};
    }
    n_ctx_ = static_cast<int32_t>(llama_n_ctx_seq(state_.context));
    if (sequence().Position() >= n_ctx_) throw ContextFull(state_, 1, 0);
    start_ = sequence();
    candidates_.resize(llama_vocab_n_tokens(vocab));
  }

  // Chooses the next token from the logits, then the tokens the grammar forces after it (they need
  // no sampling): all join the sequence's pending tokens, for the caller's next batch.
  void Advance() {
    const llama_vocab * vocab = state_.model->vocab;
    Take(vocab, SampleToken(), true);
    while (finish_reason_.empty() && samplers_.grammar) {
      llama_token forced = ForcedToken();
      if (forced == LLAMA_TOKEN_NULL) break;
      Take(vocab, forced, false);
    }
  }

  bool finished() const { return !finish_reason_.empty(); }

  // No free cell in the cache the sequences share: end with what was generated (and streamed).
  void EndForContext() { finish_reason_ = "context"; }

  // After the last Advance: a stop string leaves the tokens and the sequence.
  void End() {
    if (finish_reason_ == "stop") CutAtStop(state_.model->vocab);
  }

  // The text not yet streamed that is safe to stream now (all of it when `final`).
  std::string TakeEmittable(bool final) { return text_.TakeEmittable(final); }

  // { tokens, text, finishReason, sampledTokens, decodeCalls, position, ms }, on the JS thread.
  Napi::Object Result(Napi::Env env, int decode_calls, double ms) const {
    Napi::Object result = Napi::Object::New(env);
    Napi::Int32Array tokens = Napi::Int32Array::New(env, generated_.size());
    std::copy(generated_.begin(), generated_.end(), tokens.Data());
    result.Set("tokens", tokens);
    result.Set("text", text_.text());
    result.Set("finishReason", finish_reason_);
    result.Set("sampledTokens", sampled_);
    result.Set("decodeCalls", decode_calls);
    result.Set("position", state_.sequences[seq_id_].Position());
    result.Set("ms", ms);
    return result;
  }

 private:
  Sequence & sequence() { return state_.sequences[seq_id_]; }

  // The sampler chain and the optional grammar, freed with the worker whatever happens.
  struct Samplers {
    Samplers() = default;
    Samplers(const Samplers &) = delete;
    Samplers & operator=(const Samplers &) = delete;
    ~Samplers() {
      if (grammar) llama_sampler_free(grammar);
      if (chain) llama_sampler_free(chain);
    }
    llama_sampler * chain = nullptr;
    llama_sampler * grammar = nullptr;
  };

  void MakeSamplers(const llama_vocab * vocab) {
    if (!options_.grammar.empty()) {
      LogCapture capture;
      samplers_.grammar = llama_sampler_init_grammar(vocab, options_.grammar.c_str(), "root");
      if (samplers_.grammar == nullptr) {
        throw Failure{code::kGrammar, capture.Explain("the GBNF grammar does not parse (its start rule must be `root`)")};
      }
    }
    samplers_.chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
    if (options_.temperature <= 0.0f) {
      llama_sampler_chain_add(samplers_.chain, llama_sampler_init_greedy());
    } else {
      if (options_.top_k > 0) llama_sampler_chain_add(samplers_.chain, llama_sampler_init_top_k(options_.top_k));
      if (options_.top_p < 1.0f) llama_sampler_chain_add(samplers_.chain, llama_sampler_init_top_p(options_.top_p, 1));
      llama_sampler_chain_add(samplers_.chain, llama_sampler_init_temp(options_.temperature));
      // llama.cpp takes LLAMA_DEFAULT_SEED (0xFFFFFFFF) for "a random seed": every seed of ours is
      // reproducible, so that one samples as 0xFFFFFFFE does.
      const uint32_t seed = options_.seed == LLAMA_DEFAULT_SEED ? LLAMA_DEFAULT_SEED - 1 : options_.seed;
      llama_sampler_chain_add(samplers_.chain, llama_sampler_init_dist(seed));
    }
  }

  // The next token from the last logits; the grammar, if any, masks first.
  llama_token SampleToken() {
    std::vector<llama_token_data> & candidates = candidates_;
    const float * logits = sequence().logits.data();
    const auto n_vocab = static_cast<llama_token>(candidates.size());
    // Greedy under a grammar: the best token is the answer when the grammar allows it, and only
    // otherwise is the grammar applied to the whole vocabulary (as llama.cpp's common sampler does).
    if (samplers_.grammar && options_.temperature <= 0.0f) {
      const llama_token best = static_cast<llama_token>(std::max_element(logits, logits + n_vocab) - logits);
      llama_token_data single = {best, logits[best], 0.0f};
      llama_token_data_array one = {&single, 1, -1, false};
      llama_sampler_apply(samplers_.grammar, &one);
      if (!std::isinf(single.logit)) return best;
    }
    for (llama_token id = 0; id < n_vocab; id++) candidates[id] = llama_token_data{id, logits[id], 0.0f};
    llama_token_data_array array = {candidates.data(), candidates.size(), -1, false};
    if (samplers_.grammar) llama_sampler_apply(samplers_.grammar, &array);
    llama_sampler_apply(samplers_.chain, &array);
    if (array.selected < 0 || array.selected >= static_cast<int64_t>(array.size)) {
      throw Failure{code::kNative, "the sampler selected no token"};
    }
    return array.data[array.selected].id;
  }

  // The token the grammar forces next, or LLAMA_TOKEN_NULL when it leaves a choice. Several
  // allowed tokens that all spell the same text (`.` and the byte token <0x2E>, say) are no choice:
  // then the ordinary token is taken, as a model writes it. A grammar that is complete forces the end.
  llama_token ForcedToken() {
    std::vector<llama_token_data> & probe = candidates_;
    // Most choices show among the one-character tokens (digits, say): when two of those differ,
    // there is no need to run the grammar over the whole vocabulary.
    if (AllowedTextCount(state_.model->single_char_tokens, probe) > 1) return LLAMA_TOKEN_NULL;
    if (every_token_.empty()) {
      every_token_.resize(probe.size());
      for (size_t id = 0; id < every_token_.size(); id++) every_token_[id] = static_cast<llama_token>(id);
    }
    llama_token forced = LLAMA_TOKEN_NULL;
    return AllowedTextCount(every_token_, probe, &forced) == 1 ? forced : LLAMA_TOKEN_NULL;
  }

  // How many different texts (1, or 2 meaning "more than one") the grammar allows among `tokens`;
  // `forced` receives the token for a single text, preferring an ordinary token to a byte token.
  size_t AllowedTextCount(const std::vector<llama_token> & tokens, std::vector<llama_token_data> & probe,
                          llama_token * forced = nullptr) {
    const llama_vocab * vocab = state_.model->vocab;
    for (size_t i = 0; i < tokens.size(); i++) probe[i] = llama_token_data{tokens[i], 0.0f, 0.0f};
    llama_token_data_array array = {probe.data(), tokens.size(), -1, false};
    llama_sampler_apply(samplers_.grammar, &array);
    llama_token chosen = LLAMA_TOKEN_NULL;
    std::string chosen_text;
    for (size_t i = 0; i < array.size; i++) {
      if (std::isinf(array.data[i].logit)) continue;
      const llama_token id = array.data[i].id;
      // An end-of-generation token spells nothing: it never equals another token's text.
      const std::string text = llama_vocab_is_eog(vocab, id) ? std::string("\0eog", 4) : TokenPiece(vocab, id);
      if (chosen == LLAMA_TOKEN_NULL) {
        chosen = id;
        chosen_text = text;
      } else if (text != chosen_text) {
        return 2;
      } else if (llama_vocab_get_attr(vocab, chosen) & LLAMA_TOKEN_ATTR_BYTE) {
        chosen = id;
      }
    }
    if (forced != nullptr) *forced = chosen;
    return chosen == LLAMA_TOKEN_NULL ? 0 : 1;
  }

  // Records a chosen token: ends on end-of-generation, a stop string, the token limit or a full context.
  void Take(const llama_vocab * vocab, llama_token token, bool sampled) {
    if (sampled) sampled_++;
    if (llama_vocab_is_eog(vocab, token)) {
      finish_reason_ = "eos";  // not decoded: the caller's template adds its own end-of-turn token
      return;
    }
    llama_sampler_accept(samplers_.chain, token);
    if (samplers_.grammar) llama_sampler_accept(samplers_.grammar, token);
    generated_.push_back(token);
    sequence().pending.push_back(token);
    const std::string piece = TokenPiece(vocab, token);
    token_ends_.push_back(text_.text().size() + piece.size());
    if (text_.Append(piece)) {
      finish_reason_ = "stop";
      return;
    }
    if (static_cast<int32_t>(generated_.size()) >= options_.max_tokens) {
      finish_reason_ = "length";
    } else if (sequence().Position() >= n_ctx_) {
      finish_reason_ = "context";  // the token is in the last position: none can follow it
    }
  }

  // A stop string ended generation: the sequence keeps exactly the text returned, not the stop
  // string nor what followed it. Tokens wholly before the stop stay; the part of a token that
  // reaches into the stop is spelled again by tokens that end where the text does.
  void CutAtStop(const llama_vocab * vocab) {
    const std::string & text = text_.text();
    size_t kept = 0;
    while (kept < token_ends_.size() && token_ends_[kept] <= text.size()) kept++;
    std::vector<llama_token> tail;
    if (!Spell(vocab, text.substr(kept == 0 ? 0 : token_ends_[kept - 1]), tail)) {
      kept = std::min(kept + 1, generated_.size());  // not spellable: keep the token that reaches into the stop
      tail.clear();
    }
    generated_.resize(kept);
    generated_.insert(generated_.end(), tail.begin(), tail.end());

    // Generated token i sits at position start + i: keep the decoded ones up to the cut, the rest pend.
    Sequence & seq = sequence();
    const int32_t start = start_.cached;
    int32_t cached = std::min(seq.cached, start + static_cast<int32_t>(kept));
    std::vector<llama_token> pending(generated_.begin() + (cached - start), generated_.end());
    const bool logits_lost = cached < seq.cached;
    if (pending.empty() && logits_lost && cached > start) {
      cached--;  // the last token is decoded again with the next evaluation, for its logits
      pending.push_back(generated_.back());
    }
    llama_memory_seq_rm(llama_get_memory(state_.context), seq_id_, cached, -1);
    seq.Truncate(cached);
    seq.pending = std::move(pending);
    if (seq.pending.empty() && cached == start) {
      seq.logits = start_.logits;  // back where generation started: its logits predict again
      seq.logits_position = start_.logits_position;
    }
  }

  // Tokens whose pieces spell exactly `text`: the tokenizer's when they spell it back (it may add a
  // leading space), else one token a byte. False when some byte has no token.
  bool Spell(const llama_vocab * vocab, const std::string & text, std::vector<llama_token> & tokens) const {
    tokens.clear();
    if (text.empty()) return true;
    tokens.resize(text.size() + 2);
    const int32_t n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                                     static_cast<int32_t>(tokens.size()), false, false);
    if (n > 0) {
      tokens.resize(n);
      std::string spelled;
      for (llama_token token : tokens) spelled += TokenPiece(vocab, token);
      if (spelled == text) return true;
    }
    tokens.clear();
    for (unsigned char byte : text) {
      const llama_token token = state_.model->byte_tokens[byte];
      if (token == LLAMA_TOKEN_NULL) return false;
      tokens.push_back(token);
    }
    return true;
  }

  SessionState & state_;
  const int seq_id_;
  GenerateOptions options_;
  TextStream text_;
  Samplers samplers_;  // built in Begin()
  std::vector<llama_token_data> candidates_;  // the vocabulary's logits, for sampling and the grammar probe
  std::vector<llama_token> every_token_;  // 0 .. n_vocab-1, for the forced-token probe
  std::vector<llama_token> generated_;
  std::vector<size_t> token_ends_;  // where each generated token's text ends in text_ (before any cut)
  Sequence start_;  // the sequence where generation started (its position and logits)
  int32_t n_ctx_ = 0;
  std::string finish_reason_;
  int sampled_ = 0;
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

// Forgets a sequence from `position` on (at most its position): its generation, if one runs, its
// pending tokens past there, and its cells in the cache.
void TruncateSequence(SessionState & state, int seq_id, int32_t position) {
  state.generations.erase(seq_id);
  Sequence & sequence = state.sequences[seq_id];
  if (position >= sequence.cached) {
    sequence.pending.resize(position - sequence.cached);
  } else {
    llama_memory_seq_rm(llama_get_memory(state.context), seq_id, position, -1);
    sequence.Truncate(position);
  }
}

// What one sequence asks of a step of parallel decoding (Session.step).
struct StepItem {
  enum class Kind { kEvaluate, kGenerate, kCancel };
  Kind kind = Kind::kEvaluate;
  int seq_id = 0;
  std::vector<llama_token> tokens;         // kEvaluate: to evaluate (after the pending ones)
  std::optional<GenerateOptions> begin;    // kGenerate: starts a generation with these options
  int32_t position = 0;                    // kCancel: drop the generation and truncate here

  // What the step did.
  const char * error_code = nullptr;
  std::string error_message;
  int decodes = 0;        // batches that held tokens of this sequence
  int32_t evaluated = 0;  // kEvaluate: how many of `tokens` went into the cache
  bool done = false;      // kEvaluate: all did, with the logits; kGenerate: the generation ended
  std::string text;       // kGenerate: text to stream
  std::unique_ptr<Generation> ended;  // kGenerate: the generation that ended, for its result
};

// Steps of parallel decoding: every generating sequence chooses its next token(s) and every
// evaluating one contributes its next tokens, and all of them go through llama.cpp in ONE batch, as
// llama-server schedules its slots. Generations live in the session between steps. While every
// item is a generation that goes on, further steps run here without a round trip through JS (that
// costs more than a small model's step), until one ends, new work waits (Session.interruptStep)
// or kStepsFor has passed, so that streamed text keeps flowing.
class StepWorker : public SessionWorker {
 public:
  StepWorker(Napi::Env env, Session * owner, std::shared_ptr<SessionState> state, std::vector<StepItem> items)
      : SessionWorker(env, "chain-of-spot:session.step", owner, std::move(state), 0), items_(std::move(items)) {
    state_->step_interrupt.store(false);
  }

 protected:
  static constexpr double kStepsFor = 20;  // milliseconds

  void Work() override {}

  void Run() override {
    const auto start = Clock::now();
    for (StepItem & item : items_) {
      if (item.kind == StepItem::Kind::kCancel) Cancel(item);
    }
    for (;;) {
      for (StepItem & item : items_) {
        if (Generating(item)) Choose(item);
      }
      Decode();
      bool go_on = true;
      for (StepItem & item : items_) {
        if (!Generating(item)) {
          go_on = false;  // an evaluation, a cancel or a failure: back to JS
          continue;
        }
        Collect(item);
        go_on = go_on && !item.done;
      }
      if (!go_on || state_->step_interrupt.load() || state_->abort.load() || MillisecondsSince(start) >= kStepsFor) break;
    }
    PauseThreads();
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Array results = Napi::Array::New(env, items_.size());
    for (size_t i = 0; i < items_.size(); i++) {
      const StepItem & item = items_[i];
      Napi::Object result = Napi::Object::New(env);
      result.Set("position", state_->sequences[item.seq_id].Position());
      if (item.error_code != nullptr) {
        result.Set("error", CodedError(env, item.error_code, item.error_message).Value());
      } else {
        result.Set("done", item.done);
        result.Set("decodes", item.decodes);
        result.Set("evaluated", item.evaluated);
        result.Set("text", item.text);
        if (item.ended) result.Set("result", item.ended->Result(env, 0, 0));
      }
      results.Set(i, result);
    }
    return results;
  }

 private:
  static bool Generating(const StepItem & item) {
    return item.kind == StepItem::Kind::kGenerate && item.error_code == nullptr && !item.done;
  }

  // A generation's text so far, and its end.
  void Collect(StepItem & item) {
    Generation & generation = *state_->generations.at(item.seq_id);
    item.done = generation.finished();
    if (item.done) generation.End();
    item.text += generation.TakeEmittable(item.done);
    if (item.done) {
      item.ended = std::move(state_->generations[item.seq_id]);
      state_->generations.erase(item.seq_id);
    }
  }

  void Fail(StepItem & item, const Failure & failure) {
    item.error_code = failure.code;
    item.error_message = failure.message;
  }

  void Cancel(StepItem & item) {
    TruncateSequence(*state_, item.seq_id, std::min(item.position, state_->sequences[item.seq_id].Position()));
    item.done = true;
  }

  // A generating sequence's next token(s), into its pending tokens.
  void Choose(StepItem & item) {
    try {
      std::unique_ptr<Generation> & generation = state_->generations[item.seq_id];
      if (item.begin) {
        if (!state_->sequences[item.seq_id].pending.empty()) {
          throw Failure{code::kNative, "generate() needs the logits of the last token: evaluate text first"};
        }
        generation = std::make_unique<Generation>(*state_, item.seq_id, std::move(*item.begin));
        item.begin.reset();  // started: a further step continues it
        generation->Begin();
      }
      if (!generation) throw Failure{code::kNative, "no generation runs on sequence " + std::to_string(item.seq_id)};
      generation->Advance();
    } catch (const Failure & failure) {
      state_->generations.erase(item.seq_id);
      Fail(item, failure);
    }
  }

  // One llama_decode over every sequence's share of the batch; a sequence whose tokens do not all
  // fit (n_batch) continues at the next step. Nothing changes in a sequence unless the decode worked.
  void Decode() {
    struct Share {
      StepItem * item;
      std::vector<llama_token> tokens;  // pending first
      int32_t from_pending;
      int32_t first;                    // index in the batch
      bool complete;
    };
    const int32_t n_batch = static_cast<int32_t>(llama_n_batch(state_->context));
    llama_batch & batch = state_->batch;
    batch.n_tokens = 0;
    std::vector<Share> shares;
    // Generating sequences first (a token or a few each), then the evaluations, in order.
    for (const bool generating : {true, false}) {
      for (StepItem & item : items_) {
        if (item.error_code != nullptr || (item.kind == StepItem::Kind::kGenerate) != generating) continue;
        if (item.kind == StepItem::Kind::kCancel) continue;
        Sequence & sequence = state_->sequences[item.seq_id];
        std::vector<llama_token> tokens = sequence.pending;
        if (generating) {
          if (state_->generations.at(item.seq_id)->finished()) continue;  // the last tokens stay pending
        } else {
          const int32_t room = ContextRoom(*state_, sequence);
          if (static_cast<int32_t>(item.tokens.size()) > room) {
            Fail(item, ContextFull(*state_, item.tokens.size(), room));
            continue;
          }
          tokens.insert(tokens.end(), item.tokens.begin(), item.tokens.end());
        }
        const int32_t take = std::min(static_cast<int32_t>(tokens.size()), n_batch - batch.n_tokens);
        if (take <= 0) continue;
        const bool complete = take == static_cast<int32_t>(tokens.size());
        tokens.resize(take);
        Share share{&item, std::move(tokens), static_cast<int32_t>(std::min(sequence.pending.size(), static_cast<size_t>(take))),
                    batch.n_tokens, complete};
        for (int32_t i = 0; i < take; i++) {
          const int32_t k = batch.n_tokens++;
          batch.token[k] = share.tokens[i];
          batch.pos[k] = sequence.cached + i;
          batch.n_seq_id[k] = 1;
          batch.seq_id[k][0] = item.seq_id;
          batch.logits[k] = complete && i + 1 == take;
        }
        shares.push_back(std::move(share));
      }
    }
    if (batch.n_tokens == 0) return;

    LogCapture capture;
    const int32_t status = llama_decode(state_->context, batch);
    if (status != 0) {
      const Failure failure = DecodeFailure(*state_, status, capture);
      // The session's abort (dispose, abort()) stops the whole step: it rejects, and nothing changed.
      if (failure.code == code::kAborted) throw failure;
      for (Share & share : shares) {
        if (share.item->kind == StepItem::Kind::kGenerate && failure.code == code::kContextFull) {
          state_->generations.at(share.item->seq_id)->EndForContext();
        } else {
          if (share.item->kind == StepItem::Kind::kGenerate) state_->generations.erase(share.item->seq_id);
          Fail(*share.item, failure);
        }
      }
      return;
    }
    const int32_t n_vocab = llama_vocab_n_tokens(state_->model->vocab);
    for (Share & share : shares) {
      StepItem & item = *share.item;
      Sequence & sequence = state_->sequences[item.seq_id];
      const int32_t count = static_cast<int32_t>(share.tokens.size());
      sequence.pending.erase(sequence.pending.begin(), sequence.pending.begin() + share.from_pending);
      sequence.cached += count;
      item.decodes++;
      if (share.complete) {
        const float * logits = llama_get_logits_ith(state_->context, share.first + count - 1);
        sequence.logits.assign(logits, logits + n_vocab);
        sequence.logits_position = sequence.cached;
      }
      if (item.kind == StepItem::Kind::kEvaluate) {
        item.evaluated = count - share.from_pending;
        item.done = share.complete;
      }
    }
  }

  std::vector<StepItem> items_;
};

}  // namespace cospot

namespace cospot {

namespace {

// { maxTokens, temperature, topK, topP, seed, grammar, stop } (validated in lib/llama/session.ts).
GenerateOptions ParseGenerateOptions(Napi::Env env, Napi::Value value) {
  Napi::Object options = value.IsObject() ? value.As<Napi::Object>() : Napi::Object::New(env);
  GenerateOptions parsed;
  parsed.max_tokens = OptionOr<int32_t>(options, "maxTokens", parsed.max_tokens);
  parsed.temperature = static_cast<float>(OptionOr<double>(options, "temperature", parsed.temperature));
  parsed.top_k = OptionOr<int32_t>(options, "topK", parsed.top_k);
  parsed.top_p = static_cast<float>(OptionOr<double>(options, "topP", parsed.top_p));
  parsed.seed = OptionOr<uint32_t>(options, "seed", parsed.seed);
  parsed.grammar = OptionOr<std::string>(options, "grammar", "");
  Napi::Value stop = options.Get("stop");
  if (stop.IsArray()) {
    Napi::Array stops = stop.As<Napi::Array>();
    for (uint32_t i = 0; i < stops.Length(); i++) {
      if (!stops.Get(i).IsString()) throw Napi::TypeError::New(env, "stop must be an array of strings");
      parsed.stops.push_back(stops.Get(i).As<Napi::String>().Utf8Value());
    }
  }
  if (parsed.max_tokens < 1) throw Napi::RangeError::New(env, "maxTokens must be at least 1");
  return parsed;
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

}  // namespace

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

int Session::SequenceArg(Napi::Env env, const std::shared_ptr<SessionState> & state, Napi::Value value) const {
  const int32_t seq_id = value.IsNumber() ? value.As<Napi::Number>().Int32Value() : 0;
  if (seq_id < 0 || seq_id >= static_cast<int32_t>(state->sequences.size())) {
    throw Napi::RangeError::New(env, "sequence must be in [0, " + std::to_string(state->sequences.size()) + ")");
  }
  return seq_id;
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
  // lib/native/threads.ts gives the default (the physical cores); this one is for direct callers.
  const int32_t threads = OptionOr<int32_t>(options, "threads", GGML_DEFAULT_N_THREADS);
  params.n_threads = std::max(1, threads);
  params.n_threads_batch = params.n_threads;
  // One cache for all sequences: copying a prefix costs nothing, but every decode attends over the
  // cells of all of them. Without it, each sequence has contextSize / sequences cells of its own.
  params.kv_unified = OptionOr<bool>(options, "unifiedCache", true);
  params.no_perf = true;

  BeginCreate(env);
  auto * worker = new SessionCreateWorker(env, this, std::move(model), params);
  return worker->Start();
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
  const int seq_id = SequenceArg(env, state, info[1]);
  auto * worker = new EvaluateWorker(env, this, std::move(state), seq_id, std::move(tokens));
  return worker->Start();
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
  const int seq_id = SequenceArg(env, state, info[4]);
  auto * worker = new EvaluateImageWorker(env, this, std::move(state), seq_id, std::move(projector),
                                          std::vector<unsigned char>(pixels.Data(), pixels.Data() + pixels.ElementLength()),
                                          static_cast<uint32_t>(width), static_cast<uint32_t>(height));
  return worker->Start();
}

// generate({ maxTokens, temperature, topK, topP, seed, grammar, stop }, sequence, onText?) -> Promise<result>
Napi::Value Session::Generate(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<SessionState> state = Ready(env);
  GenerateOptions parsed = ParseGenerateOptions(env, info[0]);
  const int seq_id = SequenceArg(env, state, info[1]);
  auto * worker = new GenerateWorker(env, this, std::move(state), seq_id, std::move(parsed), info[2]);
  return worker->Start();
}

// step([{ sequence, tokens } | { sequence, generate: options | true } | { sequence, cancel: position }])
//   -> Promise<[{ position, done, evaluated, text, result? } | { position, error }]>
// One item per sequence at most.
Napi::Value Session::Step(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<SessionState> state = Ready(env);
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "items must be an array");
  Napi::Array array = info[0].As<Napi::Array>();
  std::vector<StepItem> items(array.Length());
  std::vector<bool> seen(state->sequences.size(), false);
  for (uint32_t i = 0; i < array.Length(); i++) {
    if (!array.Get(i).IsObject()) throw Napi::TypeError::New(env, "each item must be an object");
    Napi::Object item = array.Get(i).As<Napi::Object>();
    StepItem & parsed = items[i];
    parsed.seq_id = SequenceArg(env, state, item.Get("sequence"));
    if (seen[parsed.seq_id]) throw Napi::RangeError::New(env, "one item per sequence");
    seen[parsed.seq_id] = true;
    if (item.Has("tokens")) {
      parsed.tokens = TokenArg(env, *state, item.Get("tokens"));
    } else if (item.Has("generate")) {
      parsed.kind = StepItem::Kind::kGenerate;
      Napi::Value generate = item.Get("generate");
      if (generate.IsObject()) parsed.begin = ParseGenerateOptions(env, generate);
    } else if (item.Has("cancel")) {
      parsed.kind = StepItem::Kind::kCancel;
      parsed.position = std::max(0, OptionOr<int32_t>(item, "cancel", 0));
    } else {
      throw Napi::TypeError::New(env, "an item needs tokens, generate or cancel");
    }
  }
  auto * worker = new StepWorker(env, this, std::move(state), std::move(items));
  return worker->Start();
}

// position(sequence): the position when the last operation ended (one in flight changes it meanwhile).
Napi::Value Session::Position(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<SessionState> state = Handle(env);
  const int seq_id = SequenceArg(env, state, info[0]);
  if (!busy_) PublishPositions();
  return Napi::Number::New(env, positions_[seq_id]);
}

// truncate(position, sequence): forget everything from `position` on.
Napi::Value Session::Truncate(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<SessionState> state = Ready(env);
  const int seq_id = SequenceArg(env, state, info[1]);
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
  const int src = SequenceArg(env, state, info[0]);
  const int dst = SequenceArg(env, state, info[1]);
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
  const Sequence & sequence = state->sequences[SequenceArg(env, state, info[0])];
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
