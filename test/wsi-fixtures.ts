/**
 * Real-format slides built inside the tests: H&E pixels from test/fixtures/preprocess/patch.png
 * tiled over part of a white canvas, saved as a libvips pyramidal TIFF (sharp) or
 * as a hand-laid TIFF (uncompressed, tiled or stripped pages, optional SubIFDs and
 * ImageDescription) shaped like an Aperio SVS.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';

const here = dirname(fileURLToPath(import.meta.url));

export interface Raw {
  width: number;
  height: number;
  /** [height, width, 3] RGB. */
  data: Uint8Array;
}

export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** test/fixtures/preprocess/patch.png as RGB (512 × 512 H&E). */
export async function loadPatch(): Promise<Raw> {
  const { data, info } = await sharp(join(here, 'fixtures/preprocess/patch.png')).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, data: new Uint8Array(data) };
}

/**
 * A white (255) canvas with H&E texture inside the ellipse centred (cx, cy) with
 * radii (rx, ry) (fractions of the size); the texture is `patch` tiled from the origin.
 */
export function tissueCanvas(width: number, height: number, patch: Raw, ellipse = { cx: 0.37, cy: 0.45, rx: 0.27, ry: 0.3 }): Raw {
  const data = new Uint8Array(width * height * 3).fill(255);
  // The texture's rows repeated across the full width, built once per patch row.
  const rows = Array.from({ length: patch.height }, (_, py) => {
    const row = new Uint8Array(width * 3);
    const src = patch.data.subarray(py * patch.width * 3, (py + 1) * patch.width * 3);
    for (let x = 0; x < width; x += patch.width) row.set(src.subarray(0, Math.min(patch.width, width - x) * 3), x * 3);
    return row;
  });
  const cx = ellipse.cx * width;
  const cy = ellipse.cy * height;
  const rx = ellipse.rx * width;
  const ry = ellipse.ry * height;
  for (let y = 0; y < height; y++) {
    const dy = (y - cy) / ry;
    if (dy * dy > 1) continue;
    const half = rx * Math.sqrt(1 - dy * dy);
    const x0 = Math.max(0, Math.ceil(cx - half));
    const x1 = Math.min(width - 1, Math.floor(cx + half));
    if (x1 >= x0) data.set(rows[y % patch.height].subarray(x0 * 3, (x1 + 1) * 3), (y * width + x0) * 3);
  }
  return { width, height, data };
}

/** Box-filter downsample by an integer factor (edges: partial blocks averaged over what exists). */
export function boxDownsample(src: Raw, factor: number): Raw {
  const width = Math.floor(src.width / factor);
  const height = Math.floor(src.height / factor);
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let yy = 0; yy < factor; yy++) for (let xx = 0; xx < factor; xx++) sum += src.data[((y * factor + yy) * src.width + x * factor + xx) * 3 + c];
        data[(y * width + x) * 3 + c] = Math.round(sum / (factor * factor));
      }
    }
  }
  return { width, height, data };
}

/** Crop [x, x+w) × [y, y+h) of `src`, pixels outside set to `fill`. */
export function crop(src: Raw, x: number, y: number, w: number, h: number, fill = 0): Uint8Array {
  const out = new Uint8Array(w * h * 3).fill(fill);
  const x0 = Math.max(x, 0);
  const x1 = Math.min(x + w, src.width);
  if (x1 <= x0) return out;
  for (let r = 0; r < h; r++) {
    const sy = y + r;
    if (sy < 0 || sy >= src.height) continue;
    out.set(src.data.subarray((sy * src.width + x0) * 3, (sy * src.width + x1) * 3), (r * w + (x0 - x)) * 3);
  }
  return out;
}

/** libvips pyramidal tiled TIFF (256-px tiles), as sharp writes it; `xres` in pixels per mm. */
export async function writeSharpPyramid(
  path: string,
  img: Raw,
  options: { compression?: 'jpeg' | 'deflate' | 'lzw' | 'none'; xres?: number; resolutionUnit?: 'inch' | 'cm' } = {},
): Promise<void> {
  await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
    .tiff({
      tile: true,
      pyramid: true,
      tileWidth: 256,
      tileHeight: 256,
      compression: options.compression ?? 'jpeg',
      quality: 90,
      ...(options.xres !== undefined ? { xres: options.xres, yres: options.xres, resolutionUnit: options.resolutionUnit ?? 'cm' } : {}),
    })
    .toFile(path);
}

export interface TiffPage {
  image: Raw;
  /** Tile side; 0 = one strip. */
  tile: number;
  subfileType?: number;
  description?: string;
  /** Pages stored as SubIFDs of this page (only for page 0). */
  subifds?: TiffPage[];
}

/**
 * Writes an uncompressed little-endian classic TIFF with the given pages in the main
 * IFD chain (TIFF 6.0: tiles padded to full size at the edges, chunky RGB).
 */
export function writeTiff(path: string, pages: TiffPage[]): void {
  const chunks: Uint8Array[] = [];
  let size = 8;
  const append = (bytes: Uint8Array): number => {
    const at = size;
    chunks.push(bytes);
    size += bytes.length;
    if (size % 2) {
      chunks.push(new Uint8Array(1));
      size += 1;
    }
    return at;
  };
  const u16 = (v: number[]): Uint8Array => new Uint8Array(Uint16Array.from(v).buffer);
  const u32 = (v: number[]): Uint8Array => new Uint8Array(Uint32Array.from(v).buffer);

  /** Writes a page's pixel data and IFD; returns the IFD offset and where its next-IFD pointer lives. */
  const writePage = (page: TiffPage, subifdOffsets: number[]): { ifd: number; nextAt: number } => {
    const { image, tile } = page;
    const offsets: number[] = [];
    const counts: number[] = [];
    if (tile > 0) {
      for (let ty = 0; ty < Math.ceil(image.height / tile); ty++) {
        for (let tx = 0; tx < Math.ceil(image.width / tile); tx++) {
          const t = crop(image, tx * tile, ty * tile, tile, tile, 0);
          offsets.push(append(t));
          counts.push(t.length);
        }
      }
    } else {
      offsets.push(append(image.data));
      counts.push(image.data.length);
    }
    // Entries: [tag, type, count, value-or-bytes]. Types: 2 ASCII, 3 SHORT, 4 LONG.
    const entries: [number, number, number, Uint8Array][] = [];
    const put = (tag: number, type: number, values: number[] | Uint8Array): void => {
      const bytes = values instanceof Uint8Array ? values : type === 3 ? u16(values) : u32(values);
      entries.push([tag, type, values instanceof Uint8Array ? values.length : values.length, bytes]);
    };
    put(254, 4, [page.subfileType ?? 0]);
    put(256, 4, [image.width]);
    put(257, 4, [image.height]);
    put(258, 3, [8, 8, 8]);
    put(259, 3, [1]);
    put(262, 3, [2]);
    if (page.description !== undefined) put(270, 2, new TextEncoder().encode(page.description + '\0'));
    if (tile === 0) put(273, 4, offsets);
    put(277, 3, [3]);
    if (tile === 0) {
      put(278, 4, [image.height]);
      put(279, 4, counts);
    }
    put(284, 3, [1]);
    if (tile > 0) {
      put(322, 4, [tile]);
      put(323, 4, [tile]);
      put(324, 4, offsets);
      put(325, 4, counts);
    }
    if (subifdOffsets.length > 0) put(330, 4, subifdOffsets);
    entries.sort((a, b) => a[0] - b[0]);
    // Out-of-line values first, then the IFD.
    const valueAt = entries.map(([, , , bytes]) => (bytes.length > 4 ? append(bytes) : -1));
    const ifd = new Uint8Array(2 + entries.length * 12 + 4);
    const view = new DataView(ifd.buffer);
    view.setUint16(0, entries.length, true);
    entries.forEach(([tag, type, count, bytes], i) => {
      const at = 2 + i * 12;
      view.setUint16(at, tag, true);
      view.setUint16(at + 2, type, true);
      view.setUint32(at + 4, count, true);
      if (bytes.length > 4) view.setUint32(at + 8, valueAt[i], true);
      else ifd.set(bytes, at + 8);
    });
    const ifdAt = append(ifd);
    return { ifd: ifdAt, nextAt: ifdAt + 2 + entries.length * 12 };
  };

  const patches: [number, number][] = []; // [position, value] of next-IFD pointers to fill
  let first = 0;
  let prevNextAt = -1;
  pages.forEach((page, index) => {
    const subOffsets = index === 0 && page.subifds ? page.subifds.map((s) => writePage(s, []).ifd) : [];
    const { ifd, nextAt } = writePage(page, subOffsets);
    if (prevNextAt < 0) first = ifd;
    else patches.push([prevNextAt, ifd]);
    prevNextAt = nextAt;
  });
  const out = new Uint8Array(size);
  let at = 8;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  out.set([0x49, 0x49, 42, 0], 0);
  const view = new DataView(out.buffer);
  view.setUint32(4, first, true);
  for (const [pos, value] of patches) view.setUint32(pos, value, true);
  writeFileSync(path, out);
}

/** An Aperio ImageDescription as Aperio ScanScope writes it (fields separated by '|'). */
export function aperioDescription(width: number, height: number, mpp: number, appMag: number): string {
  return `Aperio Image Library v12.0.15 \r\n${width}x${height} [0,0 ${width}x${height}] (256x256) RAW|AppMag = ${appMag}|StripeWidth = 2040|ScanScope ID = SS1234|MPP = ${mpp.toFixed(4)}|Left = 25.0|Top = 18.5`;
}

/**
 * Damages a classic little-endian TIFF written by `writeTiff` so that it still opens
 * but the last `fraction` of page 0's tiles cannot be read: their TileOffsets (324) are
 * pointed past the end of the file. Returns how many tiles were damaged.
 */
export function corruptLastTiles(path: string, fraction = 0.5): number {
  const bytes = new Uint8Array(readFileSync(path));
  const view = new DataView(bytes.buffer);
  if (view.getUint16(0, true) !== 0x4949 || view.getUint16(2, true) !== 42) throw new Error(`${path}: not a classic little-endian TIFF`);
  const ifd = view.getUint32(4, true);
  const entries = view.getUint16(ifd, true);
  for (let i = 0; i < entries; i++) {
    const at = ifd + 2 + 12 * i;
    if (view.getUint16(at, true) !== 324) continue;
    const count = view.getUint32(at + 4, true);
    const values = count > 1 ? view.getUint32(at + 8, true) : at + 8;
    const damaged = Math.max(1, Math.floor(count * fraction));
    for (let k = count - damaged; k < count; k++) view.setUint32(values + 4 * k, bytes.length + 1_000_000 + k, true);
    writeFileSync(path, bytes);
    return damaged;
  }
  throw new Error(`${path}: page 0 has no TileOffsets`);
}
