/**
 * Runs the pixel work of image preparation (lib/pixels.ts) on a worker thread, so decoding a large
 * photo's padded square and resizing it never blocks the event loop (a 12-megapixel photo takes
 * hundreds of milliseconds). One lazily started thread; it keeps the process alive only while it
 * has work.
 *
 * The pixels cross on shared memory that the worker allocates and touches first: on these
 * machines a first touch of fresh memory costs about 100 ms per 36 MB (a 12-megapixel photo), and
 * so does cloning a buffer into a message, while copying into memory already touched takes a few.
 * So a job is two messages: the worker's shared buffer of the image's size, then the job on it.
 */
import path from 'node:path';
import { Worker } from 'node:worker_threads';

import type { PixelJob, PixelReply, PixelRequest } from './pixel-worker';
import type { RgbImage } from '../common/rgb-image';
import type { PixelRect } from './geometry';

interface Pending {
  job: Omit<PixelJob, 'kind' | 'image'>;
  image: RgbImage;
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
    if ('shared' in reply) {
      send(started, job, Buffer.from(reply.shared));
      return;
    }
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

function send(target: Worker, pendingJob: Pending, shared: Buffer): void {
  const { image } = pendingJob;
  if (shared !== image.data) shared.set(image.data);
  const job: PixelJob = { kind: 'job', ...pendingJob.job, image: { data: shared, width: image.width, height: image.height } };
  target.postMessage(job);
}

/** padCropResize (lib/pixels.ts) on the worker thread. */
export function padCropResize(image: RgbImage, rect: PixelRect, size: number): Promise<{ data: Buffer; width: number; height: number }> {
  return new Promise((resolve, reject) => {
    const id = nextId++;
    const pendingJob: Pending = { job: { id, rect, size }, image, resolve, reject };
    pending.set(id, pendingJob);
    const target = thread();
    target.ref();
    if (image.data.buffer instanceof SharedArrayBuffer) {
      send(target, pendingJob, image.data);
    } else {
      const request: PixelRequest = { kind: 'buffer', id, bytes: image.data.byteLength };
      target.postMessage(request);
    }
  });
}
