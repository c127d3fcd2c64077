/** The worker thread of pixel-pool.ts: runs padCropResize on the images it is sent, on shared memory it hands out. */
import { parentPort } from 'node:worker_threads';

import type { RgbImage } from '../common/rgb-image';
import type { PixelRect } from './geometry';
import { padCropResize } from './pixels';

/** Asks for shared memory of `bytes` bytes, touched, to put a job's pixels in. */
export interface PixelRequest {
  kind: 'buffer';
  id: number;
  bytes: number;
}

export interface PixelJob {
  kind: 'job';
  id: number;
  image: RgbImage;
  rect: PixelRect;
  size: number;
}

export type PixelReply = { id: number; shared: SharedArrayBuffer } | { id: number; image: RgbImage } | { id: number; error: string };

parentPort?.on('message', (message: PixelRequest | PixelJob) => {
  if (message.kind === 'buffer') {
    const shared = new SharedArrayBuffer(message.bytes);
    // Touched here, so that the main thread's copy into it costs no page faults.
    new Uint8Array(shared).fill(0);
    parentPort?.postMessage({ id: message.id, shared } satisfies PixelReply);
    return;
  }
  let reply: PixelReply;
  try {
    reply = { id: message.id, image: padCropResize(message.image, message.rect, message.size) };
  } catch (error) {
    reply = { id: message.id, error: error instanceof Error ? error.message : String(error) };
  }
  parentPort?.postMessage(reply);
});
