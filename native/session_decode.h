// The decode primitives of a Session (session_decode.cpp): putting tokens into a sequence's part
// of the KV cache, taking them out again, and the failures of doing so. Every worker and the
// batched step decode through these.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "logger.h"
#include "session.h"
#include "worker.h"

namespace cospot {

using Clock = std::chrono::steady_clock;

inline double MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Puts a sequence back as it was before a failed or aborted operation (`saved` is its copy).
void Restore(SessionState & state, int seq_id, const Sequence & saved);

void ThrowIfAborted(const SessionState & state);

// Cells left for the sequence in its context (llama_n_ctx_seq).
int32_t ContextRoom(const SessionState & state, const Sequence & sequence);

Failure ContextFull(const SessionState & state, int32_t needed, int32_t room);

// What a llama_decode status (with what llama.cpp logged meanwhile) means for the caller.
Failure DecodeFailure(const SessionState & state, int32_t status, const LogCapture & capture);

// Decodes tokens at the end of a sequence, in batches of n_batch; the logits of the last token are
// kept when asked for. Throws Failure; the caller restores its checkpoint.
void DecodeTokens(SessionState & state, int seq_id, const std::vector<llama_token> & tokens, bool want_logits,
                  int * decode_calls = nullptr);

// Moves a sequence's pending tokens into the cache. On failure, what was not decoded stays pending.
void FlushPending(SessionState & state, int seq_id, bool want_logits, int * decode_calls = nullptr);

// Forgets a sequence from `position` on (at most its position): its generation, if one runs, its
// pending tokens past there, and its cells in the cache. Truncated to where its generation began,
// the sequence is as it was then, logits too.
void TruncateSequence(SessionState & state, int seq_id, int32_t position);

}  // namespace cospot
