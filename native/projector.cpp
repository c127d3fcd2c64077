#include "projector.h"

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "addon.h"
#include "gguf.h"
#include "logger.h"
#include "model.h"
#include "mtmd-helper.h"
#include "worker.h"

namespace cospot {

namespace {

// The square image side the encoder takes, from the mmproj's metadata (mtmd does not expose it).
int ReadImageSize(const std::string & path) {
  gguf_init_params params = {/*no_alloc =*/true, /*ctx =*/nullptr};
  gguf_context * gguf = gguf_init_from_file(path.c_str(), params);
  if (gguf == nullptr) return 0;
  int size = 0;
  int64_t key = gguf_find_key(gguf, "clip.vision.image_size");
  if (key >= 0 && gguf_get_kv_type(gguf, key) == GGUF_TYPE_UINT32) size = static_cast<int>(gguf_get_val_u32(gguf, key));
  gguf_free(gguf);
  return size;
}

// How many tokens one image becomes: tokenize a blank image of the encoder's size (no encoding).
int CountImageTokens(mtmd_context * context, int image_size) {
  std::vector<unsigned char> pixels(static_cast<size_t>(image_size) * image_size * 3, 0);
  mtmd_bitmap * bitmap = mtmd_bitmap_init(image_size, image_size, pixels.data());
  mtmd_input_chunks * chunks = mtmd_input_chunks_init();
  mtmd_input_text text = {mtmd_default_marker(), std::strlen(mtmd_default_marker()), false, true};
  const mtmd_bitmap * bitmaps[] = {bitmap};
  int tokens = 0;
  if (mtmd_tokenize(context, chunks, &text, bitmaps, 1) == 0) {
    for (size_t i = 0; i < mtmd_input_chunks_size(chunks); i++) {
      const mtmd_input_chunk * chunk = mtmd_input_chunks_get(chunks, i);
      if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_IMAGE) {
        tokens += static_cast<int>(mtmd_input_chunk_get_n_tokens(chunk));
      }
    }
  }
  mtmd_input_chunks_free(chunks);
  mtmd_bitmap_free(bitmap);
  return tokens;
}

}  // namespace

class ProjectorLoadWorker : public Projector::CreateWorker {
 public:
  ProjectorLoadWorker(Napi::Env env, Projector * owner, std::shared_ptr<ModelHandle> model, std::string path,
                      mtmd_context_params params)
      : CreateWorker(env, "chain-of-spot:projector.load", owner),
        model_(std::move(model)),
        path_(std::move(path)),
        params_(params) {}

 protected:
  void Run() override {
    std::error_code error;
    if (!std::filesystem::is_regular_file(path_, error)) {
      throw Failure{code::kProjectorLoad, "projector (mmproj) file not found or not a file: " + path_};
    }
    LogCapture capture;
    mtmd_context * context = mtmd_init_from_file(path_.c_str(), model_->model, params_);
    if (context == nullptr) {
      const bool mismatch = capture.text().find("mismatch between text model") != std::string::npos;
      if (mismatch) {
        throw Failure{code::kProjectorMismatch,
                      capture.Explain("the projector " + path_ + " does not fit this text model: its output width "
                                      "differs from the model's embedding width; use the mmproj file that was "
                                      "released with this model")};
      }
      throw Failure{code::kProjectorLoad, capture.Explain("llama.cpp could not load the projector " + path_)};
    }
    created_ = std::make_shared<ProjectorHandle>(context, model_);
    created_->supports_vision = mtmd_support_vision(context);
    created_->image_size = ReadImageSize(path_);
    if (created_->supports_vision && created_->image_size > 0) {
      created_->tokens_per_image = CountImageTokens(context, created_->image_size);
    }
  }

 private:
  std::shared_ptr<ModelHandle> model_;
  std::string path_;
  mtmd_context_params params_;
};

Napi::Function Projector::Define(Napi::Env env) {
  return DefineWith(env, {{"load", &Projector::Load}, {"info", &Projector::Info}});
}

// load(model, path, { gpu, threads, warmup, imageMinTokens, imageMaxTokens }) -> Promise<void>
Napi::Value Projector::Load(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  ThrowIfDisposed(env);
  std::shared_ptr<ModelHandle> model = Model::FromValue(env, info[0])->Handle(env);
  if (!info[1].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  Napi::Object options = info[2].IsObject() ? info[2].As<Napi::Object>() : Napi::Object::New(env);

  mtmd_context_params params = mtmd_context_params_default();
  params.use_gpu = OptionOr<bool>(options, "gpu", true);
  params.n_threads = OptionOr<int32_t>(options, "threads", params.n_threads);
  params.warmup = OptionOr<bool>(options, "warmup", true);
  // Limits on the tokens of one image, for encoders that choose their resolution (-1: the model's own).
  params.image_min_tokens = OptionOr<int32_t>(options, "imageMinTokens", -1);
  params.image_max_tokens = OptionOr<int32_t>(options, "imageMaxTokens", -1);
  params.print_timings = false;

  BeginCreate(env);
  auto * worker = new ProjectorLoadWorker(env, this, std::move(model), info[1].As<Napi::String>().Utf8Value(), params);
  return worker->Start();
}

Napi::Value Projector::Info(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<ProjectorHandle> handle = Handle(env);
  Napi::Object result = Napi::Object::New(env);
  result.Set("imageSize", handle->image_size);
  result.Set("tokensPerImage", handle->tokens_per_image);
  result.Set("supportsVision", handle->supports_vision);
  return result;
}

}  // namespace cospot
