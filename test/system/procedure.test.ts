/**
 * The procedure is one, whichever instance runs it: the local instance answers questions with the
 * trained demo model, and a scripted llama-server on 127.0.0.1 replays exactly those turns'
 * texts to the remote instance. Given the same turns, the remote instance must ask what the local
 * one asked (prompts, images, the box grammar), zoom the same region to the same pixels, and
 * come to the same result.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

import sharp from 'sharp';

import { demoModelFiles } from '../../lib/models/demo-model';
import { ChainOfSpot } from '../../lib/procedure/chain-of-spot';
import type { AskResult, BaselineResult } from '../../lib/procedure/types';
import { FIXTURE_IMAGES } from '../support/paths';

const MARKER = '<__media__>';
/** The demo model's projector side. */
const SIDE = 112;
const IMAGE = path.join(FIXTURE_IMAGES, 'coffee.png');

interface CompletionBody {
  prompt: { prompt_string: string; multimodal_data: string[] };
  n_predict: number;
  grammar?: string;
  id_slot?: number;
}

/** A llama-server that answers `/completion` with the scripted texts in turn, and records what it was sent. */
async function scriptedServer(): Promise<{ url: string; script: string[]; received: CompletionBody[]; close(): Promise<void> }> {
  const script: string[] = [];
  const received: CompletionBody[] = [];
  const server: Server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk: Buffer) => (body += chunk.toString()));
    request.on('end', () => {
      const reply = (value: unknown): void => {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(JSON.stringify(value));
      };
      if (request.url === '/props') return reply({ media_marker: MARKER, modalities: { vision: true } });
      if (request.url === '/tokenize') return reply({ tokens: [1, 2, 3] });
      const sent = JSON.parse(body) as CompletionBody;
      received.push(sent);
      const content = script.shift() ?? '';
      reply({
        content,
        tokens: [],
        id_slot: 3,
        tokens_evaluated: 10,
        stop_type: 'eos',
        truncated: false,
        timings: { cache_n: 0, prompt_n: 10, prompt_ms: 1, predicted_n: 1, predicted_ms: 1 },
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    script,
    received,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

async function pixels(png: string | Buffer): Promise<{ width: number; height: number; data: Buffer }> {
  const { data, info } = await sharp(typeof png === 'string' ? Buffer.from(png, 'base64') : png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, data };
}

describe('the procedure, local and remote: the same turns give the same questions and the same result', function () {
  this.timeout(120_000);
  let local: ChainOfSpot;
  let server: Awaited<ReturnType<typeof scriptedServer>>;

  before(async () => {
    local = await ChainOfSpot.load({ ...demoModelFiles(), threads: 2 });
    server = await scriptedServer();
  });
  after(async () => {
    await local?.dispose();
    await server?.close();
  });

  for (const reference of [false, true]) {
    it(`ask${reference ? ', in reference mode' : ''}: turn one, the zoomed region, turn two`, async () => {
      const question = 'What number is on the yellow circle?';
      const mine: AskResult = await local.ask(IMAGE, question, { includeRoiImage: true, reference });
      assert.equal(mine.roi.source, 'model', `the demo model wrote a box: ${mine.turns[0].text}`);
      server.script.push(mine.turns[0].text, mine.turns[1].text);
      const remote = await ChainOfSpot.connect({ url: server.url, imageSize: SIDE });
      try {
        const theirs = await remote.ask(IMAGE, question, { includeRoiImage: true, reference });
        const [one, two] = server.received.splice(0);
        assert.ok(one && two, 'two completions');

        // Turn one: the local turn's prompt, with the original image, under the box grammar outside reference mode.
        assert.equal(one.prompt.prompt_string.replaceAll(MARKER, '<image>'), mine.turns[0].prompt);
        assert.equal(one.prompt.multimodal_data.length, 1);
        assert.equal(one.grammar !== undefined, !reference);
        assert.equal(one.n_predict, 128);
        // Turn two: the conversation so far, the answer as written, the continuation; both images; the same slot.
        assert.equal(two.prompt.prompt_string.replaceAll(MARKER, '<image>'), mine.turns[0].prompt + mine.turns[0].text + mine.turns[1].prompt);
        assert.deepEqual(two.prompt.multimodal_data[0], one.prompt.multimodal_data[0]);
        assert.equal(two.id_slot, 3);
        assert.equal(two.grammar, undefined);
        const original = await pixels(one.prompt.multimodal_data[0]!);
        assert.deepEqual([original.width, original.height], [SIDE, SIDE]);
        // The zoomed region it sent is, pixel for pixel, the one the local model saw.
        const sentRoi = await pixels(two.prompt.multimodal_data[1]!);
        const localRoi = await pixels(mine.roiImage!);
        assert.deepEqual([sentRoi.width, sentRoi.height], [SIDE, SIDE]);
        assert.ok(sentRoi.data.equals(localRoi.data), 'the same zoomed pixels');
        assert.ok(!sentRoi.data.equals(original.data), 'the zoom is not the whole image');

        assert.equal(theirs.answer, mine.answer);
        assert.deepEqual(theirs.roi, mine.roi);
        assert.deepEqual(theirs.turns.map((turn) => [turn.prompt, turn.text]), mine.turns.map((turn) => [turn.prompt, turn.text]));
      } finally {
        await remote.dispose();
      }
    });
  }

  it('baseline: one turn, the same prompt and image', async () => {
    const question = 'What number is on the red square?';
    const mine: BaselineResult = await local.baseline(IMAGE, question);
    server.script.push(mine.turn.text);
    const remote = await ChainOfSpot.connect({ url: server.url, imageSize: SIDE });
    try {
      const theirs = await remote.baseline(IMAGE, question);
      const [only] = server.received.splice(0);
      assert.equal(only!.prompt.prompt_string.replaceAll(MARKER, '<image>'), mine.turn.prompt);
      assert.equal(only!.grammar, undefined);
      assert.equal(theirs.answer, mine.answer);
      assert.equal(theirs.turn.prompt, mine.turn.prompt);
    } finally {
      await remote.dispose();
    }
  });
});
