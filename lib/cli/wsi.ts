/**
 * Whole-slide subcommands: `mstar tile`, `mstar extract`, `mstar heatmap`. Each parses
 * and checks its flags, calls one library function (lib/wsi/tile.ts `tileSlides`,
 * lib/wsi/extract.ts `extractFeatures`, lib/wsi/heatmap.ts `renderHeatmap`) and prints
 * what happened; a run where any slide failed ends with exit status 1 after its summary.
 */
import { existsSync, statSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { withCode } from '../io/errors.js';
import { formatSeconds } from '../progress.js';
import { parseNonNegativeInt, parsePositiveInt, parsePositiveNumber } from './parse.js';

/** `h5,pt` → ['h5', 'pt']. */
function parseFormats(value: string): ('h5' | 'pt')[] {
  const parts = value.split(',').map((s) => s.trim().toLowerCase()).filter((s) => s.length > 0);
  if (parts.length === 0 || parts.some((p) => p !== 'h5' && p !== 'pt')) {
    throw new InvalidArgumentError(`expected a comma-separated list of h5 and pt, got '${value}'`);
  }
  return [...new Set(parts)] as ('h5' | 'pt')[];
}

function parseUnitInterval(value: string): number {
  const n = Number(value);
  if (!(n >= 0 && n <= 1)) throw new InvalidArgumentError(`expected a number in [0, 1], got '${value}'`);
  return n;
}

/** Throws a coded error unless `path` exists (as a folder when `folder`). */
function requirePath(flag: string, path: string, kind: 'file' | 'folder' | 'any'): void {
  if (!existsSync(path)) throw withCode(new Error(`${flag} ${path}: no such ${kind === 'any' ? 'file or folder' : kind}`), 'ERR_NOT_FOUND');
  const isDir = statSync(path).isDirectory();
  if (kind === 'folder' && !isDir) throw withCode(new Error(`${flag} ${path}: not a folder`), 'ERR_ARGUMENT');
  if (kind === 'file' && isDir) throw withCode(new Error(`${flag} ${path}: is a folder, expected a file`), 'ERR_ARGUMENT');
}

function backendOption(): Option {
  return new Option('--backend <name>', "slide reader: 'auto' (OpenSlide when built, else libvips), 'openslide' or 'sharp'").default('auto');
}

export function tileCommand(): Command {
  return new Command('tile')
    .description('segment tissue and lay CLAM patch grids; writes OUT/<slide>.h5 (CLAM coords) and OUT/<slide>_preview.png')
    .argument('<slides...>', 'whole-slide images (SVS, pyramidal TIFF, NDPI with OpenSlide, ...)')
    .requiredOption('--out <dir>', 'output folder')
    .option('--patch-size <px>', 'patch side in pixels of the patch level (with --mpp: at that resolution)', parsePositiveInt, 256)
    .addOption(new Option('--level <level>', 'patch level (default 0)').argParser(parseNonNegativeInt).conflicts('mpp'))
    .addOption(new Option('--mpp <microns>', 'target microns per pixel (e.g. 0.5 for 20×); picks the level and scales the patch size').argParser(parsePositiveNumber))
    .option('--step <px>', 'grid step in the units of --patch-size (default: the patch size, no overlap)', parsePositiveInt)
    .option('--min-tissue-area <patches>', 'drop tissue smaller than this many 512×512 level-0 reference patches (CLAM a_t)', parsePositiveNumber, 100)
    .option('--no-preview', 'do not write the preview PNG')
    .addOption(backendOption())
    .action(async (slides: string[], options: { out: string; patchSize: number; level?: number; mpp?: number; step?: number; minTissueArea: number; preview: boolean; backend: string }) => {
      const { tileSlides } = await import('../wsi/tile.js');
      await import('../io/slide-openslide.js');
      for (const s of slides) requirePath('slide', s, 'file');
      const started = performance.now();
      const summary = await tileSlides(slides, {
        outDir: options.out,
        patchSize: options.patchSize,
        level: options.level,
        mpp: options.mpp,
        stepSize: options.step,
        aT: options.minTissueArea,
        preview: options.preview,
        backend: options.backend,
        onSlide: (r) => {
          if (r.status === 'done') console.error(`done    ${r.name}: ${r.count} patches → ${r.h5}`);
          else if (r.status === 'skipped') console.error(`skipped ${r.name}: ${r.h5} exists`);
          else console.error(`FAILED  ${r.name}: ${r.error?.message} [${r.error?.code}]`);
        },
      });
      console.error(`tile: ${summary.done} done, ${summary.skipped} skipped, ${summary.failed} failed in ${formatSeconds((performance.now() - started) / 1000)}`);
      if (summary.failed > 0) process.exitCode = 1;
    });
}

interface ExtractFlags {
  slides: string;
  coords: string;
  weights: string;
  config?: string;
  out: string;
  ext?: string;
  batch: number;
  format: ('h5' | 'pt')[];
  tileOnTheFly?: boolean;
  readers?: number;
  backend: string;
  overwrite?: boolean;
  logEvery: number;
}

export function extractCommand(): Command {
  return new Command('extract')
    .description('embed every patch of every slide with the patch encoder; writes OUT/h5_files/<slide>.h5 and OUT/pt_files/<slide>.pt (CLAM layout)')
    .requiredOption('--slides <dir>', 'folder of slides (or one slide file)')
    .requiredOption('--coords <dir>', "coordinates: mstar tile's folder (DIR/<slide>.h5) or CLAM's (DIR/patches/<slide>.h5)")
    .requiredOption('--weights <path>', 'encoder weights: mSTAR.pth or any timm ViT state dict (.pth/.pt/.safetensors)')
    .option('--config <path>', 'timm-style config.json (default: mSTAR ViT-L/16)')
    .requiredOption('--out <dir>', 'output folder')
    .option('--ext <ext>', 'slide extension to take from --slides (default: every slide format)')
    .option('--batch <n>', 'patches per forward pass', parsePositiveInt, 64)
    .option('--format <list>', 'outputs: h5, pt or h5,pt', parseFormats, ['h5', 'pt'] as ('h5' | 'pt')[])
    .option('--tile-on-the-fly', 'segment and tile slides that have no coordinates (written to --coords)')
    .option('--readers <n>', 'patch reader threads (default: half the cores, 1–4)', parsePositiveInt)
    .addOption(backendOption())
    .option('--overwrite', 'recompute slides whose outputs exist')
    .option('--log-every <seconds>', 'seconds between progress lines when not on a terminal', parsePositiveNumber, 10)
    .action(async (options: ExtractFlags) => {
      const { extractFeatures } = await import('../wsi/extract.js');
      const { createExtractDisplay } = await import('../wsi/extract-progress.js');
      requirePath('--slides', options.slides, 'any');
      if (!options.tileOnTheFly) requirePath('--coords', options.coords, 'folder');
      requirePath('--weights', options.weights, 'file');
      if (options.config !== undefined) requirePath('--config', options.config, 'file');
      const single = statSync(options.slides).isFile();
      if (single && options.ext !== undefined) throw withCode(new Error('--ext applies to a folder of slides, not to one slide file'), 'ERR_ARGUMENT');
      const display = createExtractDisplay({ logEverySeconds: options.logEvery });
      let summary;
      try {
        summary = await extractFeatures({
          ...(single ? { slides: [options.slides] } : { slidesDir: options.slides, ext: options.ext }),
          coordsDir: options.coords,
          weights: options.weights,
          config: options.config,
          outDir: options.out,
          batchSize: options.batch,
          formats: options.format,
          tileOnTheFly: options.tileOnTheFly === true,
          readers: options.readers,
          backend: options.backend,
          skipExisting: !options.overwrite,
          onProgress: (p) => display.onProgress(p),
          onSlide: (o) => display.onSlide(o),
        });
      } finally {
        display.stop();
      }
      const rate = summary.seconds > 0 ? summary.patches / summary.seconds : 0;
      console.error(
        `extract: ${summary.results.length} slide(s): ${summary.done} done, ${summary.recovered} rebuilt, ${summary.skipped} skipped, ${summary.failed} failed; ` +
          `${summary.patches} patches in ${formatSeconds(summary.seconds)} (${rate.toFixed(1)} patches/s)`,
      );
      if (summary.failed > 0) {
        console.error('failed:');
        for (const r of summary.results.filter((x) => x.status === 'failed')) console.error(`  ${r.path}: ${r.error?.message} [${r.error?.code}]`);
        process.exitCode = 1;
      }
    });
}

interface HeatmapFlags {
  slide: string;
  coords: string;
  scores: string;
  tensor?: string;
  out: string;
  alpha: number;
  colormap: 'jet' | 'viridis';
  normalize: 'minmax' | 'percentile' | 'none';
  maxSize: number;
  backend: string;
}

export function heatmapCommand(): Command {
  return new Command('heatmap')
    .description('draw per-patch scores over the slide thumbnail as a PNG with a colour bar')
    .requiredOption('--slide <path>', 'the whole-slide image')
    .requiredOption('--coords <path>', 'its CLAM coordinates .h5 (the patches the scores belong to, in order)')
    .requiredOption('--scores <path>', 'scores: any [N] vector in an .h5, .pt/.pth or .safetensors file')
    .option('--tensor <name>', 'dataset or tensor name in --scores (default: the only [N] vector)')
    .requiredOption('--out <png>', 'output PNG')
    .option('--alpha <a>', 'weight of the colours over the slide, in [0, 1]', parseUnitInterval, 0.4)
    .addOption(new Option('--colormap <name>', 'colour map').choices(['jet', 'viridis']).default('jet'))
    .addOption(new Option('--normalize <how>', 'scores to colours: min–max, percentile ranks, or as given in [0, 1]').choices(['minmax', 'percentile', 'none']).default('minmax'))
    .option('--max-size <px>', 'longest side of the thumbnail', parsePositiveInt, 1024)
    .addOption(backendOption())
    .action(async (options: HeatmapFlags) => {
      const [{ readClamCoords }, { openSlide }, { renderHeatmap }, { readPatchScores }] = await Promise.all([
        import('../io/clam.js'),
        import('../io/slide.js'),
        import('../wsi/heatmap.js'),
        import('../wsi/scores.js'),
      ]);
      await import('../io/slide-openslide.js');
      requirePath('--slide', options.slide, 'file');
      requirePath('--coords', options.coords, 'file');
      requirePath('--scores', options.scores, 'file');
      const coords = await readClamCoords(options.coords);
      const { scores, name } = await readPatchScores(options.scores, options.tensor);
      if (scores.length !== coords.count) {
        throw withCode(new Error(`--scores ${options.scores}${name ? ` '${name}'` : ''} has ${scores.length} values but --coords has ${coords.count} patches`), 'ERR_SHAPE');
      }
      const slide = await openSlide(options.slide, { backend: options.backend });
      try {
        const level = coords.attrs.patch_level ?? 0;
        const size = coords.attrs.patch_size;
        if (size === undefined) throw withCode(new Error(`--coords ${options.coords} lacks the patch_size attribute`), 'ERR_FORMAT');
        if (level >= slide.levelCount) throw withCode(new Error(`--coords patch_level ${level} does not exist in ${options.slide} (${slide.levelCount} levels)`), 'ERR_RANGE');
        const downsample = coords.attrs.downsample?.[0] ?? slide.levelDownsamples[level];
        const image = await renderHeatmap(slide, coords.coords, scores, size * downsample, {
          out: options.out,
          alpha: options.alpha,
          colormap: options.colormap,
          normalize: options.normalize,
          maxSize: options.maxSize,
        });
        console.error(`wrote ${options.out}: ${image.width}×${image.height}, ${scores.length} patches, scores ${image.vmin.toPrecision(4)} … ${image.vmax.toPrecision(4)}`);
      } finally {
        slide.close();
      }
    });
}
