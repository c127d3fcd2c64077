/** The worker thread of lib/pixel-worker.ts: runs padCropResize on the images it is sent. */
import { parentPort } from 'node:worker_threads';

import type { RgbImage } from '../common/rgb-image';
import type { PixelRect } from './geometry';
import { padCropResize } from './pixels';

export interface PixelJob {
  id: number;
  image: RgbImage;
  rect: PixelRect;
  size: number;
}

export type PixelReply = { id: number; image: RgbImage } | { id: number; error: string };

parentPort?.on('message', (job: PixelJob) => {
  let reply: PixelReply;
  try {
    reply = { id: job.id, image: padCropResize(job.image, job.rect, job.size) };
  } catch (error) {
    reply = { id: job.id, error: error instanceof Error ? error.message : String(error) };
  }
  parentPort?.postMessage(reply);
});
