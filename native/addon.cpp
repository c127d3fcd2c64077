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

const char * DeviceType(enum ggml_backend_dev_type type) {
  switch (type) {
    case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
    case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
    case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
    default: return "accel";
  }
}

// Every device ggml registered (the CPU included), with its memory as the backend reports it now:
// the loader's smoke test, backend() and the GPU tests' memory checks read this.
Napi::Array Devices(Napi::Env env) {
  Napi::Array devices = Napi::Array::New(env);
  for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
    ggml_backend_dev_t dev = ggml_backend_dev_get(i);
    size_t free = 0, total = 0;
    ggml_backend_dev_memory(dev, &free, &total);
    Napi::Object device = Napi::Object::New(env);
    device.Set("name", ggml_backend_dev_name(dev));
    device.Set("description", ggml_backend_dev_description(dev));
    device.Set("type", DeviceType(ggml_backend_dev_type(dev)));
    device.Set("memoryFree", static_cast<double>(free));
    device.Set("memoryTotal", static_cast<double>(total));
    devices.Set(static_cast<uint32_t>(i), device);
  }
  return devices;
}

Napi::Value SystemInfo(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  Napi::Object result = Napi::Object::New(env);
  result.Set("llamaCppCommit", COS_LLAMA_COMMIT);
  result.Set("system", llama_print_system_info());
  // A GPU of this machine: llama_supports_gpu_offload() also says yes for the RPC backend.
  result.Set("gpuOffload", ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU) != nullptr ||
                               ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_IGPU) != nullptr);
#if defined(COS_CUDA)
  result.Set("backend", "cuda");
#elif defined(COS_VULKAN)
  result.Set("backend", "vulkan");
#else
  result.Set("backend", "cpu");
#endif
  result.Set("devices", Devices(env));
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
