// One generation on one sequence (generation.cpp): its samplers, grammar and streamed text, and
// the options it runs under. GenerateWorker runs one to its end; the batched step (session_step.cpp)
// advances several, each by one token (and the tokens its grammar forces) per step.
#pragma once

#include <napi.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "session.h"

namespace cospot {

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

struct GenerateOptions {
  int32_t max_tokens = 128;
  float temperature = 0.0f;
  int32_t top_k = 40;
  float top_p = 0.95f;
  uint32_t seed = 0;
  std::string grammar;
  std::vector<std::string> stops;
};

// { maxTokens, temperature, topK, topP, seed, grammar, stop } (validated in lib/llama/session.ts).
GenerateOptions ParseGenerateOptions(Napi::Env env, Napi::Value value);

// One generation on one sequence: its samplers, grammar and text. GenerateWorker runs one to its end;
// a step of parallel decoding (StepWorker) advances several by one token each, in one batch.
class Generation {
 public:
  Generation(SessionState & state, int seq_id, GenerateOptions options)
      : state_(state), seq_id_(seq_id), options_(std::move(options)), text_(options_.stops) {}

  // Starts from the sequence's current logits. Throws Failure.
  void Begin();

  // Chooses the next token from the logits, then the tokens the grammar forces after it (they need
  // no sampling): all join the sequence's pending tokens, for the caller's next batch.
  void Advance();

  bool finished() const { return !finish_reason_.empty(); }

  // The sequence as it was when Begin() started the generation (its position and logits).
  const Sequence & start() const { return start_; }

  // No free cell in the cache the sequences share: end with what was generated (and streamed).
  void EndForContext() { finish_reason_ = "context"; }

  // After the last Advance: a stop string leaves the tokens and the sequence.
  void End();

  // The text not yet streamed that is safe to stream now (all of it when `final`).
  std::string TakeEmittable(bool final) { return text_.TakeEmittable(final); }

  // { tokens, text, finishReason, sampledTokens, decodeCalls, position, ms }, on the JS thread.
  Napi::Object Result(Napi::Env env, int decode_calls, double ms) const;

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

  void MakeSamplers(const llama_vocab * vocab);

  // The next token from the last logits; the grammar, if any, masks first.
  llama_token SampleToken();

  // The token the grammar forces next, or LLAMA_TOKEN_NULL when it leaves a choice. Several
  // allowed tokens that all spell the same text (`.` and the byte token <0x2E>, say) are no choice:
  // then the ordinary token is taken, as a model writes it. A grammar that is complete forces the end.
  llama_token ForcedToken();

  // How many different texts (1, or 2 meaning "more than one") the grammar allows among `tokens`;
  // `forced` receives the token for a single text, preferring an ordinary token to a byte token.
  size_t AllowedTextCount(const std::vector<llama_token> & tokens, std::vector<llama_token_data> & probe,
                          llama_token * forced = nullptr);

  // Records a chosen token: ends on end-of-generation, a stop string, the token limit or a full context.
  void Take(const llama_vocab * vocab, llama_token token, bool sampled);

  // A stop string ended generation: the sequence keeps exactly the text returned, not the stop
  // string nor what followed it. Tokens wholly before the stop stay; the part of a token that
  // reaches into the stop is spelled again by tokens that end where the text does.
  void CutAtStop(const llama_vocab * vocab);

  // Tokens whose pieces spell exactly `text`: the tokenizer's when they spell it back (it may add a
  // leading space), else one token a byte. False when some byte has no token.
  bool Spell(const llama_vocab * vocab, const std::string & text, std::vector<llama_token> & tokens) const;

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

}  // namespace cospot
