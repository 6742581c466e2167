/**
 * mSTAR's patch transform, torchvision-exact: decode → RGB (as PIL's `Image.open(p).convert('RGB')`) →
 * `Resize(224)` (PIL bilinear, antialiased, uint8) → `ToTensor()` → `Normalize(ImageNet mean, std)`.
 *
 * References: torchvision `transforms/functional.py` (`to_tensor`: `img.to(float32).div(255)`; `normalize`:
 * `tensor.sub_(mean).div_(std)` with mean/std as float32 tensors), Pillow `Convert.c` (RGBA→RGB drops alpha,
 * L/LA replicate, `I16_RGB` clips 16-bit grey at 255), Pillow's PNG/TIFF unpackers (`RGB;16B` keeps the high
 * byte of 16-bit colour samples).
 *
 * Float32 rounding: every step of ToTensor + Normalize is one IEEE float32 operation, so each output value is a
 * function of (channel, byte) only; we tabulate it once (3 × 256 entries), which is both exact and fast.
 */
import sharp, { type OutputInfo, type SharpOptions } from 'sharp';
import { checkPositiveInteger, invalidArgument, rangeError, MstarError } from '../errors.js';
import { type Image8, resizeTorchvision } from './resize.js';

/** An 8-bit RGB image: `data` is `[height, width, 3]` uint8 (HWC). */
export interface RgbImage extends Image8 {
  channels: 3;
}

/** A float32 image tensor `[3, H, W]` (CHW) or a batch `[N, 3, H, W]`. */
export interface ImageTensor {
  data: Float32Array;
  shape: number[];
}

/** ImageNet statistics used by mSTAR (timm/torchvision defaults). */
export const IMAGENET_MEAN: readonly [number, number, number] = [0.485, 0.456, 0.406];
export const IMAGENET_STD: readonly [number, number, number] = [0.229, 0.224, 0.225];

export interface LoadImageOptions {
  /** sharp's decompression-bomb guard, in pixels (default: sharp's 0x3FFF²); `false` removes it. */
  limitInputPixels?: number | false;
  /** Page of a multi-page file (TIFF), zero based. Default 0. */
  page?: number;
}

/**
 * Decodes JPEG/PNG/TIFF (anything sharp reads) to 8-bit RGB the way PIL's `Image.open(src).convert('RGB')` does:
 * no EXIF rotation, no ICC colour conversion, alpha dropped (not composited), grey replicated to three bands,
 * 16-bit colour samples reduced to their high byte, 16-bit grey clipped at 255.
 * Differs from PIL for CMYK input (sharp converts through an ICC profile, PIL uses a naive formula).
 *
 * @param source  a file path, or the encoded file's bytes.
 * @returns       `{ width, height, channels: 3, data: [height, width, 3] uint8 }`.
 */
export async function loadImageRgb(source: string | Uint8Array, options: LoadImageOptions = {}): Promise<RgbImage> {
  if (typeof source !== 'string' && !(source instanceof Uint8Array)) {
    throw invalidArgument('source', 'a file path or a Buffer/Uint8Array of encoded image bytes', source);
  }
  const input = typeof source === 'string' ? source : Buffer.from(source.buffer, source.byteOffset, source.byteLength);
  const sharpOptions: SharpOptions = { ignoreIcc: true, page: options.page ?? 0 };
  if (options.limitInputPixels !== undefined) sharpOptions.limitInputPixels = options.limitInputPixels;
  let decoded: { data: Buffer; info: OutputInfo };
  let sixteenBit: boolean;
  try {
    const metadata = await sharp(input, sharpOptions).metadata();
    sixteenBit = metadata.depth === 'ushort';
    const pipeline = sharp(input, sharpOptions);
    // 16-bit input: keep the samples (sharp would otherwise convert to 8-bit sRGB itself) and reduce them below
    // the way PIL does. Same interpretation in and out, so toColourspace changes no values.
    if (sixteenBit) pipeline.toColourspace((metadata.channels ?? 3) <= 2 ? 'grey16' : 'rgb16');
    decoded = await pipeline.raw({ depth: sixteenBit ? 'ushort' : 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (error) {
    const where = typeof source === 'string' ? source : `a buffer of ${source.byteLength} bytes`;
    throw new MstarError('ERR_FORMAT', `Cannot decode image ${where}: ${(error as Error).message}`);
  }
  const { width, height, channels } = decoded.info;
  const pixels = width * height;
  let bytes: Uint8Array;
  if (sixteenBit) {
    const words = new Uint16Array(pixels * channels);
    // Raw ushort output is in native (little-endian) order; copy to get an aligned view.
    new Uint8Array(words.buffer).set(decoded.data.subarray(0, words.byteLength));
    bytes = new Uint8Array(pixels * channels);
    if (channels === 1) {
      // PIL opens 16-bit grey as mode "I;16"; convert('RGB') (I16_RGB) clips at 255.
      for (let i = 0; i < words.length; i++) bytes[i] = words[i] > 255 ? 255 : words[i];
    } else {
      // PIL unpacks 16-bit colour/LA samples as "RGB;16B"/"LA;16B": the most significant byte.
      for (let i = 0; i < words.length; i++) bytes[i] = words[i] >>> 8;
    }
  } else {
    bytes = new Uint8Array(decoded.data.buffer, decoded.data.byteOffset, decoded.data.byteLength);
  }
  return { width, height, channels: 3, data: toRgb(bytes, pixels, channels) };
}

/** L, LA, RGB, RGBA (`[P, channels]`) → RGB `[P, 3]`: grey replicated, alpha dropped (PIL `convert('RGB')`). */
function toRgb(src: Uint8Array, pixels: number, channels: number): Uint8Array {
  if (channels === 3) return src.byteOffset === 0 && src.byteLength === src.buffer.byteLength ? src : src.slice();
  const out = new Uint8Array(pixels * 3);
  if (channels === 1 || channels === 2) {
    for (let p = 0, i = 0; p < pixels; p++, i += channels) {
      const v = src[i];
      out[3 * p] = v;
      out[3 * p + 1] = v;
      out[3 * p + 2] = v;
    }
  } else if (channels === 4) {
    for (let p = 0, i = 0; p < pixels; p++, i += 4) {
      out[3 * p] = src[i];
      out[3 * p + 1] = src[i + 1];
      out[3 * p + 2] = src[i + 2];
    }
  } else {
    throw new MstarError('ERR_UNSUPPORTED', `Cannot convert a ${channels}-band image to RGB`);
  }
  return out;
}

/**
 * The 3×256 table of `Normalize(ToTensor(v))` values: `f32(f32(f32(v / 255) − mean_c) / std_c)`, with
 * mean and std rounded to float32 first as `torch.as_tensor(mean, dtype=float32)` does.
 */
function normalizationTable(mean: readonly number[], std: readonly number[]): Float32Array {
  const table = new Float32Array(3 * 256);
  for (let c = 0; c < 3; c++) {
    const m = Math.fround(mean[c]);
    const s = Math.fround(std[c]);
    for (let v = 0; v < 256; v++) {
      const x = Math.fround(v / 255);
      table[c * 256 + v] = Math.fround(Math.fround(x - m) / s);
    }
  }
  return table;
}

const tableCache = new Map<string, Float32Array>();
function cachedTable(mean: readonly number[], std: readonly number[]): Float32Array {
  const key = `${mean.join(',')}|${std.join(',')}`;
  let table = tableCache.get(key);
  if (table === undefined) {
    table = normalizationTable(mean, std);
    tableCache.set(key, table);
  }
  return table;
}

function checkRgb(name: string, image: RgbImage): void {
  if (image === null || typeof image !== 'object') throw invalidArgument(name, 'an RGB image {width, height, channels: 3, data}', image);
  checkPositiveInteger(`${name}.width`, image.width);
  checkPositiveInteger(`${name}.height`, image.height);
  if (image.channels !== 3) throw invalidArgument(`${name}.channels`, '3', image.channels);
  if (!(image.data instanceof Uint8Array)) throw invalidArgument(`${name}.data`, 'a Uint8Array', image.data);
  if (image.data.length !== image.width * image.height * 3) {
    throw rangeError('ERR_SHAPE', `Expected ${name}.data to hold width·height·3 = ${image.width * image.height * 3} bytes but it holds ${image.data.length}`);
  }
}

export interface NormalizeOptions {
  mean?: readonly [number, number, number];
  std?: readonly [number, number, number];
}

/**
 * torchvision `Normalize(mean, std)(ToTensor()(image))`: `[H, W, 3]` uint8 → `[3, H, W]` float32, bit-exact.
 * Writes into `out` at `offset` when given (for batching without copies).
 */
export function toTensorNormalize(
  image: RgbImage,
  options: NormalizeOptions = {},
  out?: Float32Array,
  offset = 0,
): ImageTensor {
  checkRgb('image', image);
  const { width, height, data } = image;
  const plane = width * height;
  const table = cachedTable(options.mean ?? IMAGENET_MEAN, options.std ?? IMAGENET_STD);
  const target = out ?? new Float32Array(3 * plane);
  if (target.length < offset + 3 * plane) {
    throw rangeError('ERR_SHAPE', `Expected out to hold ${offset + 3 * plane} floats but it holds ${target.length}`);
  }
  const g = offset + plane;
  const b = offset + 2 * plane;
  for (let p = 0, i = 0; p < plane; p++, i += 3) {
    target[offset + p] = table[data[i]];
    target[g + p] = table[256 + data[i + 1]];
    target[b + p] = table[512 + data[i + 2]];
  }
  return { data: out === undefined ? target : target.subarray(offset, offset + 3 * plane), shape: [3, height, width] };
}

export interface MstarTransformOptions extends NormalizeOptions {
  /**
   * `224` (default; any positive int): torchvision `Resize(n)` — shorter side to n, PIL bilinear antialiased.
   * `'none'`: feed the image at its own size (ToTensor + Normalize only).
   */
  resize?: number | 'none';
}

/**
 * mSTAR's transform on a decoded RGB image: `[H, W, 3]` uint8 → `[3, H', W']` float32, where `H', W'` follow
 * torchvision's `Resize(resize)` rule (or equal `H, W` for `resize: 'none'`).
 */
export function mstarTransform(image: RgbImage, options: MstarTransformOptions = {}): ImageTensor {
  checkRgb('image', image);
  const resize = options.resize ?? 224;
  if (resize !== 'none') checkPositiveInteger('options.resize', resize);
  const resized = resize === 'none' ? image : (resizeTorchvision(image, resize) as RgbImage);
  return toTensorNormalize(resized, options);
}

/**
 * Stacks `[3, H, W]` tensors into one `[N, 3, H, W]` batch. All must share H and W (torch.stack semantics).
 */
export function stackImages(images: readonly ImageTensor[]): ImageTensor {
  if (!Array.isArray(images) || images.length === 0) throw invalidArgument('images', 'a non-empty array of [3, H, W] tensors', images);
  const shape = images[0].shape;
  if (shape.length !== 3) throw rangeError('ERR_SHAPE', `Expected images[0] to be [3, H, W] but its shape is [${shape.join(', ')}]`);
  const size = shape[0] * shape[1] * shape[2];
  const out = new Float32Array(images.length * size);
  images.forEach((image, n) => {
    const s = image.shape;
    if (s.length !== 3 || s[0] !== shape[0] || s[1] !== shape[1] || s[2] !== shape[2] || image.data.length !== size) {
      throw rangeError('ERR_SHAPE', `Expected images[${n}] to be [${shape.join(', ')}] like images[0] but it is [${s.join(', ')}]`);
    }
    out.set(image.data, n * size);
  });
  return { data: out, shape: [images.length, ...shape] };
}

/** Decode + mSTAR transform in one call: file or bytes → `[3, H', W']` float32. */
export async function loadAndTransform(
  source: string | Uint8Array,
  options: MstarTransformOptions & LoadImageOptions = {},
): Promise<ImageTensor> {
  return mstarTransform(await loadImageRgb(source, options), options);
}
