/**
 * The patch-encoder API: load mSTAR (or any timm ViT) weights, embed images.
 *
 *   const encoder = await loadPatchEncoder('mSTAR.pth');
 *   const { features, dim } = await encoder.embed(['a.png', 'b.jpg']); // [N, 1024] row-major
 */
import { readFileSync } from 'node:fs';
import { checkPositiveInteger, invalidArgument, MstarError, rangeError } from './errors.js';
import { loadStateDictFile } from './io/checkpoint.js';
import { releaseFileBytes, releaseFilePages } from './io/files.js';
import { toFloat32 } from './io/host-tensor.js';
import { MSTAR_VIT_L16, VisionTransformer, vitConfigFromTimm, type VitConfig } from './models/vit.js';
import { loadImageRgb, mstarTransform, type ImageTensor } from './preprocess/transform.js';
import { withoutInit } from './random.js';
import { noGrad, Tensor, tidy } from './tensor.js';

export interface LoadPatchEncoderOptions {
  /** timm-style config.json path or object (default: mSTAR's ViT-L/16). */
  config?: string | object | VitConfig;
  /** 'cpu' (default) or 'auto'. The CUDA backend does not run the ViT yet; 'cuda' is refused. */
  device?: 'cpu' | 'auto';
  /** Strict loading (default true): missing/unexpected/mis-shaped tensors are an error. */
  strict?: boolean;
}

export interface EmbedOptions {
  /** 224 (default) applies mSTAR's Resize(224); 'none' feeds images at their own size. */
  resize?: number | 'none';
  /** Images per forward pass (default 16). */
  batchSize?: number;
  /** Called after each batch with (done, total). */
  onProgress?: (done: number, total: number) => void;
}

export interface EmbedResult {
  /** [N, D] float32, row-major, in input order. */
  features: Float32Array;
  count: number;
  dim: number;
}

export type ImageInput = string | Uint8Array | ImageTensor;

function isVitConfig(value: object): value is VitConfig {
  return 'embedDim' in value && 'patchSize' in value;
}

function resolveConfig(config: LoadPatchEncoderOptions['config']): VitConfig {
  if (config === undefined) return MSTAR_VIT_L16;
  if (typeof config === 'string') {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(config, 'utf8'));
    } catch (error) {
      throw new MstarError('ERR_FORMAT', `config ${config}: ${(error as Error).message}`);
    }
    return vitConfigFromTimm(json);
  }
  if (typeof config === 'object' && config !== null) return isVitConfig(config) ? config : vitConfigFromTimm(config);
  throw invalidArgument('config', 'a config.json path or object', config);
}

export class PatchEncoder {
  constructor(readonly model: VisionTransformer) {
    model.eval();
  }

  get dim(): number {
    return this.model.config.embedDim;
  }

  /**
   * Features of a batch tensor [B, 3, H, W] (already transformed) → [B, D] Tensor.
   * The caller owns the result.
   */
  embedTensor(batch: Tensor): Tensor {
    return tidy(() => noGrad(() => this.model.forward(batch).features.contiguous()));
  }

  /**
   * Embeds images (paths, encoded bytes, or transformed [3, H, W] tensors) in input
   * order, batching consecutive images of the same size.
   */
  async embed(images: readonly ImageInput[], { resize = 224, batchSize = 16, onProgress }: EmbedOptions = {}): Promise<EmbedResult> {
    if (!Array.isArray(images)) throw invalidArgument('images', 'an array of paths, buffers or [3, H, W] tensors', images);
    checkPositiveInteger('batchSize', batchSize);
    const D = this.dim;
    const features = new Float32Array(images.length * D);
    let done = 0;
    let pending: { index: number; image: ImageTensor }[] = [];
    const flush = (): void => {
      if (pending.length === 0) return;
      const [, H, W] = pending[0].image.shape;
      const per = 3 * H * W;
      const data = new Float32Array(pending.length * per);
      pending.forEach((p, i) => data.set(p.image.data, i * per));
      tidy(() => {
        const out = this.embedTensor(Tensor.fromArray(data, [pending.length, 3, H, W]));
        const values = out.data();
        pending.forEach((p, i) => features.set(values.subarray(i * D, (i + 1) * D), p.index * D));
      });
      done += pending.length;
      pending = [];
      onProgress?.(done, images.length);
    };
    for (let index = 0; index < images.length; index++) {
      const image = await toImageTensor(images[index], resize, index);
      const [, H, W] = image.shape;
      const p = this.model.config.patchSize;
      if (H % p !== 0 || W % p !== 0) {
        throw rangeError('ERR_SHAPE', `images[${index}]: ${W}×${H} after the transform is not a multiple of the patch size ${p}; use resize 224 or crop`);
      }
      if (pending.length > 0 && (pending[0].image.shape[1] !== H || pending[0].image.shape[2] !== W)) flush();
      pending.push({ index, image });
      if (pending.length === batchSize) flush();
    }
    flush();
    return { features, count: images.length, dim: D };
  }

  dispose(): void {
    this.model.dispose();
  }
}

async function toImageTensor(input: ImageInput, resize: number | 'none', index: number): Promise<ImageTensor> {
  if (typeof input === 'string' || input instanceof Uint8Array) return mstarTransform(await loadImageRgb(input), { resize });
  if (input && typeof input === 'object' && input.data instanceof Float32Array && Array.isArray(input.shape) && input.shape.length === 3) {
    return input;
  }
  throw invalidArgument(`images[${index}]`, 'a path, encoded image bytes or a {data, shape: [3, H, W]} tensor', input);
}

/**
 * Loads a patch encoder from a `.pth`/`.pt` (zip or legacy) or `.safetensors` state
 * dict (timm names; a `{"model": ...}`/`{"state_dict": ...}` wrapper or a `module.`
 * prefix is unwrapped).
 */
export async function loadPatchEncoder(weightsPath: string, options: LoadPatchEncoderOptions = {}): Promise<PatchEncoder> {
  if (typeof weightsPath !== 'string' || weightsPath.length === 0) throw invalidArgument('weightsPath', 'a file path', weightsPath);
  const device = options.device ?? 'cpu';
  if (device !== 'cpu' && device !== 'auto') {
    throw new MstarError('ERR_UNSUPPORTED', `device '${String(device)}': the patch encoder runs on the CPU backend in this version ('cpu' or 'auto')`);
  }
  const config = resolveConfig(options.config);
  const weights = loadStateDictFile(weightsPath);
  const model = withoutInit(() => new VisionTransformer(config));
  try {
    const values = new Map<string, { shape: readonly number[]; values: Float32Array }>();
    for (const [name, t] of weights) values.set(name, { shape: t.shape, values: toFloat32(t) });
    // Each tensor's file pages are given back once copied: one copy of the weights at a time.
    model.loadStateDict(values, { strict: options.strict ?? true, onCopied: (name) => releaseFilePages(weights.get(name)!.data) });
  } catch (error) {
    model.dispose();
    throw error;
  } finally {
    releaseFileBytes(weights.values());
  }
  return new PatchEncoder(model);
}
