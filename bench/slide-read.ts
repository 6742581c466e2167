/**
 * Slide region reads: `Slide.readRegion` (sharp backend, decoded-tile cache) against
 * one plain libvips extract per patch (the anchor), on a generated 8192 × 6144 JPEG
 * pyramidal TIFF, 256-px patches at level 0.
 *
 *   npx tsx bench/slide-read.ts [--patches 600] [--concurrency 4] [--rounds 3]
 *
 * Orders: 'clam' walks a CLAM grid (x outer, y inner, offset from the tile grid as
 * contour bounding boxes are), 'random' jumps around. Each result is checked against
 * the anchor's pixels before timing. Rounds alternate ours / anchor and the best round
 * is reported, so load from other processes hurts both alike; patches per CPU-second
 * (user + system of this process, libvips threads included) is printed too, a figure
 * less sensitive to that load.
 */
import { existsSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { openSlide } from '../lib/io/slide.js';
import { loadPatch, tissueCanvas, writeSharpPyramid } from '../test/wsi-fixtures.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const patches = arg('patches', 600);
const concurrency = arg('concurrency', 4);
const rounds = arg('rounds', 3);
const path = join(tmpdir(), 'mstar-bench-slide-8192x6144.tif');
if (!existsSync(path)) {
  await writeSharpPyramid(path, tissueCanvas(8192, 6144, await loadPatch(), { cx: 0.5, cy: 0.5, rx: 0.5, ry: 0.5 }), { compression: 'jpeg' });
}

const grid: [number, number][] = [];
for (let x = 37; x + 256 <= 8192; x += 256) for (let y = 11; y + 256 <= 6144; y += 256) grid.push([x, y]);
const random = grid.map((_, k) => [(k * 7919) % 7900, (k * 104729) % 5800] as [number, number]);

async function anchorRead(x: number, y: number): Promise<Buffer> {
  return sharp(path, { page: 0, limitInputPixels: false }).extract({ left: x, top: y, width: 256, height: 256 }).raw().toBuffer();
}

async function timed(read: (x: number, y: number) => Promise<unknown>, pts: [number, number][]): Promise<{ wall: number; cpu: number }> {
  const n = Math.min(patches, pts.length);
  let next = 0;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        const [x, y] = pts[next++];
        await read(x, y);
      }
    }),
  );
  const c = process.cpuUsage(c0);
  return { wall: n / ((performance.now() - t0) / 1000), cpu: n / ((c.user + c.system) / 1e6) };
}

console.log(`slide-read: ${patches} patches of 256 px, concurrency ${concurrency}, load average ${loadavg()[0].toFixed(1)}`);
for (const [name, pts] of [['clam', grid], ['random', random]] as const) {
  const slide = await openSlide(path);
  // Validate first: our pixels equal the anchor's.
  for (const [x, y] of pts.slice(0, 8)) {
    const ours = await slide.readRegion(x, y, 0, 256, 256);
    if (!Buffer.from(ours.data).equals(await anchorRead(x, y))) throw new Error(`readRegion(${x}, ${y}) differs from the libvips extract`);
  }
  let best = { wall: 0, cpu: 0 };
  let bestAnchor = { wall: 0, cpu: 0 };
  for (let r = 0; r < rounds; r++) {
    const fresh = await openSlide(path); // cold tile cache each round
    const ours = await timed((x, y) => fresh.readRegion(x, y, 0, 256, 256), pts);
    fresh.close();
    const anchor = await timed(anchorRead, pts);
    if (ours.wall > best.wall) best = ours;
    if (anchor.wall > bestAnchor.wall) bestAnchor = anchor;
  }
  slide.close();
  console.log(
    `${name.padEnd(6)} readRegion ${best.wall.toFixed(0)} patches/s (${best.cpu.toFixed(0)} per CPU-s) | ` +
      `libvips extract ${bestAnchor.wall.toFixed(0)} patches/s (${bestAnchor.cpu.toFixed(0)} per CPU-s) | ratio ${(best.wall / bestAnchor.wall).toFixed(2)}×`,
  );
}
