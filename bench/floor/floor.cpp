// cos-floor: the floor of the chain-of-spot benchmark. It replays the work of a Chain-of-Spot
// question with llama.cpp's own API and nothing on top (no Node, no N-API, no worker threads), from
// a plan the benchmark recorded: the token ids of each evaluate call, the prepared 336x336 RGB
// images, and how many tokens each turn generated.
//
// Plain llama.cpp has no grammar-forced batching: "generate N" samples greedily and decodes one
// token per llama_decode, N tokens costing N-1 decodes; the last one is decoded with what comes
// next, as in the addon (which holds generated tokens pending until the next evaluation).
//
// Protocol (stdin and stdout, one JSON object a line): the first line configures and loads
//   {"model", "mmproj", "nCtx", "nBatch", "threads", "gpuLayers", "projectorGpu"}
// and is answered {"loadMs"}; every further line is a plan {"steps": [...]} with steps
//   {"op": "clear"}
//   {"op": "truncate", "turn": 1, "position": 0}
//   {"op": "tokens", "turn": 1, "ids": [...]}
//   {"op": "image", "turn": 1, "path": "x.rgb", "width": 336, "height": 336}
//   {"op": "generate", "turn": 1, "n": 24}
// answered {"steps": [{"op", "turn", "ms", "tokens", "decodes", ...}], "totalMs", "peakRssKb"}; a
// generate step also answers "position", the sequence's length at the end of its turn (pending
// token included, as the addon's position()), which the benchmark checks against the addon's.
// Every plan is replayed from an empty cache, whatever the last one left there.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "llama.h"
#include "mtmd-helper.h"
#include "mtmd.h"

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double MsSince(Clock::time_point start) { return std::chrono::duration<double, std::milli>(Clock::now() - start).count(); }

// Errors only: the benchmark reads stdout, and llama.cpp's info logs would cost time of their own.
void QuietLog(ggml_log_level level, const char * text, void *) {
  if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

long PeakRssKb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

class Floor {
 public:
  explicit Floor(const json & config) {
    llama_model_params mparams = llama_model_default_params();
    mparams.n_gpu_layers = config.value("gpuLayers", 0);
    model_ = llama_model_load_from_file(config.at("model").get<std::string>().c_str(), mparams);
    if (model_ == nullptr) throw std::runtime_error("could not load the model");

    // As the addon's Session: n_ubatch = n_batch, one sequence, defaults otherwise.
    llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = config.at("nCtx").get<uint32_t>();
    cparams.n_batch = config.at("nBatch").get<uint32_t>();
    cparams.n_ubatch = cparams.n_batch;
    cparams.n_seq_max = 1;
    cparams.n_threads = config.at("threads").get<int32_t>();
    cparams.n_threads_batch = cparams.n_threads;
    cparams.no_perf = true;
    context_ = llama_init_from_model(model_, cparams);
    if (context_ == nullptr) throw std::runtime_error("could not create the context");

    mtmd_context_params pparams = mtmd_context_params_default();
    pparams.use_gpu = config.value("projectorGpu", true);
    pparams.n_threads = cparams.n_threads;
    pparams.warmup = true;
    pparams.print_timings = false;
    mtmd_ = mtmd_init_from_file(config.at("mmproj").get<std::string>().c_str(), model_, pparams);
    if (mtmd_ == nullptr) throw std::runtime_error("could not load the projector");

    sampler_ = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(sampler_, llama_sampler_init_greedy());
    batch_ = llama_batch_init(static_cast<int32_t>(cparams.n_batch), 0, 1);

    // Warm up as llama.cpp's tools do (and the JS workers): one decode of BOS and EOS touches every
    // weight's page. The image encoder warmed up in mtmd_init_from_file.
    Decode({llama_vocab_bos(llama_model_get_vocab(model_)), llama_vocab_eos(llama_model_get_vocab(model_))}, false);
    Clear();
  }

  ~Floor() {
    llama_batch_free(batch_);
    llama_sampler_free(sampler_);
    mtmd_free(mtmd_);
    llama_free(context_);
    llama_model_free(model_);
  }

  json Run(const json & plan) {
    Clear();  // not timed: the addon's run starts on a cleared session too
    json steps = json::array();
    const auto start = Clock::now();
    for (const json & step : plan.at("steps")) {
      const std::string op = step.at("op");
      json result = {{"op", op}, {"turn", step.value("turn", 0)}};
      const auto step_start = Clock::now();
      if (op == "clear") {
        Clear();
      } else if (op == "truncate") {
        Truncate(step.at("position").get<llama_pos>());
      } else if (op == "tokens") {
        std::vector<llama_token> tokens = pending_;
        pending_.clear();
        for (const json & id : step.at("ids")) tokens.push_back(id.get<llama_token>());
        result["tokens"] = step.at("ids").size();  // as the addon counts: the pending token is the turn's
        result["decodes"] = Decode(tokens, true);
      } else if (op == "image") {
        Image(step, result);
      } else if (op == "generate") {
        Generate(step.at("n").get<int>(), result);
      } else {
        throw std::runtime_error("unknown step " + op);
      }
      result["ms"] = MsSince(step_start);
      steps.push_back(result);
    }
    return {{"steps", steps}, {"totalMs", MsSince(start)}, {"peakRssKb", PeakRssKb()}};
  }

 private:
  // As the addon's clear: the cells freed, their data left (it is overwritten before it is read).
  void Clear() {
    llama_memory_clear(llama_get_memory(context_), false);
    position_ = 0;
    pending_.clear();
  }

  // As the addon's truncate: the sequence kept up to `position` (at most its length); a cut within
  // the pending tokens leaves the cache alone.
  void Truncate(llama_pos position) {
    position = std::min(position, position_ + static_cast<llama_pos>(pending_.size()));
    if (position >= position_) {
      pending_.resize(static_cast<size_t>(position - position_));
    } else {
      llama_memory_seq_rm(llama_get_memory(context_), 0, position, -1);
      position_ = position;
      pending_.clear();
    }
  }

  // Decodes tokens at the end of the sequence in n_batch batches; logits of the last one when asked.
  int Decode(const std::vector<llama_token> & tokens, bool logits) {
    const size_t n_batch = llama_n_batch(context_);
    int decodes = 0;
    for (size_t start = 0; start < tokens.size(); start += n_batch) {
      const size_t end = std::min(tokens.size(), start + n_batch);
      batch_.n_tokens = 0;
      for (size_t i = start; i < end; i++) {
        const int32_t k = batch_.n_tokens++;
        batch_.token[k] = tokens[i];
        batch_.pos[k] = position_++;
        batch_.n_seq_id[k] = 1;
        batch_.seq_id[k][0] = 0;
        batch_.logits[k] = logits && i + 1 == tokens.size();
      }
      if (llama_decode(context_, batch_) != 0) throw std::runtime_error("llama_decode failed");
      decodes++;
    }
    return decodes;
  }

  void Image(const json & step, json & result) {
    const uint32_t width = step.at("width");
    const uint32_t height = step.at("height");
    std::ifstream file(step.at("path").get<std::string>(), std::ios::binary);
    std::vector<unsigned char> pixels((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (pixels.size() != static_cast<size_t>(width) * height * 3) throw std::runtime_error("image file has the wrong size");

    // A generated token still pending goes in first, alone, as the addon's FlushPending does.
    const auto start = Clock::now();
    if (!pending_.empty()) {
      Decode(pending_, false);
      pending_.clear();
    }
    mtmd_bitmap * bitmap = mtmd_bitmap_init(width, height, pixels.data());
    mtmd_input_chunks * chunks = mtmd_input_chunks_init();
    mtmd_input_text text = {mtmd_default_marker(), std::strlen(mtmd_default_marker()), false, true};
    const mtmd_bitmap * bitmaps[] = {bitmap};
    if (mtmd_tokenize(mtmd_, chunks, &text, bitmaps, 1) != 0) throw std::runtime_error("mtmd_tokenize failed");
    result["preprocessMs"] = MsSince(start);
    double encode_ms = 0;
    double decode_ms = 0;
    size_t image_tokens = 0;
    for (size_t i = 0; i < mtmd_input_chunks_size(chunks); i++) {
      const mtmd_input_chunk * chunk = mtmd_input_chunks_get(chunks, i);
      if (mtmd_input_chunk_get_type(chunk) != MTMD_INPUT_CHUNK_TYPE_IMAGE) continue;  // LLaVA: the image alone
      auto stage = Clock::now();
      if (mtmd_encode_chunk(mtmd_, chunk) != 0) throw std::runtime_error("mtmd_encode_chunk failed");
      encode_ms += MsSince(stage);
      stage = Clock::now();
      llama_pos new_position = 0;
      if (mtmd_helper_decode_image_chunk(mtmd_, context_, chunk, mtmd_get_output_embd(mtmd_), position_, 0,
                                         static_cast<int32_t>(llama_n_batch(context_)), &new_position, nullptr,
                                         nullptr) != 0) {
        throw std::runtime_error("mtmd_helper_decode_image_chunk failed");
      }
      decode_ms += MsSince(stage);
      image_tokens += mtmd_input_chunk_get_n_tokens(chunk);
      position_ = new_position;
    }
    mtmd_input_chunks_free(chunks);
    mtmd_bitmap_free(bitmap);
    result["encodeMs"] = encode_ms;
    result["decodeMs"] = decode_ms;
    result["tokens"] = image_tokens;
  }

  void Generate(int n, json & result) {
    llama_sampler_reset(sampler_);
    int decodes = 0;
    for (int i = 0; i < n; i++) {
      const llama_token token = llama_sampler_sample(sampler_, context_, -1);
      llama_sampler_accept(sampler_, token);
      if (i + 1 == n) {
        pending_.push_back(token);
      } else {
        decodes += Decode({token}, true);
      }
    }
    result["tokens"] = n;
    result["decodes"] = decodes;
    result["position"] = position_ + static_cast<llama_pos>(pending_.size());
  }

  llama_model * model_ = nullptr;
  llama_context * context_ = nullptr;
  mtmd_context * mtmd_ = nullptr;
  llama_sampler * sampler_ = nullptr;
  llama_batch batch_{};
  llama_pos position_ = 0;
  std::vector<llama_token> pending_;
};

}  // namespace

int main() {
  llama_log_set(QuietLog, nullptr);
  mtmd_log_set(QuietLog, nullptr);
  llama_backend_init();
  try {
    std::string line;
    if (!std::getline(std::cin, line)) return 1;
    const auto start = Clock::now();
    Floor floor(json::parse(line));
    std::cout << json{{"loadMs", MsSince(start)}}.dump() << std::endl;
    while (std::getline(std::cin, line)) {
      if (line.empty()) continue;
      std::cout << floor.Run(json::parse(line)).dump() << std::endl;
    }
  } catch (const std::exception & error) {
    std::cout << json{{"error", error.what()}}.dump() << std::endl;
    llama_backend_free();
    return 1;
  }
  llama_backend_free();
  return 0;
}
