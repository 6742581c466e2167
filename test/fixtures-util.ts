/**
 * Test-only fixture readers: a minimal safetensors parser (8-byte little-endian header length, JSON header,
 * raw little-endian data; https://github.com/huggingface/safetensors#format) and raw 8-bit image decoding.
 * Deliberately small and independent of lib/io so fixture tests do not depend on the code under test.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

/** Path under test/fixtures/. */
export function fixturePath(...parts: string[]): string {
  return join(FIXTURES, ...parts);
}

export function readJson<T = unknown>(...parts: string[]): T {
  return JSON.parse(readFileSync(fixturePath(...parts), 'utf8')) as T;
}

export interface FixtureTensor {
  dtype: string;
  shape: number[];
  /** Float32Array for F32/F16/BF16 (widened), Float64Array for F64, BigInt64Array for I64, etc. */
  data: Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array | Int8Array | Int16Array;
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** Reads every tensor of a safetensors file (fixtures are small). */
export function readSafetensors(...parts: string[]): Map<string, FixtureTensor> {
  const buf = readFileSync(fixturePath(...parts));
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8')) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const base = 8 + headerLen;
  const out = new Map<string, FixtureTensor>();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [begin, end] = info.data_offsets;
    // Copy so the typed array is aligned regardless of the header length.
    const bytes = new Uint8Array(buf.subarray(base + begin, base + end));
    const ab = bytes.buffer;
    let data: FixtureTensor['data'];
    switch (info.dtype) {
      case 'F32':
        data = new Float32Array(ab);
        break;
      case 'F64':
        data = new Float64Array(ab);
        break;
      case 'I64':
        data = new BigInt64Array(ab);
        break;
      case 'I32':
        data = new Int32Array(ab);
        break;
      case 'I16':
        data = new Int16Array(ab);
        break;
      case 'I8':
        data = new Int8Array(ab);
        break;
      case 'U8':
      case 'BOOL':
        data = bytes;
        break;
      case 'F16': {
        const h = new Uint16Array(ab);
        data = Float32Array.from(h, halfToFloat);
        break;
      }
      case 'BF16': {
        const h = new Uint16Array(ab);
        const f = new Float32Array(h.length);
        const u = new Uint32Array(f.buffer);
        for (let i = 0; i < h.length; i++) u[i] = h[i] << 16;
        data = f;
        break;
      }
      default:
        throw new Error(`fixture ${parts.join('/')}: unsupported dtype ${info.dtype} for ${name}`);
    }
    out.set(name, { dtype: info.dtype, shape: info.shape, data });
  }
  return out;
}

/** Decodes a fixture image as stored (no colour conversion): `{width, height, channels, data: [H, W, C] uint8}`. */
export async function readRawImage(
  ...parts: string[]
): Promise<{ width: number; height: number; channels: number; data: Uint8Array }> {
  const { data, info } = await sharp(fixturePath(...parts), { ignoreIcc: true })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, channels: info.channels, data: new Uint8Array(data) };
}

/** Crops `[y0:y1, x0:x1]` of an interleaved `[H, W, C]` image (PIL `Image.crop((x0, y0, x1, y1))`). */
export function cropImage<T extends { width: number; height: number; channels: number; data: Uint8Array }>(
  image: T,
  [x0, y0, x1, y1]: readonly number[],
): T {
  const c = image.channels;
  const w = x1 - x0;
  const h = y1 - y0;
  const data = new Uint8Array(w * h * c);
  for (let y = 0; y < h; y++) {
    const from = ((y0 + y) * image.width + x0) * c;
    data.set(image.data.subarray(from, from + w * c), y * w * c);
  }
  return { ...image, width: w, height: h, data };
}

/** Index and values of the first differing bytes, for readable failures. */
export function firstByteMismatches(actual: Uint8Array, expected: Uint8Array, limit = 8): string[] {
  const out: string[] = [];
  for (let i = 0; i < expected.length && out.length < limit; i++) {
    if (actual[i] !== expected[i]) out.push(`[${i}] got ${actual[i]}, want ${expected[i]}`);
  }
  return out;
}
