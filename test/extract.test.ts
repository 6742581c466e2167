/**
 * Feature extraction (lib/wsi/extract.ts, `mstar tile` + `mstar extract`) on slides
 * built here, with the small ViT fixture (test/fixtures/vit-tiny, D = 64) as encoder:
 * the CLI end to end in a child process, CLAM output conventions, equality with
 * embedding the same patches one by one, identical features from both slide
 * backends, kill-and-resume, and slides that fail (corrupt, damaged tiles, missing
 * coords, coords outside the slide) while the run goes on.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { extractCommand, heatmapCommand, tileCommand } from '../lib/cli/wsi.js';
import { loadPatchEncoder, type PatchEncoder } from '../lib/encoder.js';
import { readClamCoords, readClamFeatures, writeClamCoords } from '../lib/io/clam.js';
import { fromFloat32, isHostTensor, toFloat32 } from '../lib/io/host-tensor.js';
import { openslideBuilt } from '../lib/io/slide-openslide.js';
import { openSlide } from '../lib/io/slide.js';
import { readTorchFile, writeTorchTensor } from '../lib/io/torch.js';
import { mstarTransform } from '../lib/preprocess/transform.js';
import { extractFeatures, findCoordsFile, listSlides, type ExtractOptions } from '../lib/wsi/extract.js';
import { tileSlides } from '../lib/wsi/tile.js';
import { aperioDescription, boxDownsample, corruptLastTiles, loadPatch, tempDir, tissueCanvas, writeSharpPyramid, writeTiff } from './wsi-fixtures.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const weights = join(root, 'test/fixtures/vit-tiny/weights.safetensors');
const config = join(root, 'test/fixtures/vit-tiny/config.json');
const tmp = tempDir('mstar-extract-');
const slidesDir = join(tmp.dir, 'slides');
const coordsDir = join(tmp.dir, 'coords');
const tileOptions = { aT: 1 }; // the fixtures are small: keep every tissue blob (CLAM's a_t = 100 reference patches)
let encoder: PatchEncoder;

/** Runs the whole-slide CLI (test/wsi-cli.ts) in a child process; `killWhen` is polled every 20 ms. */
function spawnCli(args: string[], { killWhen }: { killWhen?: () => boolean } = {}): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    // h5wasm is preloaded before tsx's hooks: through them its 4 MB of emscripten output costs seconds to load.
    const node = ['--import', 'h5wasm/node', '--import', 'tsx', join(root, 'test/wsi-cli.ts')];
    const child = spawn(process.execPath, [...node, ...args], { cwd: root, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = killWhen ? setInterval(() => killWhen() && child.kill('SIGKILL'), 20) : undefined;
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (timer) clearInterval(timer);
      resolve({ code, signal, stderr });
    });
  });
}

/**
 * Runs a whole-slide subcommand in this process, as lib/cli.ts `main` would (a child
 * process costs seconds of TypeScript loading): what it printed, and its exit status.
 */
async function runCli(args: string[]): Promise<{ code: number; stderr: string }> {
  const [name, ...rest] = args;
  const command = { tile: tileCommand, extract: extractCommand, heatmap: heatmapCommand }[name as 'tile' | 'extract' | 'heatmap']();
  const lines: string[] = [];
  const spy = vi.spyOn(console, 'error').mockImplementation((...parts: unknown[]) => void lines.push(parts.join(' ')));
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string | Uint8Array) => lines.push(String(chunk)) > 0) as typeof process.stderr.write;
  const saved = process.exitCode;
  process.exitCode = 0;
  try {
    await command.exitOverride().configureOutput({ writeErr: (s) => lines.push(s), writeOut: (s) => lines.push(s) }).parseAsync(rest, { from: 'user' });
  } catch (error) {
    const e = error as Error & { code?: string; exitCode?: number };
    lines.push(`mstar: ${e.message} [${e.code}]`);
    process.exitCode = e.exitCode ?? 1;
  } finally {
    spy.mockRestore();
    process.stderr.write = write;
  }
  const code = Number(process.exitCode ?? 0);
  process.exitCode = saved;
  return { code, stderr: lines.join('\n') };
}

function options(extra: Partial<ExtractOptions> & Pick<ExtractOptions, 'outDir'>): ExtractOptions {
  return { slidesDir, coordsDir, encoder, batchSize: 8, readers: 1, ...extra };
}

beforeAll(async () => {
  mkdirSync(slidesDir, { recursive: true });
  const patch = await loadPatch();
  await writeSharpPyramid(join(slidesDir, 'alpha.tif'), tissueCanvas(2048, 1536, patch), { compression: 'jpeg', xres: 2000, resolutionUnit: 'cm' });
  const l0 = tissueCanvas(2048, 1536, patch, { cx: 0.55, cy: 0.5, rx: 0.3, ry: 0.38 });
  writeTiff(join(slidesDir, 'beta.svs'), [
    { image: l0, tile: 256, description: aperioDescription(2048, 1536, 0.499, 20) },
    { image: boxDownsample(l0, 4), tile: 256 },
    { image: boxDownsample(l0, 16), tile: 256 },
  ]);
  encoder = await loadPatchEncoder(weights, { config });
  const tiled = await tileSlides([join(slidesDir, 'alpha.tif'), join(slidesDir, 'beta.svs')], { outDir: coordsDir, ...tileOptions, preview: false });
  expect(tiled.done).toBe(2);
});

afterAll(() => {
  encoder?.dispose();
  tmp.cleanup();
});

describe('mstar tile then mstar extract (CLI)', () => {
  const out = join(tmp.dir, 'cli-out');

  it('runs end to end on a pyramidal TIFF and an SVS and writes CLAM h5 + torch pt', async () => {
    const cliCoords = join(tmp.dir, 'cli-coords');
    const tiled = await runCli(['tile', join(slidesDir, 'alpha.tif'), join(slidesDir, 'beta.svs'), '--out', cliCoords, '--min-tissue-area', '1']);
    expect(tiled.code, tiled.stderr).toBe(0);
    expect(tiled.stderr).toMatch(/2 done, 0 skipped, 0 failed/);
    expect(existsSync(join(cliCoords, 'alpha_preview.png'))).toBe(true);
    const extracted = await runCli(['extract', '--slides', slidesDir, '--coords', cliCoords, '--weights', weights, '--config', config, '--out', out, '--batch', '8']);
    expect(extracted.code, extracted.stderr).toBe(0);
    expect(extracted.stderr).toMatch(/2 slide\(s\): 2 done, 0 rebuilt, 0 skipped, 0 failed/);
    expect(extracted.stderr).toMatch(/patches\/s/); // the plain progress line of a non-TTY run
    for (const name of ['alpha', 'beta']) {
      const coords = await readClamCoords(join(cliCoords, `${name}.h5`));
      expect(coords.coords).toEqual((await readClamCoords(join(coordsDir, `${name}.h5`))).coords); // the CLI tiles as the API does
      expect(coords.count).toBeGreaterThan(8);
      const h5 = await readClamFeatures(join(out, 'h5_files', `${name}.h5`));
      expect(h5.shape).toEqual([coords.count, 64]);
      expect(h5.features).toBeInstanceOf(Float32Array);
      expect(h5.coords).toEqual(coords.coords);
      const pt = readTorchFile(join(out, 'pt_files', `${name}.pt`));
      if (!isHostTensor(pt)) throw new Error('the .pt must hold one tensor');
      expect([pt.dtype, pt.shape]).toEqual(['float32', [coords.count, 64]]);
      expect(toFloat32(pt)).toEqual(h5.features);
    }
    // Flags are checked with clear messages.
    const bad = await runCli(['extract', '--slides', slidesDir, '--coords', coordsDir, '--weights', weights, '--out', out, '--format', 'npy']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/--format.*expected a comma-separated list of h5 and pt, got 'npy'/s);
    const missing = await runCli(['extract', '--slides', slidesDir, '--coords', join(tmp.dir, 'nowhere'), '--weights', weights, '--out', out]);
    expect([missing.code, missing.stderr]).toEqual([1, expect.stringMatching(/--coords .*nowhere: no such folder \[ERR_NOT_FOUND\]/)]);
    // A heatmap of any [N] vector (here: each patch's first feature, in a .pt) over the slide.
    const scores = join(tmp.dir, 'scores.pt');
    const h5 = await readClamFeatures(join(out, 'h5_files', 'alpha.h5'));
    writeTorchTensor(scores, fromFloat32(Float32Array.from({ length: h5.shape[0] }, (_, i) => h5.features[i * 64]), [h5.shape[0]]));
    const png = join(tmp.dir, 'heatmap.png');
    const drawn = await runCli(['heatmap', '--slide', join(slidesDir, 'alpha.tif'), '--coords', join(coordsDir, 'alpha.h5'), '--scores', scores, '--out', png]);
    expect(drawn.code, drawn.stderr).toBe(0);
    expect(readFileSync(png).subarray(1, 4).toString()).toBe('PNG');
    // A rerun skips both slides.
    const again = await runCli(['extract', '--slides', slidesDir, '--coords', coordsDir, '--weights', weights, '--config', config, '--out', out, '--ext', 'tif']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/1 slide\(s\): 0 done, 0 rebuilt, 1 skipped/);
  }, 120_000);

  it('features equal embedding the same patches one by one (encoder.embed on the regions)', async () => {
    const h5 = await readClamFeatures(join(out, 'h5_files', 'beta.h5'));
    const coords = await readClamCoords(join(coordsDir, 'beta.h5'));
    const slide = await openSlide(join(slidesDir, 'beta.svs'));
    const { patch_level: level, patch_size: size } = coords.attrs as { patch_level: number; patch_size: number };
    let worst = 0;
    for (let i = 0; i < coords.count; i++) {
      const region = await slide.readRegion(Number(coords.coords[2 * i]), Number(coords.coords[2 * i + 1]), level, size, size);
      const { features } = await encoder.embed([mstarTransform({ ...region, channels: 3 })], { batchSize: 1 });
      for (let k = 0; k < 64; k++) worst = Math.max(worst, Math.abs(features[k] - h5.features[i * 64 + k]) / (1e-3 + Math.abs(features[k])));
    }
    slide.close();
    expect(worst).toBeLessThan(1e-5);
  });
});

describe('extractFeatures (API)', () => {
  it.skipIf(!openslideBuilt())('the OpenSlide and libvips backends give identical features', async () => {
    // The CLI run above used 'auto', which is OpenSlide in this build.
    const viaVips = await extractFeatures(options({ slides: [join(slidesDir, 'alpha.tif'), join(slidesDir, 'beta.svs')], slidesDir: undefined, outDir: join(tmp.dir, 'vips'), backend: 'sharp', formats: ['h5'] }));
    expect(viaVips.done).toBe(2);
    expect(existsSync(join(tmp.dir, 'vips', 'pt_files'))).toBe(false);
    for (const name of ['alpha', 'beta']) {
      const a = await readClamFeatures(join(tmp.dir, 'vips', 'h5_files', `${name}.h5`));
      const b = await readClamFeatures(join(tmp.dir, 'cli-out', 'h5_files', `${name}.h5`));
      expect(b.features).toEqual(a.features);
    }
  });

  it('a missing .pt is rebuilt from the .h5 without re-embedding; tile-on-the-fly writes the coordinates it used', async () => {
    const out = join(tmp.dir, 'cli-out');
    const pt = join(out, 'pt_files', 'alpha.pt');
    const before = readFileSync(pt);
    rmSync(pt);
    const rebuilt = await extractFeatures(options({ outDir: out, encoder: undefined, weights: '/nonexistent: must not be loaded' }));
    expect(rebuilt.results.map((r) => r.status)).toEqual(['recovered', 'skipped']);
    expect(readFileSync(pt).equals(before)).toBe(true);

    const fresh = join(tmp.dir, 'fresh-coords');
    const onTheFly = await extractFeatures(options({ slides: [join(slidesDir, 'alpha.tif')], slidesDir: undefined, coordsDir: fresh, outDir: join(tmp.dir, 'otf'), tileOnTheFly: tileOptions }));
    expect(onTheFly.results[0]).toMatchObject({ status: 'done', coords: join(fresh, 'alpha.h5') });
    expect((await readClamCoords(join(fresh, 'alpha.h5'))).coords).toEqual((await readClamCoords(join(coordsDir, 'alpha.h5'))).coords);
    expect((await readClamFeatures(join(tmp.dir, 'otf', 'h5_files', 'alpha.h5'))).features).toEqual((await readClamFeatures(join(out, 'h5_files', 'alpha.h5'))).features);
  });

  it('reports a corrupt slide, damaged tiles, missing coords and coords outside the slide, and goes on', async () => {
    const dir = join(tmp.dir, 'mixed');
    const coords = join(tmp.dir, 'mixed-coords');
    mkdirSync(join(coords, 'patches'), { recursive: true });
    mkdirSync(dir, { recursive: true });
    copyFileSync(join(slidesDir, 'alpha.tif'), join(dir, 'a-good.tif'));
    copyFileSync(join(coordsDir, 'alpha.h5'), join(coords, 'patches', 'a-good.h5')); // CLAM's patches/ layout
    writeFileSync(join(dir, 'b-corrupt.svs'), new Uint8Array(4096).fill(7));
    copyFileSync(join(coordsDir, 'beta.h5'), join(coords, 'b-corrupt.h5'));
    copyFileSync(join(slidesDir, 'beta.svs'), join(dir, 'c-damaged.svs'));
    corruptLastTiles(join(dir, 'c-damaged.svs'), 0.5);
    copyFileSync(join(coordsDir, 'beta.h5'), join(coords, 'c-damaged.h5'));
    copyFileSync(join(slidesDir, 'alpha.tif'), join(dir, 'd-nocoords.tif'));
    copyFileSync(join(slidesDir, 'alpha.tif'), join(dir, 'e-outside.tif'));
    const good = await readClamCoords(join(coordsDir, 'alpha.h5'));
    const shifted = BigInt64Array.from([...good.coords, 9000n, 100n]);
    await writeClamCoords(join(coords, 'e-outside.h5'), shifted, good.attrs as Parameters<typeof writeClamCoords>[2]);
    copyFileSync(join(slidesDir, 'alpha.tif'), join(dir, 'f-last.tif'));
    copyFileSync(join(coordsDir, 'alpha.h5'), join(coords, 'f-last.h5'));
    expect(listSlides(dir).map((p) => p.slice(dir.length + 1))).toEqual(['a-good.tif', 'b-corrupt.svs', 'c-damaged.svs', 'd-nocoords.tif', 'e-outside.tif', 'f-last.tif']);
    expect(findCoordsFile(coords, 'a-good')).toBe(join(coords, 'patches', 'a-good.h5'));

    const seen: string[] = [];
    const summary = await extractFeatures(options({ slidesDir: dir, coordsDir: coords, outDir: join(tmp.dir, 'mixed-out'), onSlide: (o) => seen.push(`${o.name}:${o.status}`) }));
    const by = Object.fromEntries(summary.results.map((r) => [r.name, r]));
    expect(summary.results.map((r) => r.status)).toEqual(['done', 'failed', 'failed', 'failed', 'failed', 'done']);
    expect(seen).toHaveLength(6);
    expect(by['b-corrupt'].error).toMatchObject({ code: 'ERR_FORMAT' });
    expect(by['b-corrupt'].error?.message).toMatch(/b-corrupt\.svs/);
    if (openslideBuilt()) {
      // OpenSlide opens it and fails on the first missing tile, in a reader thread.
      expect(by['c-damaged'].error).toMatchObject({ code: 'ERR_SLIDE_READ' });
      expect(by['c-damaged'].error?.message).toMatch(/patch at \(\d+, \d+\) level 0/);
    } else {
      expect(by['c-damaged'].error).toMatchObject({ code: 'ERR_FORMAT' });
    }
    // The libvips backend refuses it at open (libvips alone would decode the missing tiles as black).
    await expect(openSlide(join(dir, 'c-damaged.svs'), { backend: 'sharp' })).rejects.toThrow(/c-damaged\.svs is truncated: the tiles of its 2048×1536 level end at byte \d+/);
    expect(by['d-nocoords'].error).toMatchObject({ code: 'ERR_NOT_FOUND' });
    expect(by['d-nocoords'].error?.message).toMatch(/no coordinates for d-nocoords.*mstar tile/);
    expect(by['e-outside'].error).toMatchObject({ code: 'ERR_RANGE' });
    expect(by['e-outside'].error?.message).toMatch(/1 of \d+ patches lie outside the slide \(first: row \d+, \(x, y\) = \(9000, 100\)/);
    expect([summary.done, summary.failed]).toEqual([2, 4]);
    for (const name of ['b-corrupt', 'c-damaged', 'd-nocoords', 'e-outside']) expect(existsSync(join(tmp.dir, 'mixed-out', 'h5_files', `${name}.h5`))).toBe(false);
    // The slides after the failures are intact.
    const last = await readClamFeatures(join(tmp.dir, 'mixed-out', 'h5_files', 'f-last.h5'));
    expect(last.features).toEqual((await readClamFeatures(join(tmp.dir, 'mixed-out', 'h5_files', 'a-good.h5'))).features);
  });

  it('refuses bad options before doing anything', async () => {
    await expect(extractFeatures({ coordsDir, outDir: join(tmp.dir, 'x'), encoder })).rejects.toMatchObject({ code: 'ERR_ARGUMENT' });
    await expect(extractFeatures(options({ outDir: join(tmp.dir, 'x'), batchSize: 0 }))).rejects.toMatchObject({ code: 'ERR_ARGUMENT' });
    await expect(extractFeatures(options({ outDir: join(tmp.dir, 'x'), formats: ['npy' as 'h5'] }))).rejects.toMatchObject({ code: 'ERR_ARGUMENT' });
    await expect(extractFeatures(options({ outDir: join(tmp.dir, 'x'), coordsDir: join(tmp.dir, 'nope') }))).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
  });
});

describe('kill and resume', () => {
  it('a run killed mid-way leaves no truncated file; the rerun finishes with the files of an uninterrupted run', async () => {
    const dir = join(tmp.dir, 'many');
    const coords = join(tmp.dir, 'many-coords');
    mkdirSync(dir, { recursive: true });
    mkdirSync(coords, { recursive: true });
    const names = ['s1', 's2', 's3', 's4'];
    names.forEach((name, i) => {
      const src = i % 2 === 0 ? 'alpha' : 'beta';
      copyFileSync(join(slidesDir, src === 'alpha' ? 'alpha.tif' : 'beta.svs'), join(dir, `${name}${src === 'alpha' ? '.tif' : '.svs'}`));
      copyFileSync(join(coordsDir, `${src}.h5`), join(coords, `${name}.h5`));
    });
    const out = join(tmp.dir, 'many-out');
    const args = ['extract', '--slides', dir, '--coords', coords, '--weights', weights, '--config', config, '--out', out, '--batch', '2', '--readers', '1'];
    const finished = (): string[] => (existsSync(join(out, 'pt_files')) ? readdirSync(join(out, 'pt_files')).filter((n) => n.endsWith('.pt')) : []);
    const killed = await spawnCli(args, { killWhen: () => finished().length >= 1 });
    expect(killed.signal, killed.stderr).toBe('SIGKILL');
    const doneAtKill = finished().length;
    expect(doneAtKill).toBeLessThan(names.length);
    // Whatever has a final name is complete.
    for (const n of readdirSync(join(out, 'h5_files')).filter((f) => f.endsWith('.h5'))) await readClamFeatures(join(out, 'h5_files', n));
    for (const n of finished()) expect(isHostTensor(readTorchFile(join(out, 'pt_files', n)))).toBe(true);
    const stale = join(out, 'h5_files', '.s9.h5.999999.deadbeef.tmp'); // what a writer killed mid-write leaves
    writeFileSync(stale, 'partial');

    const resumed = await runCli(args);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toMatch(new RegExp(`${names.length} slide\\(s\\): \\d+ done, \\d+ rebuilt, [1-9]\\d* skipped, 0 failed`));
    expect(existsSync(stale)).toBe(false);

    const reference = join(tmp.dir, 'many-ref');
    const ref = await extractFeatures({ slidesDir: dir, coordsDir: coords, outDir: reference, encoder, batchSize: 2 });
    expect(ref.done).toBe(names.length);
    for (const name of names) {
      expect(readFileSync(join(out, 'pt_files', `${name}.pt`)).equals(readFileSync(join(reference, 'pt_files', `${name}.pt`)))).toBe(true);
      // HDF5 stores creation times in object headers, so compare contents rather than bytes.
      const a = await readClamFeatures(join(out, 'h5_files', `${name}.h5`));
      const b = await readClamFeatures(join(reference, 'h5_files', `${name}.h5`));
      expect([a.shape, a.coords]).toEqual([b.shape, b.coords]);
      expect(Buffer.from(a.features.buffer, a.features.byteOffset, a.features.byteLength).equals(Buffer.from(b.features.buffer, b.features.byteOffset, b.features.byteLength))).toBe(true);
    }
    expect(readdirSync(join(out, 'h5_files')).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  }, 180_000); // a child process: slow to start on a loaded machine
});
