/** What the tests of the remote backends (connect's llama-server, rpcServers) share. */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo } from 'node:net';

import { ChainOfSpotError } from '../../lib/common/errors';

/** Asserts the promise rejects with a ChainOfSpotError of `code` (and a message matching `message`); returns it. */
export async function rejectsWithCode(promise: Promise<unknown>, code: string, message?: RegExp): Promise<ChainOfSpotError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ChainOfSpotError, `expected a ChainOfSpotError, got ${String((error as Error)?.stack ?? error)}`);
    assert.equal(error.code, code, error.message);
    if (message) assert.match(error.message, message);
    return error;
  }
  assert.fail(`expected a rejection with ${code}`);
}

/** A port nothing listens on: one the system gave out and took back. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A `chain-of-spot rpc-server` process. */
export interface RpcServer {
  /** `127.0.0.1:port` */
  endpoint: string;
  child: ChildProcess;
  /** What it printed so far, stdout and stderr. */
  output(): string;
}

/** Whether something accepts TCP connections on the port of 127.0.0.1. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * Starts `<command...> rpc-server --port <free port> --threads 1 <extra...>` (our CLI, however it is
 * run) and resolves once it accepts connections on 127.0.0.1; one that ends or does not listen
 * within 30 s fails the test, and is ended.
 */
export async function startRpcServer(command: readonly string[], extra: readonly string[] = [], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RpcServer> {
  const port = await closedPort();
  // In a process group of its own, so that stopping `npx ...` stops the server under it too.
  const child = spawn(command[0]!, [...command.slice(1), 'rpc-server', '--port', String(port), '--threads', '1', ...extra], { ...options, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const server = { endpoint: `127.0.0.1:${port}`, child, output: () => output };
  try {
    const deadline = performance.now() + 30_000;
    while (!(await accepts(port))) {
      assert.ok(child.exitCode === null && child.signalCode === null, `rpc-server ended: ${output}`);
      assert.ok(performance.now() < deadline, `rpc-server did not listen within 30 s: ${output}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } catch (error) {
    await stopRpcServer(server);
    throw error;
  }
  return server;
}

/** Kills a server (and its process group) and waits for it to end. */
export async function stopRpcServer(server: RpcServer): Promise<void> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return;
  const exited = once(server.child, 'exit');
  process.kill(-server.child.pid!, 'SIGKILL');
  await exited;
}
