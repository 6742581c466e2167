/**
 * Per-patch scores for heatmaps from whatever file holds them: HDF5 (CLAM's
 * `attention_scores` blocks, or any [N] dataset), a PyTorch `.pt`/`.pth` (a bare tensor
 * or a dict of tensors) or safetensors. A score vector is [N], [N, 1] or [1, N], any
 * numeric dtype; it is returned as float64.
 */
import { extname } from 'node:path';
import { readClamScores } from '../io/clam.js';
import { FormatError } from '../io/errors.js';
import { isHostTensor, toFloat64, type HostTensor } from '../io/host-tensor.js';
import { readSafetensors } from '../io/safetensors.js';
import { flattenTensors, readTorchFile } from '../io/torch.js';

export interface PatchScores {
  /** [N] float64. */
  scores: Float64Array;
  /** Dataset or tensor name ('' for a bare tensor). */
  name: string;
  /** [N, 2] int64 coordinates stored with the scores (HDF5 files that have them). */
  coords?: BigInt64Array;
}

function isVector(shape: readonly number[]): boolean {
  return shape.length === 1 || (shape.length === 2 && (shape[0] === 1 || shape[1] === 1));
}

/** The tensor `name`, or the only vector-shaped one, from a set of named tensors. */
function pickVector(tensors: ReadonlyMap<string, HostTensor>, path: string, name?: string): PatchScores {
  let chosen = name;
  if (chosen === undefined) {
    const candidates = [...tensors].filter(([, t]) => t.dtype !== 'bool' && isVector(t.shape)).map(([k]) => k);
    if (candidates.length !== 1) {
      throw new FormatError(
        `${path}: ${candidates.length === 0 ? 'no [N] tensor' : `several vector tensors (${candidates.slice(0, 8).join(', ')})`}; name the one to use (found: ${[...tensors.keys()].slice(0, 8).join(', ')})`,
      );
    }
    chosen = candidates[0];
  }
  const tensor = tensors.get(chosen);
  if (!tensor) throw new FormatError(`${path}: no tensor '${chosen}' (found: ${[...tensors.keys()].slice(0, 8).join(', ')})`);
  if (!isVector(tensor.shape)) throw new FormatError(`${path}: '${chosen}' has shape [${tensor.shape.join(', ')}], not [N] or [N, 1]`);
  return { scores: toFloat64(tensor), name: chosen };
}

/**
 * Reads a score vector.
 * @param name dataset (HDF5) or tensor name; default: the only vector in the file
 * @throws ERR_FORMAT for unreadable files, missing or ambiguous names, non-vector shapes
 */
export async function readPatchScores(path: string, name?: string): Promise<PatchScores> {
  const ext = extname(path).toLowerCase();
  if (ext === '.h5' || ext === '.hdf5') return readClamScores(path, name);
  if (ext === '.safetensors') return pickVector(readSafetensors(path).tensors, path, name);
  if (ext === '.pt' || ext === '.pth' || ext === '.bin') {
    const root = readTorchFile(path);
    if (isHostTensor(root)) {
      if (name !== undefined) throw new FormatError(`${path} holds a single tensor; drop the tensor name '${name}'`);
      if (!isVector(root.shape)) throw new FormatError(`${path}: the tensor has shape [${root.shape.join(', ')}], not [N] or [N, 1]`);
      return { scores: toFloat64(root), name: '' };
    }
    return pickVector(flattenTensors(root), path, name);
  }
  throw new FormatError(`${path}: scores must be in .h5, .pt/.pth or .safetensors (got '${ext || 'no extension'}')`);
}
