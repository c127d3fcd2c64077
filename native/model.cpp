#include "model.h"

#include <filesystem>
#include <string>
#include <vector>

#include "addon.h"
#include "ggml-rpc.h"
#include "logger.h"
#include "worker.h"

namespace cospot {

namespace {

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
  byte_tokens.fill(LLAMA_TOKEN_NULL);
  char piece[8];
  for (llama_token id = 0; id < llama_vocab_n_tokens(vocab); id++) {
    const llama_token_attr attr = llama_vocab_get_attr(vocab, id);
    if (attr & LLAMA_TOKEN_ATTR_CONTROL) continue;
    if (llama_token_to_piece(vocab, id, piece, sizeof(piece), 0, false) != 1) continue;
    const bool byte_token = attr & LLAMA_TOKEN_ATTR_BYTE;
    if (!byte_token) single_char_tokens.push_back(id);
    llama_token & spelling = byte_tokens[static_cast<unsigned char>(piece[0])];
    if (spelling == LLAMA_TOKEN_NULL || !byte_token) spelling = id;
  }
}

// Progress reaches JS through the worker's stream; loading is cancelled by the abort flag.
class ModelLoadWorker : public Model::CreateWorker {
 public:
  ModelLoadWorker(Napi::Env env, Model * owner, std::string path, llama_model_params params, std::vector<std::string> rpc_servers,
                  Napi::Value on_progress)
      : CreateWorker(env, "chain-of-spot:model.load", owner), path_(std::move(path)), params_(params),
        rpc_servers_(std::move(rpc_servers)), abort_(owner->abort_) {
    SetStream(env, on_progress, "chain-of-spot:progress");
    params_.progress_callback = OnProgress;
    params_.progress_callback_user_data = this;
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
    if (!rpc_servers_.empty()) UseRpcServers();
    llama_model * model = llama_model_load_from_file(path_.c_str(), params_);
    if (model == nullptr) {
      if (abort_->load()) throw Failure{code::kAborted, "model loading was aborted"};
      throw Failure{code::kModelLoad, capture.Explain("llama.cpp could not load the model " + path_)};
    }
    created_ = std::make_shared<ModelHandle>(model);
  }

  void OnCallbackError() override { abort_->store(true); }

 private:
  static bool OnProgress(float progress, void * user_data) {
    auto * worker = static_cast<ModelLoadWorker *>(user_data);
    worker->Stream([progress](Napi::Env env, Napi::Function fn) { fn.Call({Napi::Number::New(env, progress)}); });
    return !worker->abort_->load();
  }

  // The servers' devices first, then the local GPUs, as llama.cpp's own device choice orders them
  // (the CPU takes what is left). Connecting aborts the process when a server cannot be reached:
  // ChainOfSpot.load runs such a model in a child process.
  void UseRpcServers() {
    for (const std::string & endpoint : rpc_servers_) {
      ggml_backend_reg_t reg = ggml_backend_rpc_add_server(endpoint.c_str());
      if (reg == nullptr) throw Failure{code::kRemote, "the RPC server " + endpoint + " has no devices"};
      for (size_t i = 0; i < ggml_backend_reg_dev_count(reg); i++) devices_.push_back(ggml_backend_reg_dev_get(reg, i));
    }
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
      ggml_backend_dev_t dev = ggml_backend_dev_get(i);
      if (ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_GPU) devices_.push_back(dev);
    }
    devices_.push_back(nullptr);
    params_.devices = devices_.data();
  }

  std::string path_;
  llama_model_params params_;
  std::vector<std::string> rpc_servers_;
  std::vector<ggml_backend_dev_t> devices_;
  std::shared_ptr<std::atomic<bool>> abort_;
};

Napi::Function Model::Define(Napi::Env env) {
  return DefineWith(env, {{"load", &Model::Load}, {"abortLoad", &Model::AbortLoad}, {"info", &Model::Info},
                          {"tokenize", &Model::Tokenize}, {"detokenize", &Model::Detokenize}});
}

// load(path, { gpuLayers, mmap, repack, rpcServers }, onProgress?) -> Promise<void>
Napi::Value Model::Load(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  ThrowIfDisposed(env);
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  Napi::Object options = info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);

  llama_model_params params = llama_model_default_params();
  params.n_gpu_layers = OptionOr<int32_t>(options, "gpuLayers", 0);
  params.load_mode = OptionOr<bool>(options, "mmap", true) ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
  params.use_extra_bufts = OptionOr<bool>(options, "repack", true);

  std::vector<std::string> rpc_servers;
  Napi::Value servers = options.Get("rpcServers");
  if (servers.IsArray()) {
    Napi::Array list = servers.As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); i++) {
      if (!list.Get(i).IsString()) throw Napi::TypeError::New(env, "rpcServers must be strings");
      rpc_servers.push_back(list.Get(i).As<Napi::String>().Utf8Value());
    }
  }

  BeginCreate(env);
  abort_->store(false);
  auto * worker = new ModelLoadWorker(env, this, info[0].As<Napi::String>().Utf8Value(), params, std::move(rpc_servers), info[2]);
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

}  // namespace cospot
