/**
 * rpcServers: the model's layers on ggml RPC servers, against real processes: two
 * `chain-of-spot rpc-server` (our CLI, the addon's ggml from the pinned source) on 127.0.0.1, the
 * tiny pair loaded through them and locally. The numbers must be the local ones; a server that is
 * down at load, or killed in the middle of a question, must give ERR_REMOTE and leave this
 * process running.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import path from 'node:path';

import sharp from 'sharp';

import { ChainOfSpotError } from '../../lib/common/errors';
import { ChainOfSpot } from '../../lib/procedure/chain-of-spot';
import type { AskResult } from '../../lib/procedure/types';
import type { IsolatedChainOfSpot, RpcChainOfSpotOptions } from '../../lib/procedure/isolated';
import { assertExited, resultOf, runScript } from '../support/child';
import { ensureTinyQwen3Vl } from '../../lib/models/tiny-qwen-vl';
import { MODEL_CACHE, tinyLlava } from '../support/models';
import { FIXTURE_IMAGES } from '../support/paths';
import { closedPort, rejectsWithCode, startRpcServer as startServer, stopRpcServer, type RpcServer } from '../support/remote';

const CLI = path.resolve(__dirname, '../../lib/cli/main.js');
const CAT = path.join(FIXTURE_IMAGES, 'chelsea.png');
const COFFEE = path.join(FIXTURE_IMAGES, 'coffee.png');
const QUESTION = 'What color is the cat?';
/**
 * Logits of the same tokens, local against the layers on two RPC servers: the same CPU kernels on
 * the same weights, so any difference is the order of floating-point sums. Measured: 0 on this
 * machine's tiny pair; a wrong layer or a lost token moves them by far more (see test/support/logits.ts).
 */
const RPC_TOLERANCE = 1e-5;

/** Every server and instance the tests started: a failed test leaves none running (see {@link endStarted}). */
const started = { servers: [] as RpcServer[], instances: [] as IsolatedChainOfSpot[] };

/** Hooks of a describe: its instances end after each test, its servers after the last. */
function endStarted(): void {
  afterEach(async () => {
    await Promise.all(started.instances.splice(0).map((cos) => cos.dispose()));
  });
  after(async () => {
    await Promise.all(started.servers.splice(0).map(stopRpcServer));
  });
}

async function load(options: RpcChainOfSpotOptions): Promise<IsolatedChainOfSpot> {
  const cos = await ChainOfSpot.load(options);
  started.instances.push(cos);
  return cos;
}

/** `chain-of-spot rpc-server` (this checkout's CLI) on a free port of 127.0.0.1, ended after the describe. */
async function startRpcServer(extra: string[] = []): Promise<RpcServer> {
  const server = await startServer([process.execPath, CLI], extra);
  started.servers.push(server);
  return server;
}

/** What must not depend on where the layers ran. */
function essence(result: AskResult): unknown {
  return { answer: result.answer, roi: result.roi, turns: result.turns.map((turn) => [turn.text, Array.from(turn.tokens), turn.promptTokens, turn.finishReason]) };
}

describe('rpcServers: the layers on two rpc-servers on 127.0.0.1', function () {
  this.timeout(180_000);
  this.slow(20_000);
  let servers: RpcServer[];
  let files: { model: string; mmproj: string };
  endStarted();
  before(async () => {
    files = await tinyLlava();
    servers = await Promise.all([startRpcServer(), startRpcServer()]);
  });

  it('Model.load places the layers on both servers, and their logits are the local ones', async () => {
    // In a child: the in-process RPC client aborts its process on a lost server.
    const script = `
      const { Model } = require(process.env.COS_DIST + '/index.js');
      const logitsOf = async (options) => {
        const model = await Model.load(process.argv[1], options);
        const session = await model.createSession({ threads: 1, contextSize: 256 });
        const tokens = model.tokenize('A chat between a curious user and an artificial intelligence assistant.', { addBos: true });
        await session.evaluate(tokens);
        const first = Array.from(await session.logits());
        await session.evaluate(model.tokenize(' USER: What is the colour of the cat?'));
        const second = Array.from(await session.logits());
        await model.dispose();
        return [first, second];
      };
      (async () => {
        const local = await logitsOf({});
        const rpc = await logitsOf({ rpcServers: process.argv.slice(2) });
        console.log('RESULT ' + JSON.stringify({ local, rpc }));
      })();`;
    const result = await runScript(script, [files.model, ...servers.map((s) => s.endpoint)], { env: { CHAIN_OF_SPOT_DEBUG: '1' }, timeoutMs: 120_000 });
    assertExited(result);
    for (const { endpoint } of servers) {
      assert.match(result.stderr, new RegExp(`RPC\\d+\\[${endpoint.replace(/\./g, '\\.')}\\] model buffer size`), `${endpoint} holds a part of the weights`);
    }
    const { local, rpc } = resultOf<{ local: number[][]; rpc: number[][] }>(result);
    for (const [i, expected] of local.entries()) {
      const actual = rpc[i]!;
      assert.equal(actual.length, expected.length);
      const scale = Math.max(...expected.map(Math.abs));
      const worst = Math.max(...expected.map((value, j) => Math.abs(value - actual[j]!)));
      assert.ok(worst <= RPC_TOLERANCE * scale, `evaluation ${i}: logits differ by ${worst} (scale ${scale})`);
    }
  });

  describe('ChainOfSpot.load with rpcServers', () => {
    let local: ChainOfSpot;
    let remote: IsolatedChainOfSpot;
    before(async () => {
      local = await ChainOfSpot.load({ ...files, threads: 1 });
      const progress: number[] = [];
      remote = await ChainOfSpot.load({ ...files, threads: 1, rpcServers: servers.map((s) => s.endpoint), onProgress: (p) => progress.push(p) });
      assert.equal(progress.at(-1), 1, 'load progress reaches 1');
    });
    after(async () => {
      await Promise.all([local?.dispose(), remote?.dispose()]);
    });

    it('answers as the local instance: the same texts, tokens and boxes; streams each turn', async () => {
      const expected = await local.ask(CAT, QUESTION, { includeRoiImage: true });
      const streamed: [string, number][] = [];
      const actual = await remote.ask(CAT, QUESTION, { includeRoiImage: true, onText: (text, turn) => streamed.push([text, turn]) });
      assert.deepEqual(essence(actual), essence(expected));
      assert.ok(actual.turns[0].tokens instanceof Int32Array);
      assert.ok(Buffer.isBuffer(actual.roiImage) && actual.roiImage.equals(expected.roiImage!), 'the zoomed region crosses as PNG bytes');
      for (const turn of [1, 2] as const) {
        assert.equal(streamed.filter(([, t]) => t === turn).map(([text]) => text).join(''), actual.turns[turn - 1].text, `turn ${turn} streamed`);
      }
      assert.deepEqual(remote.rpcServers, servers.map((s) => s.endpoint));
    });

    it('open and baseline: the opened image is reused in the child, as locally', async () => {
      const [localImage, remoteImage] = await Promise.all([local.open(COFFEE), remote.open(COFFEE)]);
      assert.deepEqual(remoteImage, localImage);
      const expected = [await local.baseline(localImage, 'What is this?'), await local.ask(localImage, QUESTION)];
      const actual = [await remote.baseline(remoteImage, 'What is this?'), await remote.ask(remoteImage, QUESTION)];
      assert.equal(actual[0]!.answer, expected[0]!.answer);
      assert.deepEqual(Array.from((actual[0] as { turn: { tokens: Int32Array } }).turn.tokens), Array.from((expected[0] as { turn: { tokens: Int32Array } }).turn.tokens));
      assert.deepEqual(essence(actual[1] as AskResult), essence(expected[1] as AskResult));
      assert.equal((actual[1] as AskResult).prefixReused, true, 'the question after the baseline reused the prefix in the child');
    });

    it('a sharp pipeline of a photo stored on its side (EXIF 6), opened in one mode and asked in the other: as locally', async () => {
      const stored = await sharp(CAT).resize(64, 40).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer();
      for (const [openedAs, askedAs] of [[false, true], [true, false]] as const) {
        const [localImage, remoteImage] = [await local.open(sharp(stored), { reference: openedAs }), await remote.open(sharp(stored), { reference: openedAs })];
        assert.deepEqual(remoteImage, localImage);
        assert.deepEqual([localImage.width, localImage.height], openedAs ? [64, 40] : [40, 64]);
        const expected = await local.ask(localImage, QUESTION, { reference: askedAs, includeRoiImage: true });
        const actual = await remote.ask(remoteImage, QUESTION, { reference: askedAs, includeRoiImage: true });
        assert.deepEqual(essence(actual), essence(expected), `opened with reference ${openedAs}, asked with ${askedAs}`);
        assert.ok(actual.roiImage!.equals(expected.roiImage!), `the same zoomed pixels (opened with reference ${openedAs}, asked with ${askedAs})`);
      }
    });

    it('an AbortSignal cancels the question with ERR_ABORTED and the instance goes on; a throwing onText rejects with what it threw, as locally', async () => {
      const controller = new AbortController();
      const aborted = remote.ask(CAT, QUESTION, { signal: controller.signal, onText: () => controller.abort() });
      await rejectsWithCode(aborted, 'ERR_ABORTED');
      const boom = new Error('boom');
      for (const cos of [local, remote]) {
        await assert.rejects(cos.ask(CAT, QUESTION, { onText: () => { throw boom; } }), (error) => error instanceof ChainOfSpotError && error.cause === boom);
      }
      assert.equal((await remote.ask(CAT, QUESTION)).answer, (await local.ask(CAT, QUESTION)).answer);
    });

    it('bad arguments throw TypeError / RangeError before anything crosses', async () => {
      await assert.rejects(remote.ask(CAT, 42 as never), TypeError);
      await assert.rejects(remote.ask(CAT, QUESTION, { maxTokens: 0 }), RangeError);
      await assert.rejects(ChainOfSpot.load({ ...files, rpcServers: ['127.0.0.1'] }), RangeError);
      await assert.rejects(ChainOfSpot.load({ ...files, rpcServers: 'a:1' as never }), TypeError);
      await rejectsWithCode(remote.ask(path.join(FIXTURE_IMAGES, 'truncated.jpg'), QUESTION), 'ERR_IMAGE');
    });
  });

  it('a Qwen3-VL pair with rpcServers: the family is detected in the child and bound here, and it answers as the local instance', async () => {
    const qwen3 = await ensureTinyQwen3Vl(MODEL_CACHE);
    const local = await ChainOfSpot.load({ ...qwen3, threads: 1 });
    const remote = await ChainOfSpot.load({ ...qwen3, threads: 1, rpcServers: servers.map((s) => s.endpoint) });
    try {
      assert.equal(remote.family, 'qwen3-vl');
      const [expected, actual] = [await local.ask(CAT, QUESTION, { maxTokens: 8 }), await remote.ask(CAT, QUESTION, { maxTokens: 8 })];
      assert.deepEqual(essence(actual), essence(expected));
      assert.deepEqual(actual.turns[0].images, expected.turns[0].images, "mtmd's grid crosses from the child");
    } finally {
      await Promise.all([local.dispose(), remote.dispose()]);
    }
  });

  it('an AbortSignal stops the load with ERR_ABORTED', async () => {
    const controller = new AbortController();
    const loading = ChainOfSpot.load({ ...files, rpcServers: [servers[0]!.endpoint], signal: controller.signal });
    controller.abort();
    await rejectsWithCode(loading, 'ERR_ABORTED');
    await load({ ...files, threads: 1, rpcServers: [servers[0]!.endpoint] });
  });

  it('a server that is down at load: ERR_REMOTE at once, naming it', async () => {
    const down = `127.0.0.1:${await closedPort()}`;
    const start = performance.now();
    await rejectsWithCode(ChainOfSpot.load({ ...files, rpcServers: [servers[0]!.endpoint, down] }), 'ERR_REMOTE', new RegExp(`cannot reach the RPC server ${down} \\(ECONNREFUSED\\)`));
    assert.ok(performance.now() - start < 10_000, `${performance.now() - start} ms`);
  });

  it('a server killed in the middle of a question: ERR_REMOTE, this process lives, later calls fail the same way, dispose resolves', async () => {
    const doomed = await startRpcServer();
    const cos = await load({ ...files, threads: 1, rpcServers: [servers[0]!.endpoint, doomed.endpoint] });
    let killed: Promise<void> | undefined;
    const error = await rejectsWithCode(
      cos.ask(CAT, QUESTION, { onText: () => void (killed ??= stopRpcServer(doomed)) }),
      'ERR_REMOTE',
      /the process that ran the model on the RPC servers .* ended \(SIGABRT\): Remote RPC server crashed.*: dispose this instance, check the servers/,
    );
    assert.ok(killed, 'the server was killed during the question');
    assert.match(error.stack ?? '', /rpc\.test\.js/, "the caller's stack");
    await rejectsWithCode(cos.ask(CAT, QUESTION), 'ERR_REMOTE');
    await cos.dispose();
    await rejectsWithCode(cos.ask(CAT, QUESTION), 'ERR_DISPOSED');
    // The other server serves the next client.
    await load({ ...files, threads: 1, rpcServers: [servers[0]!.endpoint] });
  });

  it('dispose in the middle of a question: it rejects with ERR_DISPOSED and the child ends', async () => {
    const cos = await load({ ...files, threads: 1, rpcServers: [servers[1]!.endpoint] });
    let disposed: Promise<void> | undefined;
    await rejectsWithCode(cos.ask(CAT, QUESTION, { onText: () => void (disposed ??= cos.dispose()) }), 'ERR_DISPOSED');
    await disposed;
    await rejectsWithCode(cos.baseline(CAT, QUESTION), 'ERR_DISPOSED');
  });
});

describe('chain-of-spot rpc-server', function () {
  this.timeout(60_000);
  endStarted();

  /** Runs `chain-of-spot rpc-server` on a port this test holds on 127.0.0.1, so the server cannot listen. */
  async function onTakenPort(host: string | undefined): Promise<{ code: number; stderr: string; port: number }> {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const { port } = taken.address() as AddressInfo;
    try {
      const args = [CLI, 'rpc-server', '--port', String(port), ...(host === undefined ? [] : ['--host', host])];
      const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const [code] = (await once(child, 'exit')) as [number];
      return { code, stderr, port };
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  }

  it('a port already taken: one error line, exit 1', async () => {
    const { code, stderr, port } = await onTakenPort(undefined);
    assert.equal(code, 1, stderr);
    assert.match(stderr, new RegExp(`chain-of-spot: error: the RPC server cannot listen on 127\\.0\\.0\\.1:${port}: the port is taken.* \\(ERR_REMOTE\\)`));
  });

  it('says where it listens; off loopback it warns that the protocol is open', async () => {
    const local = await startRpcServer();
    assert.match(local.output(), new RegExp(`^chain-of-spot rpc-server: serving this machine's CPU \\(1 threads\\) on ${local.endpoint.replace(/\./g, '\\.')}`, 'm'));
    assert.doesNotMatch(local.output(), /warning/);
    // Off loopback, on a port this test holds, so that no server is ever reachable from outside.
    const open = await onTakenPort('0.0.0.0');
    assert.match(open.stderr, /warning: ggml's RPC protocol has no authentication or encryption: anyone who can reach 0\.0\.0\.0:/);
    assert.match(open.stderr, /cannot listen on 0\.0\.0\.0:\d+: the port is taken/);
    assert.equal(open.code, 1);
  });
});
