/**
 * Reaching ggml RPC servers before llama.cpp connects to them: its client aborts the process on a
 * server it cannot reach, and waits for the system's TCP timeout (minutes) on one that does not
 * answer, so each is tried here first, with a bound, and a failure is an ERR_REMOTE.
 */
import { connect } from 'node:net';

import { abortedError, ChainOfSpotError } from '../common/errors';

/** How long a server may take to accept a connection. */
export const RPC_CONNECT_TIMEOUT_MS = 10_000;

/** Resolves once every server accepted a TCP connection (closed at once); else ERR_REMOTE naming the first that did not. */
export async function reachRpcServers(servers: readonly string[], signal?: AbortSignal): Promise<void> {
  await Promise.all(servers.map((server) => reach(server, signal)));
}

function reach(server: string, signal: AbortSignal | undefined): Promise<void> {
  const colon = server.lastIndexOf(':');
  const host = server.slice(0, colon);
  const port = Number(server.slice(colon + 1));
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortedError(signal.reason));
    const socket = connect({ host, port, timeout: RPC_CONNECT_TIMEOUT_MS });
    const finish = (error?: Error): void => {
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (error) reject(error);
      else resolve();
    };
    const onAbort = (): void => finish(abortedError(signal?.reason));
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => finish());
    socket.once('timeout', () => finish(new ChainOfSpotError('ERR_REMOTE', `the RPC server ${server} did not accept a connection within ${RPC_CONNECT_TIMEOUT_MS / 1000} s: check the address and that no firewall drops it`)));
    socket.once('error', (error: NodeJS.ErrnoException) => finish(new ChainOfSpotError(
      'ERR_REMOTE',
      `cannot reach the RPC server ${server} (${error.code ?? error.message}): start it there with \`npx chain-of-spot rpc-server --host <address> --port ${port}\`, or check the address`,
      { cause: error },
    )));
  });
}
