/**
 * Worker-thread side of lib/wsi/reader-pool.ts: opens slides itself (the same
 * backend the main thread chose), reads and transforms batches with
 * `readPatchBatch`, and transfers each `[B, 3, 224, 224]` Float32Array back.
 * Slides stay open between batches (a few at a time, least recently used closed
 * first) until the main thread releases them.
 */
import { parentPort } from 'node:worker_threads';
import { openSlide, type Slide } from '../io/slide.js';
import '../io/slide-openslide.js';
import { readPatchBatch } from './patches.js';
import type { ReaderReply, ReaderRequest } from './reader-pool.js';

const MAX_OPEN_SLIDES = 3;
/** Open slides by `backend\0path`, least recently used first. */
const slides = new Map<string, Promise<Slide>>();

function slideFor(path: string, backend: string): Promise<Slide> {
  const key = `${backend}\0${path}`;
  let slide = slides.get(key);
  if (slide) {
    slides.delete(key);
  } else {
    slide = openSlide(path, { backend });
    slide.catch(() => slides.delete(key));
  }
  slides.set(key, slide);
  while (slides.size > MAX_OPEN_SLIDES) {
    const [oldest] = slides.keys();
    release(oldest);
  }
  return slide;
}

function release(key: string): void {
  const slide = slides.get(key);
  slides.delete(key);
  slide?.then((s) => s.close(), () => undefined);
}

function post(reply: ReaderReply, transfer: ArrayBuffer[] = []): void {
  parentPort?.postMessage(reply, transfer);
}

async function read(request: Extract<ReaderRequest, { type: 'read' }>): Promise<void> {
  const { id, job, buffer } = request;
  try {
    const slide = await slideFor(job.path, job.backend);
    const data = await readPatchBatch(slide, { coords: job.coords, level: job.level, size: job.size, concurrency: job.concurrency }, buffer);
    post({ type: 'done', id, data }, [data.buffer as ArrayBuffer]);
  } catch (error) {
    const e = error as Error & { code?: string };
    post({ type: 'error', id, error: { message: e.message, code: typeof e.code === 'string' ? e.code : 'ERR_SLIDE_READ' } });
  }
}

async function shutdown(): Promise<void> {
  const open = [...slides.values()];
  slides.clear();
  await Promise.allSettled(open.map((s) => s.then((slide) => slide.close())));
  process.exit(0); // ends this thread only
}

parentPort?.on('message', (request: ReaderRequest) => {
  if (request.type === 'read') void read(request);
  else if (request.type === 'release') {
    for (const key of [...slides.keys()]) if (key.endsWith(`\0${request.path}`)) release(key);
  } else if (request.type === 'shutdown') void shutdown();
});
post({ type: 'ready' });
