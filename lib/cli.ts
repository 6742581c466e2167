/**
 * The `mstar` command line. Each subcommand is a thin shell over the public API:
 * parse and validate flags, call one function, print results. Errors print their
 * message (and code) and set a non-zero exit status; no stack traces for user errors.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { embedCommand } from './cli/embed.js';
import { predictMilCommand, trainMilCommand } from './cli/mil.js';
import { parsePositiveInt } from './cli/parse.js';
import { extractCommand, heatmapCommand, tileCommand } from './cli/wsi.js';
import { backendInfo } from './index.js';
import { packageRoot } from './native.js';

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

function infoCommand(): Command {
  return new Command('info')
    .description('print version, backend, CPU features, threads and CUDA device')
    .option('--json', 'print one JSON object')
    .action(async (options: { json?: boolean }) => {
      const info = backendInfo();
      let cuda: unknown = 'not built';
      if (info.cudaBuilt || info.backend === 'cuda') {
        try {
          const { cudaDeviceInfo } = await import('./cuda.js');
          cuda = cudaDeviceInfo();
        } catch (error) {
          cuda = `unavailable (${(error as Error).message})`;
        }
      }
      const slideBackends = await listSlideBackends();
      const report = { version: packageVersion(), node: process.version, ...info, cuda, slideBackends };
      if (options.json) {
        console.log(JSON.stringify(report));
        return;
      }
      console.log(`mstar-node ${report.version} (Node ${report.node})`);
      console.log(`backend:       ${info.backend} (${info.addonPath})`);
      console.log(`SIMD:          ${info.simd} (CPU: ${info.cpuFeatures || 'baseline x86-64'})`);
      console.log(`threads:       ${info.threads}`);
      console.log(`CUDA:          ${typeof cuda === 'string' ? cuda : JSON.stringify(cuda)}`);
      console.log(`slide readers: ${slideBackends.join(', ') || 'none'}`);
    });
}

async function listSlideBackends(): Promise<string[]> {
  try {
    await import('./io/slide-openslide.js'); // registers the OpenSlide backend
    const { availableSlideBackends } = await import('./io/slide.js');
    return availableSlideBackends();
  } catch {
    return [];
  }
}

function benchCommand(): Command {
  const bench = new Command('bench').description('micro-benchmarks of the native kernels');
  bench
    .command('gemm')
    .description('fp32 GEMM GFLOP/s (result checked against a reference first)')
    .option('--m <m>', 'rows of A and C', parsePositiveInt, 2048)
    .option('--n <n>', 'columns of B and C', parsePositiveInt, 2048)
    .option('--k <k>', 'inner dimension', parsePositiveInt, 2048)
    .option('--batch <b>', 'batch count', parsePositiveInt, 1)
    .option('--repeats <r>', 'timed runs (best is reported)', parsePositiveInt, 5)
    .option('--json', 'print one JSON line')
    .action(async (options: { m: number; n: number; k: number; batch: number; repeats: number; json?: boolean }) => {
      const { benchGemm } = await import('./bench/gemm.js');
      const result = benchGemm(options);
      if (options.json) console.log(JSON.stringify({ m: options.m, n: options.n, k: options.k, batch: options.batch, ...result }));
      else console.log(`gemm ${options.batch}×${options.m}×${options.n}×${options.k}: ${result.gflops.toFixed(1)} GFLOP/s (best of ${options.repeats}, max error ${result.maxAbsError.toExponential(2)})`);
    });
  return bench;
}

export function buildProgram(): Command {
  const program = new Command('mstar')
    .description('mSTAR whole-slide pathology foundation model: features, training, benchmarks')
    .version(packageVersion());
  program.addCommand(infoCommand());
  program.addCommand(embedCommand());
  program.addCommand(tileCommand());
  program.addCommand(extractCommand());
  program.addCommand(heatmapCommand());
  program.addCommand(trainMilCommand());
  program.addCommand(predictMilCommand());
  program.addCommand(benchCommand());
  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (error) {
    const e = error as Error & { code?: string };
    console.error(`mstar: ${e.message}${e.code && e.code.startsWith('ERR_') ? ` [${e.code}]` : ''}`);
    process.exitCode = 1;
  }
}
