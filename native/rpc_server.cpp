#include "rpc_server.h"

#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml-rpc.h"
#include "worker.h"

namespace cospot {

namespace {

class RpcServerWorker : public PromiseWorker {
 public:
  RpcServerWorker(Napi::Env env, std::string endpoint, size_t threads)
      : PromiseWorker(env, "chain-of-spot:rpc-server"), endpoint_(std::move(endpoint)), threads_(threads) {}

 protected:
  void Run() override {
    // What this machine offers its clients: its GPUs, as llama.cpp's own rpc-server does, else the CPU.
    std::vector<ggml_backend_dev_t> devices;
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
      ggml_backend_dev_t dev = ggml_backend_dev_get(i);
      if (ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_GPU) devices.push_back(dev);
    }
    if (devices.empty()) devices.push_back(ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU));
    // Serves clients one after another, for as long as it can listen.
    ggml_backend_rpc_start_server(endpoint_.c_str(), nullptr, threads_, devices.size(), devices.data());
    throw Failure{code::kRemote, "the RPC server cannot listen on " + endpoint_ +
                                     ": the port is taken, or the address is not one of this machine's"};
  }

 private:
  std::string endpoint_;
  size_t threads_;
};

}  // namespace

Napi::Value StartRpcServer(const Napi::CallbackInfo & info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "endpoint must be a string");
  if (!info[1].IsNumber() || info[1].As<Napi::Number>().Int32Value() < 1) {
    throw Napi::RangeError::New(env, "threads must be a positive number");
  }
  auto * worker = new RpcServerWorker(env, info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::Number>().Int32Value());
  return worker->Start();
}

}  // namespace cospot
