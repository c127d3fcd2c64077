/**
 * Runs the pixel work of image preparation (lib/pixels.ts) on a worker thread, so decoding a large
 * photo's padded square and resizing it never blocks the event loop (a 12-megapixel photo takes
 * hundreds of milliseconds). One lazily started thread; it keeps the process alive only while it
 * has work.
 */
import path from 'node:path';
import { Worker } from 'node:worker_threads';

import type { PixelJob, PixelReply } from './pixel-worker';
import type { RgbImage } from '../common/rgb-image';
import type { PixelRect } from './geometry';

interface Pending {
  resolve: (image: { data: Buffer; width: number; height: number }) => void;
  reject: (error: Error) => void;
}

let worker: Worker | undefined;
const pending = new Map<number, Pending>();
let nextId = 0;

function failAll(error: Error): void {
  for (const job of pending.values()) job.reject(error);
  pending.clear();
}

function thread(): Worker {
  if (worker) return worker;
  const started = new Worker(path.join(__dirname, 'pixel-worker.js'));
  started.on('message', (reply: PixelReply) => {
    const job = pending.get(reply.id);
    if (!job) return;
    pending.delete(reply.id);
    if (pending.size === 0) started.unref();
    if ('error' in reply) job.reject(new Error(reply.error));
    else job.resolve({ data: Buffer.from(reply.image.data.buffer, reply.image.data.byteOffset, reply.image.data.byteLength), width: reply.image.width, height: reply.image.height });
  });
  started.on('error', (error) => failAll(error));
  started.on('exit', (code) => {
    worker = undefined;
    failAll(new Error(`the image worker thread stopped (exit code ${code})`));
  });
  worker = started;
  return started;
}

/** padCropResize (lib/pixels.ts) on the worker thread. */
export function padCropResize(image: RgbImage, rect: PixelRect, size: number): Promise<{ data: Buffer; width: number; height: number }> {
  return new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    const target = thread();
    target.ref();
    const job: PixelJob = { id, image: { data: image.data, width: image.width, height: image.height }, rect, size };
    target.postMessage(job);
  });
}
