/**
 * One batch of encoder inputs from a slide: read each patch as CLAM does
 * (`wsi.read_region((x, y), patch_level, (patch_size, patch_size)).convert('RGB')`,
 * (x, y) level-0), apply mSTAR's transform (torchvision Resize(224) PIL-exact,
 * ToTensor, ImageNet Normalize; lib/preprocess/transform.ts), and stack the results
 * into `[B, 3, 224, 224]` float32. This is the read stage that lib/wsi/reader-pool.ts
 * runs in worker threads.
 */
import type { Slide } from '../io/slide.js';
import { mstarTransform } from '../preprocess/transform.js';
import { torchvisionResizeSize } from '../preprocess/resize.js';

/** Shorter side after mSTAR's Resize. */
export const MSTAR_INPUT_SIZE = 224;

/** Elements of one transformed square patch of side `patchSize`: 3·224·224 ([3, 224, 224]). */
export function transformedPatchElements(patchSize: number): number {
  const { width, height } = torchvisionResizeSize(patchSize, patchSize, MSTAR_INPUT_SIZE);
  return 3 * width * height;
}

export interface PatchBatchSpec {
  /** [B, 2] level-0 (x, y) top-left corners, flattened. */
  coords: ArrayLike<number>;
  /** Pyramid level the patches are read at (CLAM `patch_level`). */
  level: number;
  /** Patch side in pixels of `level` (CLAM `patch_size`). */
  size: number;
  /** Regions read at once (decoding overlaps the transform of earlier patches). Default 4. */
  concurrency?: number;
}

/**
 * Reads and transforms the patches of `spec` into `out` ([B, 3, 224, 224], allocated
 * when not given or too small) and returns the filled view.
 *
 * @throws the slide's errors (ERR_RANGE for a patch entirely outside the slide,
 *         ERR_SLIDE_READ for decode failures), with the patch's row and coordinates added.
 */
export async function readPatchBatch(slide: Slide, spec: PatchBatchSpec, out?: Float32Array): Promise<Float32Array> {
  const { coords, level, size } = spec;
  const count = coords.length / 2;
  const per = transformedPatchElements(size);
  const target = out !== undefined && out.length >= count * per ? out.subarray(0, count * per) : new Float32Array(count * per);
  const concurrency = Math.max(1, spec.concurrency ?? 4);
  const read = (i: number): Promise<{ width: number; height: number; data: Uint8Array }> => {
    const region = slide.readRegion(coords[2 * i], coords[2 * i + 1], level, size, size).catch((error: Error & { code?: string }) => {
      error.message = `patch at (${coords[2 * i]}, ${coords[2 * i + 1]}) level ${level}: ${error.message}`;
      throw error;
    });
    // Reads ahead of the one awaited may fail first: mark them handled (the await still sees the
    // rejection), or Node reports an unhandled rejection and a worker thread dies of it.
    region.catch(() => undefined);
    return region;
  };
  // A sliding window of reads; patch i is transformed as soon as it and its predecessors are in.
  const pending: Promise<{ width: number; height: number; data: Uint8Array }>[] = [];
  for (let i = 0; i < Math.min(concurrency, count); i++) pending.push(read(i));
  try {
    for (let i = 0; i < count; i++) {
      const region = await pending[i];
      if (i + concurrency < count) pending.push(read(i + concurrency));
      const image = mstarTransform({ ...region, channels: 3 });
      target.set(image.data, i * per);
    }
  } finally {
    // Settle the reads still in flight so none rejects unobserved.
    await Promise.allSettled(pending);
  }
  return target;
}
