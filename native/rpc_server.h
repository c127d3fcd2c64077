// ggml's RPC server (ggml-rpc.h), for `chain-of-spot rpc-server`: JS calls startRpcServer, whose
// promise settles only if the server stops (it cannot listen); the accept loop holds one libuv
// thread for the life of the process.
#pragma once

#include <napi.h>

namespace cospot {

// startRpcServer(endpoint 'host:port', threads) -> Promise<never>
Napi::Value StartRpcServer(const Napi::CallbackInfo & info);

}  // namespace cospot
