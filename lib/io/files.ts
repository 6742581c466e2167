/**
 * Whole-file reads into one buffer and atomic writes, shared by the checkpoint
 * readers and writers.
 *
 * Reads: one allocation of exactly the file size (readers then hand out zero-copy
 * views), filled in chunks so files above the 2 GiB single-read limit work; the
 * largest file is Node's Buffer limit (4 GiB on Node 20, 8 PiB on Node 22+). Files of
 * 64 MiB and more are mapped by the addon instead (private copy-on-write pages straight
 * from the page cache: no fresh memory to fault in, no copy), which halves the time
 * to load a 1.2 GB checkpoint; `releaseFileBytes` unmaps at once instead of at GC.
 * Writes: chunks go to a temporary name beside `path` (`temporaryPathFor`), renamed over it only when
 * complete, so a crash or an error never leaves a half-written checkpoint behind
 * (no fsync: like the safetensors reference, durability is left to the OS).
 */
import { closeSync, fstatSync, openSync, readSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { constants as bufferConstants } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { native } from '../native.js';
import { FormatError } from './errors.js';
import type { HostTensor } from './host-tensor.js';

const READ_CHUNK_BYTES = 1 << 30;

/** The whole file as one Uint8Array (its own ArrayBuffer, byteOffset 0). */
export function readFileBytes(path: string): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    if (size > bufferConstants.MAX_LENGTH) {
      throw new FormatError(`${path}: ${size} bytes is more than this Node version can hold in one buffer (${bufferConstants.MAX_LENGTH})`);
    }
    const mapped = size >= NATIVE_MAP_MIN_BYTES ? mapWholeFile(path) : undefined;
    if (mapped !== undefined) return mapped;
    const buffer = Buffer.allocUnsafeSlow(size);
    let filled = 0;
    while (filled < size) {
      const read = readSync(fd, buffer, filled, Math.min(READ_CHUNK_BYTES, size - filled), filled);
      if (read === 0) throw new FormatError(`${path}: file shrank while being read (${filled} of ${size} bytes)`);
      filled += read;
    }
    return new Uint8Array(buffer.buffer, buffer.byteOffset, size);
  } finally {
    closeSync(fd);
  }
}

const NATIVE_MAP_MIN_BYTES = 64 * 2 ** 20;
/** ArrayBuffers that readFileBytes mapped through the addon. */
const nativeFileBuffers = new WeakSet<ArrayBuffer>();

/** The file mapped by the addon, or undefined when the addon cannot (then it is read). */
function mapWholeFile(path: string): Uint8Array | undefined {
  let buffer: ArrayBuffer;
  try {
    buffer = native().mapFile(path);
  } catch {
    return undefined;
  }
  nativeFileBuffers.add(buffer);
  return new Uint8Array(buffer);
}

/**
 * Lets the OS take back the pages of a mapped file under `bytes` (a view from
 * readFileBytes or a checkpoint reader) once they have been consumed: they stay
 * readable (read back from the file on access). Loading a checkpoint this way holds
 * about one copy of the weights at a time instead of two. Others: no-op.
 */
export function releaseFilePages(bytes: Uint8Array): void {
  const buffer = bytes.buffer as ArrayBuffer;
  if (nativeFileBuffers.has(buffer)) native().releasePages(buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Unmaps now the mapped files behind `tensors` (as read by readFileBytes and the
 * checkpoint readers); every view of them becomes empty. Others are left to the GC.
 */
export function releaseFileBytes(tensors: Iterable<HostTensor>): void {
  for (const tensor of tensors) {
    const buffer = tensor.data.buffer as ArrayBuffer;
    if (nativeFileBuffers.delete(buffer)) native().free(buffer);
  }
}

/** Receives the bytes of a file being written, in order. */
export type ByteSink = (chunk: Uint8Array) => void;

/** A fresh temporary path next to `path`: same folder, hidden, `.NAME.PID.HEX.tmp`. */
export function temporaryPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

/**
 * Writes a file atomically: `produce` emits its bytes into a sink backed by
 * `temporaryPathFor(path)`, which is renamed to `path` once `produce` returns. On any
 * error the temporary file is removed and the error rethrown; `path` is untouched.
 */
export function writeFileAtomic(path: string, produce: (sink: ByteSink) => void): void {
  const temporaryPath = temporaryPathFor(path);
  const fd = openSync(temporaryPath, 'w');
  let closed = false;
  try {
    produce((chunk) => {
      let written = 0;
      while (written < chunk.byteLength) {
        written += writeSync(fd, chunk, written, Math.min(READ_CHUNK_BYTES, chunk.byteLength - written));
      }
    });
    closeSync(fd);
    closed = true;
    renameSync(temporaryPath, path);
  } catch (error) {
    if (!closed) closeSync(fd);
    try {
      unlinkSync(temporaryPath);
    } catch {
      // already gone
    }
    throw error;
  }
}

/** Concatenates the chunks a producer emits into one Uint8Array (for in-memory writes). */
export function collectBytes(produce: (sink: ByteSink) => void): Uint8Array {
  const chunks: Uint8Array[] = [];
  let total = 0;
  produce((chunk) => {
    chunks.push(chunk);
    total += chunk.byteLength;
  });
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** `source` itself when it is bytes; the file's bytes when it is a path. */
export function bytesOf(source: Uint8Array | string): Uint8Array {
  return typeof source === 'string' ? readFileBytes(source) : source;
}
