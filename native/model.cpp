#include "model.h"

#include <filesystem>
#include <string>
#include <vector>

#include "addon.h"
#include "logger.h"
#include "worker.h"

namespace cospot {

namespace {

// Progress reaches JS through a thread-safe function; loading is cancelled by the abort flag.
struct LoadProgress {
  Napi::ThreadSafeFunction on_progress;
  bool has_callback = false;
  std::shared_ptr<std::atomic<bool>> abort;
};

bool OnLoadProgress(float progress, void * user_data) {
  auto * state = static_cast<LoadProgress *>(user_data);
  if (state->has_callback) {
    state->on_progress.NonBlockingCall(new float(progress), [](Napi::Env env, Napi::Function fn, float * value) {
      fn.Call({Napi::Number::New(env, *value)});
      delete value;
    });
  }
  return !state->abort->load();
}

std::string MetaString(const llama_model * model, const char * key) {
  std::vector<char> buffer(256);
  int32_t length = llama_model_meta_val_str(model, key, buffer.data(), buffer.size());
  if (length < 0) return "";
  if (static_cast<size_t>(length) >= buffer.size()) {
    buffer.resize(length + 1);
    llama_model_meta_val_str(model, key, buffer.data(), buffer.size());
  }
  return std::string(buffer.data(), length);
}

}  // namespace

ModelHandle::ModelHandle(llama_model * loaded) : model(loaded), vocab(llama_model_get_vocab(loaded)) {
  char piece[8];
  for (llama_token id = 0; id < llama_vocab_n_tokens(vocab); id++) {
    if (llama_vocab_get_attr(vocab, id) & (LLAMA_TOKEN_ATTR_BYTE | LLAMA_TOKEN_ATTR_CONTROL)) continue;
    if (llama_token_to_piece(vocab, id, piece, sizeof(piece), 0, false) == 1) single_char_tokens.push_back(id);
  }
}

class ModelLoadWorker : public PromiseWorker {
 public:
  ModelLoadWorker(Napi::Env env, Model * owner, std::string path, llama_model_params params, Napi::Value on_progress)
      : PromiseWorker(env, "chain-of-spot:model.load"), owner_(owner), path_(std::move(path)), params_(params) {
    owner_ref_ = Napi::Persistent(owner->Value());
    progress_.abort = owner->abort_;
    if (on_progress.IsFunction()) {
      progress_.on_progress =
          Napi::ThreadSafeFunction::New(env, on_progress.As<Napi::Function>(), "chain-of-spot:progress", 0, 1);
      progress_.has_callback = true;
    }
    params_.progress_callback = OnLoadProgress;
    params_.progress_callback_user_data = &progress_;
  }

  ~ModelLoadWorker() override {
    if (progress_.has_callback) progress_.on_progress.Release();
  }

 protected:
  void Run() override {
    std::error_code error;
    if (!std::filesystem::exists(path_, error)) {
      throw Failure{code::kModelLoad, "model file not found: " + path_ + "; check the path"};
    }
    if (!std::filesystem::is_regular_file(path_, error)) {
      throw Failure{code::kModelLoad, "model path is not a file: " + path_};
    }
    LogCapture capture;
    llama_model * model = llama_model_load_from_file(path_.c_str(), params_);
    if (model == nullptr) {
      if (progress_.abort->load()) throw Failure{code::kAborted, "model loading was aborted"};
      throw Failure{code::kModelLoad, capture.Explain("llama.cpp could not load the model " + path_)};
    }
    handle_ = std::make_shared<ModelHandle>(model);
  }

  Napi::Value Result(Napi::Env env) override {
    owner_->loading_ = false;
    if (owner_->disposed_) {
      handle_.reset();  // disposed while loading: free at once
      ThrowCoded(env, code::kDisposed, "the model was disposed while it was loading");
    }
    owner_->handle_ = std::move(handle_);
    return env.Undefined();
  }

 private:
  void OnWorkComplete(Napi::Env env, napi_status status) override {
    owner_->loading_ = false;
    PromiseWorker::OnWorkComplete(env, status);
  }

  Model * owner_;
  Napi::ObjectReference owner_ref_;  // keeps the JS object (and so owner_) alive while loading
  std::string path_;
  llama_model_params params_;
  LoadProgress progress_;
  std::shared_ptr<ModelHandle> handle_;
};

Napi::Function Model::Define(Napi::Env env) {
  return DefineClass(env, "Model",
                     {
                         InstanceMethod<&Model::Load>("load"),
                         InstanceMethod<&Model::AbortLoad>("abortLoad"),
                         InstanceMethod<&Model::Info>("info"),
                         InstanceMethod<&Model::Tokenize>("tokenize"),
                         InstanceMethod<&Model::Detokenize>("detokenize"),
                         InstanceMethod<&Model::Dispose>("dispose"),
                     });
}

Model::Model(const Napi::CallbackInfo & info) : Napi::ObjectWrap<Model>(info) {}

Model * Model::FromValue(Napi::Env env, Napi::Value value) {
  return UnwrapInstance<Model>(env, value, GetAddonData(env).model_constructor, "Model");
}

std::shared_ptr<ModelHandle> Model::Handle(Napi::Env env) const {
  if (disposed_) ThrowCoded(env, code::kDisposed, "the model has been disposed");
  if (!handle_) ThrowCoded(env, code::kModelLoad, "the model is not loaded yet");
  return handle_;
}

// load(path, { gpuLayers, mmap, repack }, onProgress?) -> Promise<void>
Napi::Value Model::Load(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  if (disposed_) ThrowCoded(env, code::kDisposed, "the model has been disposed");
  if (loading_ || handle_) throw Napi::Error::New(env, "load() may be called once per native Model");
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  Napi::Object options = info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);

  llama_model_params params = llama_model_default_params();
  params.n_gpu_layers = OptionOr<int32_t>(options, "gpuLayers", 0);
  params.load_mode = OptionOr<bool>(options, "mmap", true) ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
  params.use_extra_bufts = OptionOr<bool>(options, "repack", true);

  abort_->store(false);
  loading_ = true;
  auto * worker = new ModelLoadWorker(env, this, info[0].As<Napi::String>().Utf8Value(), params, info[2]);
  return worker->Start();
}

Napi::Value Model::AbortLoad(const Napi::CallbackInfo & info) {
  abort_->store(true);
  return info.Env().Undefined();
}

Napi::Value Model::Info(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<ModelHandle> handle = Handle(env);
  const llama_model * model = handle->model;
  Napi::Object result = Napi::Object::New(env);
  result.Set("architecture", MetaString(model, "general.architecture"));
  result.Set("name", MetaString(model, "general.name"));
  char description[256];
  llama_model_desc(model, description, sizeof(description));
  result.Set("description", std::string(description));
  result.Set("trainingContextSize", llama_model_n_ctx_train(model));
  result.Set("embeddingSize", llama_model_n_embd(model));
  result.Set("vocabSize", llama_vocab_n_tokens(handle->vocab));
  result.Set("parameters", static_cast<double>(llama_model_n_params(model)));
  result.Set("sizeBytes", static_cast<double>(llama_model_size(model)));
  const char * chat_template = llama_model_chat_template(model, nullptr);
  result.Set("chatTemplate", chat_template ? Napi::Value(Napi::String::New(env, chat_template)) : env.Null());
  result.Set("bos", llama_vocab_bos(handle->vocab));
  result.Set("eos", llama_vocab_eos(handle->vocab));
  return result;
}

// tokenize(text, addSpecial, parseSpecial) -> Int32Array
Napi::Value Model::Tokenize(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<ModelHandle> handle = Handle(env);
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "text must be a string");
  std::string text = info[0].As<Napi::String>().Utf8Value();
  bool add_special = info[1].ToBoolean();
  bool parse_special = info[2].ToBoolean();
  if (text.size() > static_cast<size_t>(INT32_MAX / 2)) throw Napi::RangeError::New(env, "text is too long");

  std::vector<llama_token> tokens(text.size() + 2);
  int32_t n = llama_tokenize(handle->vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                             static_cast<int32_t>(tokens.size()), add_special, parse_special);
  if (n < 0) {
    tokens.resize(-n);
    n = llama_tokenize(handle->vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                       static_cast<int32_t>(tokens.size()), add_special, parse_special);
  }
  if (n < 0) ThrowCoded(env, code::kNative, "tokenization failed");
  Napi::Int32Array result = Napi::Int32Array::New(env, n);
  std::copy(tokens.begin(), tokens.begin() + n, result.Data());
  return result;
}

// detokenize(tokens: Int32Array, renderSpecial) -> string
Napi::Value Model::Detokenize(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  std::shared_ptr<ModelHandle> handle = Handle(env);
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    throw Napi::TypeError::New(env, "tokens must be an Int32Array");
  }
  Napi::Int32Array tokens = info[0].As<Napi::Int32Array>();
  bool render_special = info[1].ToBoolean();
  const int32_t n_vocab = llama_vocab_n_tokens(handle->vocab);
  for (size_t i = 0; i < tokens.ElementLength(); i++) {
    if (tokens[i] < 0 || tokens[i] >= n_vocab) throw Napi::RangeError::New(env, "token id out of range");
  }
  std::string text(tokens.ElementLength() * 8 + 16, '\0');
  int32_t n = llama_detokenize(handle->vocab, tokens.Data(), static_cast<int32_t>(tokens.ElementLength()), text.data(),
                               static_cast<int32_t>(text.size()), false, render_special);
  if (n < 0) {
    text.resize(-n);
    n = llama_detokenize(handle->vocab, tokens.Data(), static_cast<int32_t>(tokens.ElementLength()), text.data(),
                         static_cast<int32_t>(text.size()), false, render_special);
  }
  if (n < 0) ThrowCoded(env, code::kNative, "detokenization failed");
  text.resize(n);
  return Napi::String::New(env, text);
}

Napi::Value Model::Dispose(const Napi::CallbackInfo & info) {
  disposed_ = true;
  abort_->store(true);  // a load in flight stops at its next progress report
  handle_.reset();  // sessions and projectors keep their own reference until they go
  return info.Env().Undefined();
}

}  // namespace cospot
