/** `mstar embed`: features of image files with the patch encoder, to safetensors. */
import { basename } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { loadPatchEncoder } from '../encoder.js';
import { fromFloat32 } from '../io/host-tensor.js';
import { writeSafetensors } from '../io/safetensors.js';
import { createProgress } from '../progress.js';
import { parsePositiveInt } from './parse.js';

function parseResize(value: string): number | 'none' {
  if (value === 'none') return 'none';
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`expected a positive integer or 'none', got '${value}'`);
  return n;
}

export function embedCommand(): Command {
  return new Command('embed')
    .description('embed image patches with the mSTAR patch encoder; writes features [N, D] float32 to safetensors')
    .argument('<images...>', 'image files (JPEG, PNG, TIFF)')
    .requiredOption('--weights <path>', 'weights: mSTAR.pth, any timm ViT state dict (.pth/.pt/.safetensors)')
    .option('--config <path>', 'timm-style config.json (default: mSTAR ViT-L/16)')
    .option('--resize <size>', "mSTAR Resize(size) on the shorter side, or 'none' to feed images at their own size", parseResize, 224 as number | 'none')
    .option('--batch <n>', 'images per forward pass', parsePositiveInt, 16)
    .requiredOption('--out <path>', 'output .safetensors (tensor "features" [N, D], image names in the metadata)')
    .action(async (images: string[], options: { weights: string; config?: string; resize: number | 'none'; batch: number; out: string }) => {
      const started = performance.now();
      const encoder = await loadPatchEncoder(options.weights, { config: options.config });
      const progress = createProgress({ label: 'embed', total: images.length, unit: 'images' });
      const result = await encoder.embed(images, {
        resize: options.resize,
        batchSize: options.batch,
        onProgress: (done) => progress.update(done),
      });
      progress.stop();
      encoder.dispose();
      writeSafetensors(options.out, new Map([['features', fromFloat32(result.features, [result.count, result.dim])]]), {
        images: JSON.stringify(images.map((p) => basename(p))),
        paths: JSON.stringify(images),
        resize: String(options.resize),
        weights: basename(options.weights),
      });
      const seconds = (performance.now() - started) / 1000;
      console.error(`wrote ${options.out}: features [${result.count}, ${result.dim}] in ${seconds.toFixed(1)} s`);
    });
}
