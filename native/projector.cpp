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

class ProjectorLoadWorker : public PromiseWorker {
 public:
  ProjectorLoadWorker(Napi::Env env, Projector * owner, std::shared_ptr<ModelHandle> model, std::string path,
                      mtmd_context_params params)
      : PromiseWorker(env, "chain-of-spot:projector.load"),
        owner_(owner),
        model_(std::move(model)),
        path_(std::move(path)),
        params_(params) {
    owner_ref_ = Napi::Persistent(owner->Value());
  }

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
    handle_ = std::make_shared<ProjectorHandle>(context, model_);
    handle_->supports_vision = mtmd_support_vision(context);
    handle_->image_size = ReadImageSize(path_);
    if (handle_->supports_vision && handle_->image_size > 0) {
      handle_->tokens_per_image = CountImageTokens(context, handle_->image_size);
    }
  }

  Napi::Value Result(Napi::Env env) override {
    if (owner_->disposed_) {
      handle_.reset();
      ThrowCoded(env, code::kDisposed, "the projector was disposed while it was loading");
    }
    owner_->handle_ = std::move(handle_);
    return env.Undefined();
  }

 private:
  void OnWorkComplete(Napi::Env env, napi_status status) override {
    owner_->loading_ = false;
    PromiseWorker::OnWorkComplete(env, status);
  }

  Projector * owner_;
  Napi::ObjectReference owner_ref_;
  std::shared_ptr<ModelHandle> model_;
  std::string path_;
  mtmd_context_params params_;
  std::shared_ptr<ProjectorHandle> handle_;
};

Napi::Function Projector::Define(Napi::Env env) {
  return DefineClass(env, "Projector",
                     {
                         InstanceMethod<&Projector::Load>("load"),
                         InstanceMethod<&Projector::Info>("info"),
                         InstanceMethod<&Projector::Dispose>("dispose"),
                     });
}

Projector::Projector(const Napi::CallbackInfo & info) : Napi::ObjectWrap<Projector>(info) {}

Projector * Projector::FromValue(Napi::Env env, Napi::Value value) {
  return UnwrapInstance<Projector>(env, value, GetAddonData(env).projector_constructor, "Projector");
}

std::shared_ptr<ProjectorHandle> Projector::Handle(Napi::Env env) const {
  if (disposed_) ThrowCoded(env, code::kDisposed, "the projector has been disposed");
  if (!handle_) ThrowCoded(env, code::kProjectorLoad, "the projector is not loaded yet");
  return handle_;
}

// load(model, path, { gpu, threads, warmup }) -> Promise<void>
Napi::Value Projector::Load(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  if (disposed_) ThrowCoded(env, code::kDisposed, "the projector has been disposed");
  if (loading_ || handle_) throw Napi::Error::New(env, "load() may be called once per native Projector");
  std::shared_ptr<ModelHandle> model = Model::FromValue(env, info[0])->Handle(env);
  if (!info[1].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  Napi::Object options = info[2].IsObject() ? info[2].As<Napi::Object>() : Napi::Object::New(env);

  mtmd_context_params params = mtmd_context_params_default();
  params.use_gpu = OptionOr<bool>(options, "gpu", true);
  params.n_threads = OptionOr<int32_t>(options, "threads", params.n_threads);
  params.warmup = OptionOr<bool>(options, "warmup", true);
  params.print_timings = false;

  loading_ = true;
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

Napi::Value Projector::Dispose(const Napi::CallbackInfo & info) {
  disposed_ = true;
  handle_.reset();
  return info.Env().Undefined();
}

}  // namespace cospot
