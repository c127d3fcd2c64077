/** What the tests of the remote backends (connect's llama-server, rpcServers) share. */
import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';

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
