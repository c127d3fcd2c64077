/**
 * The child process of an {@link IsolatedChainOfSpot}: hosts an ordinary local ChainOfSpot whose
 * layers are on ggml RPC servers, and answers the parent's requests (isolated.ts has the protocol).
 * When a server is lost, llama.cpp aborts this process, and the parent reports it.
 */
import type { ImageInput } from '../image/image';
import { ChainOfSpot } from './chain-of-spot';
import type { OpenedImage } from './types';
import { toWire, type FromChild, type ImageRef, type LoadedFamily, type ToChild } from './isolated';

let cos: ChainOfSpot | undefined;
const controllers = new Map<number, AbortController>();
const opened = new Map<number, OpenedImage>();
let nextHandle = 0;

function send(message: FromChild, then: () => void = () => undefined): void {
  process.send?.(message, then);
}

function image(ref: ImageRef): ImageInput | OpenedImage {
  if ('input' in ref) return ref.input;
  const handle = opened.get(ref.opened);
  if (handle === undefined) throw new TypeError('the opened image is no longer known to the model process');
  return handle;
}

function loaded(): ChainOfSpot {
  if (cos === undefined) throw new TypeError('the model process has no model');
  return cos;
}

async function handle(message: Extract<ToChild, { stream: boolean }>, signal: AbortSignal): Promise<unknown> {
  const stream = message.stream ? (...args: unknown[]): void => send({ type: 'stream', id: message.id, args }) : undefined;
  switch (message.type) {
    case 'load':
      cos = await ChainOfSpot.loadHere({ ...message.options, onProgress: stream, signal });
      return { name: cos.family, facts: cos.boundFamily.facts } satisfies LoadedFamily;
    case 'ask':
      return loaded().ask(image(message.image), message.question, { ...message.options, onText: stream, signal });
    case 'baseline':
      return loaded().baseline(image(message.image), message.question, { ...message.options, onText: stream, signal });
    case 'open': {
      // As locally, an image opened before is taken as it is.
      const handle = await loaded().open(image(message.image) as ImageInput, message.options);
      opened.set(++nextHandle, handle);
      return { handle: nextHandle, width: handle.width, height: handle.height };
    }
    case 'dispose':
      await cos?.dispose();
      return undefined;
  }
}

process.on('message', (message: ToChild) => {
  if (message.type === 'abort') return controllers.get(message.id)?.abort();
  if (message.type === 'release') return void opened.delete(message.handle);
  const controller = new AbortController();
  controllers.set(message.id, controller);
  void (async () => handle(message, controller.signal))().then(
    (value) => send({ type: 'done', id: message.id, value }, message.type === 'dispose' ? () => process.exit(0) : undefined),
    (error: unknown) => send({ type: 'done', id: message.id, error: toWire(error) }),
  ).finally(() => controllers.delete(message.id));
});

// The parent is gone: nothing is left to answer.
process.on('disconnect', () => process.exit(0));
