/**
 * One entry point for model weights: `.pth`/`.pt`/`.bin` (PyTorch zip or legacy)
 * and `.safetensors`, told apart by their first bytes, not their names.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { MstarError } from '../errors.js';
import type { HostTensor } from './host-tensor.js';
import { readSafetensors } from './safetensors.js';
import { readTorchCheckpoint } from './torch.js';

export type WeightsFormat = 'torch' | 'safetensors';

/** Sniffs the format: zip ("PK\x03\x04") or pickle (0x80 0x02) → torch; else safetensors (8-byte header length + '{'). */
export function detectWeightsFormat(path: string): WeightsFormat {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    throw new MstarError('ERR_FORMAT', `weights ${path}: ${e.code === 'ENOENT' ? 'file not found' : e.message}`);
  }
  const head = new Uint8Array(9);
  let n: number;
  try {
    n = readSync(fd, head, 0, 9, 0);
  } finally {
    closeSync(fd);
  }
  if (n >= 4 && head[0] === 0x50 && head[1] === 0x4b) return 'torch';
  if (n >= 2 && head[0] === 0x80 && head[1] === 0x02) return 'torch';
  if (n === 9 && head[8] === 0x7b) return 'safetensors';
  throw new MstarError('ERR_FORMAT', `weights ${path}: neither a PyTorch checkpoint nor a safetensors file`);
}

/**
 * Reads a state dict as name → HostTensor. Wrappers such as {"model": ...} or
 * {"state_dict": ...} are unwrapped; a `module.` prefix (DataParallel) on every
 * name is removed.
 */
export function loadStateDictFile(path: string): Map<string, HostTensor> {
  const tensors = detectWeightsFormat(path) === 'torch' ? readTorchCheckpoint(path) : readSafetensors(path).tensors;
  const names = [...tensors.keys()];
  if (names.length > 0 && names.every((n) => n.startsWith('module.'))) {
    return new Map([...tensors].map(([n, t]) => [n.slice('module.'.length), t]));
  }
  return tensors;
}
