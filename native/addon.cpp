// The chain_of_spot addon: llama.cpp's LLaVA path (libllama + libmtmd) for Node.js.
#include <napi.h>

#include <mutex>

#include "addon.h"
#include "llama.h"
#include "logger.h"
#include "model.h"
#include "projector.h"
#include "rpc_server.h"
#include "session.h"

namespace cospot {
namespace {

Napi::Value SystemInfo(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  Napi::Object result = Napi::Object::New(env);
  result.Set("llamaCppCommit", COS_LLAMA_COMMIT);
  result.Set("system", llama_print_system_info());
  // A GPU of this machine: llama_supports_gpu_offload() also says yes for the RPC backend.
  result.Set("gpuOffload", ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU) != nullptr);
#ifdef COS_CUDA
  result.Set("backend", "cuda");
#else
  result.Set("backend", "cpu");
#endif
  return result;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  static std::once_flag once;
  std::call_once(once, [] {
    InstallLogCallbacks();
    llama_backend_init();
  });

  auto * data = new AddonData();
  Napi::Function model = Model::Define(env);
  Napi::Function projector = Projector::Define(env);
  Napi::Function session = Session::Define(env);
  data->model_constructor = Napi::Persistent(model);
  data->projector_constructor = Napi::Persistent(projector);
  data->session_constructor = Napi::Persistent(session);
  env.SetInstanceData(data);

  exports.Set("Model", model);
  exports.Set("Projector", projector);
  exports.Set("Session", session);
  exports.Set("setLogger", Napi::Function::New(env, SetLogger));
  exports.Set("systemInfo", Napi::Function::New(env, SystemInfo));
  exports.Set("startRpcServer", Napi::Function::New(env, StartRpcServer));
  return exports;
}

}  // namespace cospot

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return cospot::Init(env, exports); }
NODE_API_MODULE(chain_of_spot, InitAddon)
