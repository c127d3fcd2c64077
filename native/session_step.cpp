// The batched step of parallel decoding (Session.step): the items it takes, their parsing, and
// StepWorker, which advances every sequence's work in one llama_decode per step.
#include <algorithm>
#include <optional>
#include <string>

#include "logger.h"
#include "model.h"
#include "session_decode.h"
#include "session_internal.h"

namespace cospot {

namespace {

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
  bool waiting = false;   // kGenerate: its tokens did not all fit the last batch, it chose none this round
  std::string text;       // kGenerate: text to stream
  std::unique_ptr<Generation> ended;  // kGenerate: the generation that ended, for its result
};

// Steps of parallel decoding: every generating sequence chooses its next token(s) and every
// evaluating one contributes its next tokens, and all of them go to llama.cpp as one batch, one
// llama_decode, as llama-server schedules its slots. llama.cpp computes it in one pass (ubatch) when
// the sequences share the cache (unifiedCache; n_ubatch is n_batch). With a part of the cache per
// sequence it splits it (llama_batch_allocr::split_equal): each ubatch takes as many tokens from each
// of a run of consecutive sequence ids, so sequences with different token counts (a prompt chunk
// beside generations, a grammar's forced run) or out of id order take more passes. Generations live
// in the session between steps. While every item is a generation that goes on, further steps run
// here without a round trip through JS (that costs more than a small model's step), until one
// ends, new work waits (Session.interruptStep) or kStepsFor has passed, so that streamed text keeps
// flowing.
class StepWorker : public SessionWorker {
 public:
  StepWorker(Napi::Env env, Session * owner, std::shared_ptr<SessionState> state, std::vector<StepItem> items)
      : SessionWorker(env, "chain-of-spot:session.step", owner, std::move(state), 0), items_(std::move(items)) {}

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
    // Cleared as the step returns, not as it starts: an interrupt made while it waited in the queue
    // (its items made already) still makes it return after one decode.
    state_->step_interrupt.store(false);
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

  // A generation that fails puts its sequence back where it began (position and logits).
  void FailGeneration(StepItem & item, const Failure & failure) {
    const auto found = state_->generations.find(item.seq_id);
    if (found != state_->generations.end()) TruncateSequence(*state_, item.seq_id, found->second->start().Position());
    Fail(item, failure);
  }

  void Cancel(StepItem & item) {
    TruncateSequence(*state_, item.seq_id, std::min(item.position, state_->sequences[item.seq_id].Position()));
    item.done = true;
  }

  // A generating sequence's next token(s), into its pending tokens: chosen on the logits of the
  // tokens before them, so not while some of those still wait for a batch (they go first in this one).
  void Choose(StepItem & item) {
    try {
      if (item.begin) {
        state_->generations.erase(item.seq_id);  // a new generation replaces one left running
        // After a generation its last tokens are pending: decode them first, as Session.generate does.
        FlushPending(*state_, item.seq_id, true, &item.decodes);
        auto generation = std::make_unique<Generation>(*state_, item.seq_id, std::move(*item.begin));
        item.begin.reset();  // started: a further step continues it
        generation->Begin();
        state_->generations[item.seq_id] = std::move(generation);
      }
      const auto found = state_->generations.find(item.seq_id);
      if (found == state_->generations.end()) {
        throw Failure{code::kNative, "no generation runs on sequence " + std::to_string(item.seq_id)};
      }
      item.waiting = !state_->sequences[item.seq_id].LogitsCurrent();
      if (!item.waiting) found->second->Advance();
    } catch (const Failure & failure) {
      FailGeneration(item, failure);
    }
  }

  // One llama_decode over every sequence's share of the batch; a sequence whose tokens do not all
  // fit (n_batch) continues at the next step, and gets no logits in this one. Nothing changes in a
  // sequence unless the decode worked.
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
    // Generating sequences first (a token or a few each): those whose tokens did not all fit the
    // last batch before the others, so that none waits long behind them. Then the evaluations, in order.
    enum class Pass { kWaiting, kGenerating, kEvaluating, kNone };
    const auto pass_of = [](const StepItem & item) {
      if (item.error_code != nullptr || item.kind == StepItem::Kind::kCancel) return Pass::kNone;
      if (item.kind == StepItem::Kind::kEvaluate) return Pass::kEvaluating;
      return item.waiting ? Pass::kWaiting : Pass::kGenerating;
    };
    for (const Pass pass : {Pass::kWaiting, Pass::kGenerating, Pass::kEvaluating}) {
      for (StepItem & item : items_) {
        if (pass_of(item) != pass) continue;
        Sequence & sequence = state_->sequences[item.seq_id];
        std::vector<llama_token> tokens = sequence.pending;
        if (pass != Pass::kEvaluating) {
          if (state_->generations.at(item.seq_id)->finished()) continue;  // the last tokens stay pending
        } else {
          const int32_t room = ContextRoom(*state_, sequence);
          if (static_cast<int32_t>(item.tokens.size()) > room) {
            Fail(item, ContextFull(*state_, item.tokens.size(), room));
            continue;
          }
          tokens.insert(tokens.end(), item.tokens.begin(), item.tokens.end());
          if (tokens.empty()) {
            item.done = true;  // nothing to evaluate: the sequence stays as it is
            continue;
          }
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
      // llama.cpp removes the cells of the ubatch that failed, not those of the ubatches before it.
      for (const Share & share : shares) {
        const int seq_id = share.item->seq_id;
        llama_memory_seq_rm(llama_get_memory(state_->context), seq_id, state_->sequences[seq_id].cached, -1);
      }
      // The session's abort (dispose, abort()) stops the whole step: it rejects, and nothing changed.
      if (failure.code == code::kAborted) throw failure;
      for (Share & share : shares) {
        if (share.item->kind == StepItem::Kind::kGenerate && failure.code == code::kContextFull) {
          state_->generations.at(share.item->seq_id)->EndForContext();
        } else if (share.item->kind == StepItem::Kind::kGenerate) {
          FailGeneration(*share.item, failure);
        } else {
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

}  // namespace

Napi::Value StartStep(Napi::Env env, Session * owner, std::shared_ptr<SessionState> state, Napi::Value value) {
  if (!value.IsArray()) throw Napi::TypeError::New(env, "items must be an array");
  Napi::Array array = value.As<Napi::Array>();
  std::vector<StepItem> items(array.Length());
  std::vector<bool> seen(state->sequences.size(), false);
  for (uint32_t i = 0; i < array.Length(); i++) {
    if (!array.Get(i).IsObject()) throw Napi::TypeError::New(env, "each item must be an object");
    Napi::Object item = array.Get(i).As<Napi::Object>();
    StepItem & parsed = items[i];
    parsed.seq_id = SequenceArg(env, *state, item.Get("sequence"));
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
  return (new StepWorker(env, owner, std::move(state), std::move(items)))->Start();
}

}  // namespace cospot
