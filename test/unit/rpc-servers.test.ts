import assert from 'node:assert/strict';

import { parseCommandLine } from '../../lib/cli/args';
import { MAX_RPC_SERVERS, rpcServersOption } from '../../lib/common/validate';
import { ChainOfSpot } from '../../lib/procedure/chain-of-spot';

describe('rpcServers', () => {
  it("takes 'host:port' strings: IPv4 addresses and host names", () => {
    assert.equal(rpcServersOption(undefined), undefined);
    assert.deepEqual(rpcServersOption(['127.0.0.1:50052', 'worker-2.lan:1', 'gpu:65535']), ['127.0.0.1:50052', 'worker-2.lan:1', 'gpu:65535']);
  });

  it('throws TypeError for what is no list of strings, RangeError for a malformed or repeated server', () => {
    for (const value of ['127.0.0.1:50052', null, {}, [50052], [null]]) assert.throws(() => rpcServersOption(value), TypeError, JSON.stringify(value));
    const many = Array.from({ length: MAX_RPC_SERVERS + 1 }, (_, i) => `h:${i + 1}`);
    for (const value of [[], many, ['127.0.0.1'], [':50052'], ['h:0'], ['h:65536'], ['h:-1'], ['[::1]:50052'], ['http://h:1'], ['h:1 '], ['h:1', 'h:1']]) {
      assert.throws(() => rpcServersOption(value), RangeError, JSON.stringify(value));
    }
  });

  it('ChainOfSpot.load checks them before it starts anything', async () => {
    await assert.rejects(ChainOfSpot.load({ model: 'm.gguf', mmproj: 'p.gguf', rpcServers: ['nope'] }), RangeError);
    await assert.rejects(ChainOfSpot.load({ model: 'm.gguf', mmproj: 'p.gguf', rpcServers: [] }), RangeError);
    await assert.rejects(ChainOfSpot.load({ model: 'm.gguf', mmproj: 'p.gguf', rpcServers: ['h:1'], onProgress: 1 as never }), TypeError);
  });
});

describe('chain-of-spot rpc-server arguments', () => {
  it('listens on 127.0.0.1:50052 unless told, with the default threads', () => {
    assert.deepEqual(parseCommandLine(['rpc-server']), { command: 'rpc-server', host: '127.0.0.1', port: 50052, threads: undefined });
    assert.deepEqual(parseCommandLine(['rpc-server', '--host', '0.0.0.0', '--port', '6000', '--threads', '3']), { command: 'rpc-server', host: '0.0.0.0', port: 6000, threads: 3 });
    assert.deepEqual(parseCommandLine(['rpc-server', '--help']), { command: 'help' });
  });

  for (const args of [['--host', 'localhost'], ['--host', '::1'], ['--port', '0'], ['--port', '65536'], ['--port', 'x'], ['--threads', '0'], ['extra'], ['--model', 'm']]) {
    it(`rejects rpc-server ${args.join(' ')}`, () => assert.throws(() => parseCommandLine(['rpc-server', ...args]), { code: 'ERR_USAGE' }));
  }
});
