/**
 * Atomic file output: write to a temporary name in the destination folder, then
 * rename over the destination (rename(2) within one file system is atomic), so a
 * killed run never leaves a truncated file under the final name.
 */
import { existsSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
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

/** Temporary names `temporaryPathFor` (`.NAME.PID.HEX.tmp`) and lib/io/files.ts (`NAME.tmp-PID`) leave when killed. */
const TEMPORARY_NAMES = [/^\.(.+)\.(\d+)\.[0-9a-f]+\.tmp$/, /^(.+)\.tmp-(\d+)$/];

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: string }).code === 'EPERM';
  }
}

/**
 * Removes the temporary files that killed writers (of this module or lib/io/files.ts)
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
    for (const pattern of TEMPORARY_NAMES) {
      const m = pattern.exec(name);
      if (!m) continue;
      const pid = Number(m[2]);
      if (pid === process.pid || processAlive(pid)) break; // a write that may still be running
      rmSync(join(dir, name), { force: true });
      removed.push(join(dir, name));
      break;
    }
  }
  return removed;
}
