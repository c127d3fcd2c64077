/**
 * `chain-of-spot rpc-server`: ggml's RPC server from the addon (the same pinned llama.cpp as the
 * client), serving this machine's CPU or GPUs to another machine's ChainOfSpot.load({ rpcServers }).
 * It serves until the process ends: ggml's server has no stop of its own.
 */
import { binding, backend } from '../native/loader';
import { defaultThreads } from '../native/threads';
import type { Command } from './args';

export async function rpcServer(command: Extract<Command, { command: 'rpc-server' }>, signal: AbortSignal): Promise<number> {
  const threads = command.threads ?? defaultThreads();
  const endpoint = `${command.host}:${command.port}`;
  const device = backend().backend === 'cpu' ? 'CPU' : 'GPUs';
  process.stdout.write(`chain-of-spot rpc-server: serving this machine's ${device} (${threads} threads) on ${endpoint}; Ctrl-C stops it\n`);
  if (!command.host.startsWith('127.')) {
    process.stderr.write(
      `chain-of-spot rpc-server: warning: ggml's RPC protocol has no authentication or encryption: anyone who can reach ${endpoint} ` +
        "can use this machine's memory and compute. Listen on a private network only, or on 127.0.0.1 behind an SSH tunnel (README, \"Serving\")\n",
    );
  }
  signal.addEventListener('abort', () => process.exit(130), { once: true });
  // Settles only when the server cannot listen (a rejection with ERR_REMOTE).
  return binding().startRpcServer(endpoint, threads);
}
