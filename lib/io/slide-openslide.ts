/**
 * The OpenSlide slide backend: libopenslide through the native addon
 * (the `openslide*` functions of lib/native.ts), registered with priority 10 so that `openSlide(path)`
 * prefers it over the libvips fallback for every file OpenSlide recognizes (Aperio
 * SVS, Hamamatsu NDPI/VMS, MIRAX, Leica SCN, Philips TIFF, Ventana BIF, generic tiled
 * TIFF, ...). JPEG, PNG and untiled TIFF stay with the `sharp` backend.
 *
 * Pixels are what CLAM gets from openslide-python's `read_region(...).convert('RGB')`
 * (premultiplied ARGB un-premultiplied, transparent → `background`, default black).
 * Importing this module registers the backend; it reports itself unavailable (with
 * the reason) when the addon was built without libopenslide.
 */
import { FormatError, withCode } from './errors.js';
import { native, type NativeBinding } from '../native.js';
import { mppFromTiffResolution, registerSlideBackend, type RgbImage, type SlideBackend, type SlideHandle } from './slide.js';
import sharp from 'sharp';

let unavailable: string | null | undefined;

/** True when the loaded addon was built against libopenslide. */
export function openslideBuilt(): boolean {
  return native().runtimeInfo().openslideBuilt === true;
}

/** Null when OpenSlide can be used, else why not (cached). */
function openslideUnavailableReason(): string | null {
  if (unavailable !== undefined) return unavailable;
  try {
    unavailable = openslideBuilt()
      ? null
      : 'the native addon was built without libopenslide (install libopenslide-dev, then rebuild: npm rebuild mstar-node)';
  } catch (error) {
    unavailable = `the native addon did not load: ${(error as Error).message.split('\n')[0]}`;
  }
  return unavailable;
}

function slideReadError(message: string, cause: unknown): Error & { code: string } {
  return withCode(new Error(message, { cause }), 'ERR_SLIDE_READ');
}

class OpenSlideHandle implements SlideHandle {
  readonly levelDimensions: readonly (readonly [number, number])[];
  readonly levelDownsamples: readonly number[];
  readonly properties: Readonly<Record<string, string>>;
  private closed = false;

  constructor(
    private readonly binding: NativeBinding,
    private readonly path: string,
    private readonly handle: number,
  ) {
    const info = binding.openslideInfo(handle);
    this.levelDimensions = info.levelDimensions.map(([w, h]) => [w, h] as const);
    this.levelDownsamples = info.levelDownsamples;
    const properties = { ...info.properties };
    // libopenslide < 4.0 reports no mpp for generic TIFF; 4.0 derives it from the resolution tags, as the sharp backend does.
    if (properties['openslide.vendor'] === 'generic-tiff' && properties['openslide.mpp-x'] === undefined) {
      const mpp = mppFromTiffResolution(properties);
      if (mpp) {
        properties['openslide.mpp-x'] = String(mpp.x);
        properties['openslide.mpp-y'] = String(mpp.y);
      }
    }
    this.properties = properties;
  }

  async readRegion(x: number, y: number, level: number, w: number, h: number, background: readonly [number, number, number]): Promise<Uint8Array> {
    if (this.closed) throw slideReadError(`${this.path}: the slide is closed`, undefined);
    const out = new Uint8Array(w * h * 3);
    try {
      await this.binding.openslideReadRegion(this.handle, x, y, level, w, h, out, background);
    } catch (error) {
      const e = error as Error & { code?: string };
      if (e.code === 'ERR_RANGE' || e.code === 'ERR_OOM') throw error;
      const message = this.closed ? 'the slide is closed' : e.message;
      throw slideReadError(message.includes(this.path) ? message : `${this.path}: ${message}`, error);
    }
    return out;
  }

  async thumbnail(level: number, width: number, height: number): Promise<RgbImage> {
    const [lw, lh] = this.levelDimensions[level];
    const whole = await this.readRegion(0, 0, level, lw, lh, [0, 0, 0]);
    const { data, info } = await sharp(whole, { raw: { width: lw, height: lh, channels: 3 } })
      .resize(width, height, { fit: 'fill' })
      .raw()
      .toBuffer({ resolveWithObject: true });
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.binding.openslideClose(this.handle);
  }
}

/** libopenslide through the addon; available when the addon was built with it. */
export const openslideSlideBackend: SlideBackend = {
  name: 'openslide',
  unavailableReason: openslideUnavailableReason,
  canOpen(path) {
    try {
      return native().openslideDetectVendor(path) !== null;
    } catch {
      return false;
    }
  },
  async open(path) {
    const binding = native();
    let handle: number;
    try {
      handle = binding.openslideOpen(path);
    } catch (error) {
      throw new FormatError(`${path}: ${(error as Error).message}`, 'ERR_FORMAT', { cause: error });
    }
    try {
      return new OpenSlideHandle(binding, path, handle);
    } catch (error) {
      binding.openslideClose(handle);
      throw new FormatError(`${path}: ${(error as Error).message}`, 'ERR_FORMAT', { cause: error });
    }
  },
};

registerSlideBackend(openslideSlideBackend, 10);
