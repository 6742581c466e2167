/**
 * Atomic file output: write to a temporary name in the destination folder, then
 * rename over the destination (rename(2) within one file system is atomic), so a
 * killed run never leaves a truncated file under the final name.
 */
import { existsSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { temporaryPathFor } from './files.js';

export { temporaryPathFor };

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

/** The temporary names `temporaryPathFor` makes (`.NAME.PID.HEX.tmp`), which killed writers leave. */
const TEMPORARY_NAME = /^\.(.+)\.(\d+)\.[0-9a-f]+\.tmp$/;

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: string }).code === 'EPERM';
  }
}

/**
 * Removes the temporary files that killed writers (this module's and lib/io/files.ts's)
 * left in `dir`, skipping those of processes still running. Returns the paths removed.
 */
export function removeStaleTemporaries(dir: string): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return removed;
  }
  for (const name of names) {
    const m = TEMPORARY_NAME.exec(name);
    if (!m) continue;
    const pid = Number(m[2]);
    if (pid === process.pid || processAlive(pid)) continue; // a write that may still be running
    rmSync(join(dir, name), { force: true });
    removed.push(join(dir, name));
  }
  return removed;
}
