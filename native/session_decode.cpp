// The decode primitives of a Session (see session_decode.h): tokens into the cache in batches of
// n_batch, pending tokens flushed, a sequence truncated or restored, llama_decode's failures mapped
// to coded ones.
#include "session_decode.h"

#include <algorithm>
#include <string>

#include "generation.h"  // generations.erase destroys one

namespace cospot {

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

void DecodeTokens(SessionState & state, int seq_id, const std::vector<llama_token> & tokens, bool want_logits,
                  int * decode_calls) {
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

void FlushPending(SessionState & state, int seq_id, bool want_logits, int * decode_calls) {
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

void TruncateSequence(SessionState & state, int seq_id, int32_t position) {
  const auto found = state.generations.find(seq_id);
  if (found != state.generations.end()) {
    const Sequence start = found->second->start();
    state.generations.erase(found);
    // Back where the generation began: the logits it began from predict again.
    if (position == start.Position()) return Restore(state, seq_id, start);
  }
  Sequence & sequence = state.sequences[seq_id];
  if (position >= sequence.cached) {
    sequence.pending.resize(position - sequence.cached);
  } else {
    llama_memory_seq_rm(llama_get_memory(state.context), seq_id, position, -1);
    sequence.Truncate(position);
  }
}

}  // namespace cospot
