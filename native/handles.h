// Owners of llama.cpp objects, shared between the JS wrapper objects and the workers that use
// them, so a wrapper that is disposed (or collected) while a worker still runs frees nothing
// under that worker's feet: the last owner frees.
#pragma once

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "llama.h"
#include "mtmd.h"

namespace cospot {

struct ModelHandle {
  explicit ModelHandle(llama_model * model);
  ~ModelHandle() { llama_model_free(model); }
  ModelHandle(const ModelHandle &) = delete;
  ModelHandle & operator=(const ModelHandle &) = delete;

  llama_model * const model;
  const llama_vocab * const vocab;
  // Ordinary tokens that spell one character: where a grammar's choices usually show first.
  std::vector<llama_token> single_char_tokens;
  // A token that spells each byte (an ordinary one where there is one, else a byte token), or
  // LLAMA_TOKEN_NULL: to spell any text exactly, one token a byte.
  std::array<llama_token, 256> byte_tokens;
};

struct ProjectorHandle {
  ProjectorHandle(mtmd_context * context, std::shared_ptr<ModelHandle> model)
      : context(context), model(std::move(model)) {}
  ~ProjectorHandle() { mtmd_free(context); }
  ProjectorHandle(const ProjectorHandle &) = delete;
  ProjectorHandle & operator=(const ProjectorHandle &) = delete;

  mtmd_context * const context;
  const std::shared_ptr<ModelHandle> model;  // the projector's output feeds this model
  std::mutex encode_mutex;  // one mtmd context encodes one image at a time
  int image_size = 0;
  int tokens_per_image = 0;
  bool supports_vision = false;
};

}  // namespace cospot
