// One generation on one sequence (see generation.h): sampling, the grammar's forced tokens, stop
// strings and the cut at them, the result; and the parsing of its options.
#include "generation.h"

#include <algorithm>
#include <cmath>

#include "logger.h"
#include "session_decode.h"

namespace cospot {

namespace {

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

void Generation::Begin() {
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

void Generation::Advance() {
  const llama_vocab * vocab = state_.model->vocab;
  Take(vocab, SampleToken(), true);
  while (finish_reason_.empty() && samplers_.grammar) {
    llama_token forced = ForcedToken();
    if (forced == LLAMA_TOKEN_NULL) break;
    Take(vocab, forced, false);
  }
}

void Generation::End() {
  if (finish_reason_ == "stop") CutAtStop(state_.model->vocab);
}

Napi::Object Generation::Result(Napi::Env env, int decode_calls, double ms) const {
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

void Generation::MakeSamplers(const llama_vocab * vocab) {
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

llama_token Generation::SampleToken() {
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

llama_token Generation::ForcedToken() {
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

size_t Generation::AllowedTextCount(const std::vector<llama_token> & tokens, std::vector<llama_token_data> & probe,
                                     llama_token * forced) {
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

void Generation::Take(const llama_vocab * vocab, llama_token token, bool sampled) {
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

void Generation::CutAtStop(const llama_vocab * vocab) {
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

bool Generation::Spell(const llama_vocab * vocab, const std::string & text, std::vector<llama_token> & tokens) const {
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

}  // namespace cospot
