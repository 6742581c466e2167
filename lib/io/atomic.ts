/**
 * Atomic file output: write to a temporary name in the destination folder, then
 * rename over the destination (rename(2) within one file system is atomic), so a
 * killed run never leaves a truncated file under the final name.
 */
import { existsSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** A fresh temporary path next to `path` (same folder, hidden, unique). */
export function temporaryPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

/**
 * Runs `write(tmp)` (which must create the file at `tmp`, synchronously or not), then
 * renames `tmp` to `path`. On any error the temporary file is removed and the error
 * rethrown; `path` is then untouched.
 */
export async function writeAtomically<T>(path: string, write: (tmp: string) => T | Promise<T>): Promise<T> {
  const tmp = temporaryPathFor(path);
  try {
    const result = await write(tmp);
    renameSync(tmp, path);
    return result;
  } catch (error) {
    if (existsSync(tmp)) rmSync(tmp, { force: true });
    throw error;
  }
}

/** `writeFileSync` through a temporary name. */
export async function writeFileAtomically(path: string, data: Uint8Array | string): Promise<void> {
  await writeAtomically(path, (tmp) => writeFileSync(tmp, data));
}
