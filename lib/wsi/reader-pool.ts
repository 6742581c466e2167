/**
 * A pool of worker threads that read and transform patch batches
 * (lib/wsi/reader-worker.ts → lib/wsi/patches.ts), so that slide decoding and the
 * PIL-exact resize run concurrently with the encoder, which runs synchronously on
 * the main thread in native code.
 *
 * Each worker opens the slides itself (the addon, selected by MSTAR_ADDON or the
 * usual search, is loaded again in the worker) and answers one job with one
 * transferred `[B, 3, 224, 224]` Float32Array: no copy crosses threads. Consumed
 * batches can be handed back with `recycle` and travel to the next job, so a long
 * run allocates a handful of batch buffers, not one per batch. Each worker holds up
 * to `jobsPerWorker` jobs, so it never idles between two of them; the caller bounds
 * the total in flight (see lib/wsi/extract.ts).
 *
 * Under the TypeScript sources (vitest, tsx) the worker is started through tsx's
 * ESM loader; from dist/ it is the compiled reader-worker.js.
 */
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { withCode } from '../io/errors.js';

/** One batch to read: the patches `coords` of `path` at `level`, side `size`. */
export interface PatchReadJob {
  path: string;
  /** Slide backend to open it with (the main thread's choice, e.g. `slide.backend`). */
  backend: string;
  level: number;
  size: number;
  /** [B, 2] level-0 (x, y), flattened. */
  coords: Float64Array;
  /** Regions a worker reads at once within the batch (default 4). */
  concurrency?: number;
}

/** Main → worker messages. */
export type ReaderRequest =
  | { type: 'read'; id: number; job: PatchReadJob; buffer?: Float32Array }
  | { type: 'release'; path: string }
  /** Close every slide, then exit the thread. */
  | { type: 'shutdown' };

/** Worker → main messages. */
export type ReaderReply =
  | { type: 'ready' }
  | { type: 'done'; id: number; data: Float32Array }
  | { type: 'error'; id: number; error: { message: string; code: string } };

export interface ReaderPoolOptions {
  /** Worker threads (default `defaultReaderCount()`). */
  workers?: number;
  /** Jobs queued on one worker at a time (default 2). */
  jobsPerWorker?: number;
  /** Regions read at once inside one job (default 4). */
  concurrency?: number;
}

/** Reader threads by default: half the cores, at least 1, at most 4 (the encoder gets the rest). */
export function defaultReaderCount(): number {
  return Math.max(1, Math.min(4, Math.floor(availableParallelism() / 2)));
}

/** Consecutive worker deaths (no job finishing in between) tolerated before giving up. */
const MAX_WORKER_DEATHS = 3;

interface Pending {
  id: number;
  job: PatchReadJob;
  resolve: (data: Float32Array) => void;
  reject: (error: Error) => void;
}

interface Slot {
  worker: Worker;
  jobs: Map<number, Pending>;
}

/** How to start a reader worker from here: the compiled .js, or the .ts source through tsx. */
function spawnReader(): Worker {
  const here = import.meta.url;
  if (!here.endsWith('.ts')) return new Worker(new URL('./reader-worker.js', here));
  const require = createRequire(here);
  const tsxRoot = dirname(require.resolve('tsx/package.json'));
  const pkg = JSON.parse(readFileSync(join(tsxRoot, 'package.json'), 'utf8')) as { exports: Record<string, { import: { default: string } }> };
  const api = pathToFileURL(join(tsxRoot, pkg.exports['./esm/api'].import.default)).href;
  const entry = new URL('./reader-worker.ts', here).href;
  const boot = `import(${JSON.stringify(api)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); })`;
  return new Worker(boot, { eval: true });
}

export class PatchReaderPool {
  readonly workers: number;
  private readonly jobsPerWorker: number;
  private readonly concurrency: number;
  private readonly slots: Slot[] = [];
  private readonly queue: Pending[] = [];
  private readonly spare: Float32Array[] = [];
  private nextId = 1;
  private closed = false;
  /** Called when the last running job settles, while closing. */
  private onIdle: (() => void) | undefined;
  /** Workers that died since a job last finished; past MAX_WORKER_DEATHS the pool is `broken`. */
  private deaths = 0;
  private broken: Error | undefined;

  constructor(options: ReaderPoolOptions = {}) {
    this.workers = options.workers ?? defaultReaderCount();
    this.jobsPerWorker = options.jobsPerWorker ?? 2;
    this.concurrency = options.concurrency ?? 4;
    for (const [name, v] of [['workers', this.workers], ['jobsPerWorker', this.jobsPerWorker], ['concurrency', this.concurrency]] as const) {
      if (!Number.isSafeInteger(v) || v < 1) throw withCode(new RangeError(`${name} must be a positive integer, got ${v}`), 'ERR_ARGUMENT');
    }
    for (let i = 0; i < this.workers; i++) this.slots.push(this.startSlot());
  }

  private startSlot(): Slot {
    const slot: Slot = { worker: spawnReader(), jobs: new Map() };
    slot.worker.on('message', (reply: ReaderReply) => this.onReply(slot, reply));
    // A worker that dies (uncaught error, failed start) fails its jobs and is replaced,
    // unless workers keep dying without finishing a job: then the pool is broken.
    const fail = (error: Error): void => {
      const at = this.slots.indexOf(slot);
      if (at < 0) return;
      const failure = withCode(new Error(`patch reader thread failed: ${error.message}`, { cause: error }), 'ERR_WORKER');
      for (const job of slot.jobs.values()) job.reject(failure);
      slot.jobs.clear();
      if (this.onIdle && this.running() === 0) this.onIdle();
      if (this.closed) return;
      if (++this.deaths > MAX_WORKER_DEATHS) {
        this.broken = failure;
        for (const job of this.queue.splice(0)) job.reject(failure);
        this.slots.splice(at, 1);
        return;
      }
      this.slots[at] = this.startSlot();
      this.pump();
    };
    slot.worker.on('error', fail);
    slot.worker.on('exit', (code) => fail(new Error(`exited with code ${code}`)));
    return slot;
  }

  private onReply(slot: Slot, reply: ReaderReply): void {
    if (reply.type === 'ready') return;
    const job = slot.jobs.get(reply.id);
    if (!job) return;
    slot.jobs.delete(reply.id);
    this.deaths = 0;
    if (reply.type === 'done') job.resolve(reply.data);
    else job.reject(withCode(new Error(reply.error.message), reply.error.code));
    this.pump();
    if (this.onIdle && this.running() === 0) this.onIdle();
  }

  private running(): number {
    return this.slots.reduce((n, slot) => n + slot.jobs.size, 0);
  }

  /** Hands queued jobs to the least busy workers. */
  private pump(): void {
    while (this.queue.length > 0) {
      let best: Slot | undefined;
      for (const slot of this.slots) if (slot.jobs.size < this.jobsPerWorker && (!best || slot.jobs.size < best.jobs.size)) best = slot;
      if (!best) return;
      const job = this.queue.shift() as Pending;
      best.jobs.set(job.id, job);
      const buffer = this.spare.pop(); // any size: the worker allocates when it is too small
      const request: ReaderRequest = { type: 'read', id: job.id, job: { concurrency: this.concurrency, ...job.job }, buffer };
      best.worker.postMessage(request, buffer ? [buffer.buffer as ArrayBuffer] : []);
    }
  }

  /**
   * Reads and transforms one batch in a worker.
   * @returns [B, 3, 224, 224] float32 (a view of a transferred buffer, owned by the caller)
   */
  read(job: PatchReadJob): Promise<Float32Array> {
    if (this.closed) return Promise.reject(withCode(new Error('the patch reader pool is closed'), 'ERR_STATE'));
    if (this.broken) return Promise.reject(this.broken);
    return new Promise((resolve, reject) => {
      this.queue.push({ id: this.nextId++, job, resolve, reject });
      this.pump();
    });
  }

  /** Gives a consumed batch buffer back for reuse (its contents are overwritten). */
  recycle(batch: Float32Array): void {
    if (this.spare.length < this.workers * this.jobsPerWorker + 2 && batch.buffer.byteLength > 0) {
      this.spare.push(new Float32Array(batch.buffer as ArrayBuffer));
    }
  }

  /** Lets the workers close `path` (no further jobs for it will come). */
  release(path: string): void {
    for (const slot of this.slots) slot.worker.postMessage({ type: 'release', path } satisfies ReaderRequest);
  }

  /**
   * Stops the workers: queued jobs reject at once; running ones finish (within
   * `graceMs`, their results are still delivered), then each worker closes its slides
   * and exits. A worker that does not exit in time is terminated.
   */
  async close(graceMs = 30_000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const job of this.queue.splice(0)) job.reject(withCode(new Error('the patch reader pool was closed'), 'ERR_STATE'));
    const within = (promise: Promise<unknown>): Promise<unknown> => {
      let timer: NodeJS.Timeout | undefined;
      return Promise.race([promise, new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]).finally(() => clearTimeout(timer));
    };
    if (this.running() > 0) await within(new Promise<void>((resolve) => (this.onIdle = resolve)));
    this.onIdle = undefined;
    await Promise.all(
      this.slots.map(async ({ worker }) => {
        const exited = new Promise((resolve) => worker.once('exit', resolve));
        worker.postMessage({ type: 'shutdown' } satisfies ReaderRequest);
        await within(exited);
        await worker.terminate(); // a no-op when it has exited
      }),
    );
    for (const slot of this.slots) {
      for (const job of slot.jobs.values()) job.reject(withCode(new Error('the patch reader pool was closed'), 'ERR_STATE'));
      slot.jobs.clear();
    }
    this.spare.length = 0;
  }
}
