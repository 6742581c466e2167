/**
 * fp32 GEMM: our engine against OpenBLAS through numpy, side by side in one run.
 *
 *   npx tsx bench/gemm.ts [--threads 2] [--repeats 5] [--rounds 3] [--trans-b] [--json]
 *                         [--shapes 1024x1024x1024,197x1024x3072] [--native-anchor]
 *
 * Shapes are M×K×N: C[M×N] = A[M×K] · B[K×N]. Each shape is measured in `rounds` alternating
 * rounds (ours, numpy, ours, numpy, ...) of `repeats` timed runs; the best of all is reported, so a
 * burst of load from other processes hurts both sides alike. numpy runs with OPENBLAS_NUM_THREADS
 * equal to our thread count and the machine's OpenBLAS settings (OPENBLAS_CORETYPE, ...);
 * --native-anchor adds a second numpy column with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset
 * (OpenBLAS then picks its kernels for this CPU itself). Our result is checked against a float64
 * reference before it is timed (lib/bench/gemm.ts).
 */
import { cpus, loadavg } from 'node:os';
import { benchGemm } from '../lib/bench/gemm.js';
import { native } from '../lib/native.js';
import { type GemmShape as Shape, numpyAvailable, numpyGemmSeconds } from './anchors.js';

const DEFAULT_SHAPES: Shape[] = [
  { m: 1024, k: 1024, n: 1024 },
  { m: 2048, k: 2048, n: 2048 },
  { m: 4096, k: 4096, n: 4096 },
  // ViT-L/16, 197 tokens: qkv (1024→3072), MLP up (1024→4096), MLP down (4096→1024); then batch 16.
  { m: 197, k: 1024, n: 3072 },
  { m: 197, k: 1024, n: 4096 },
  { m: 197, k: 4096, n: 1024 },
  { m: 16 * 197, k: 1024, n: 3072 },
  { m: 16 * 197, k: 1024, n: 4096 },
  { m: 16 * 197, k: 4096, n: 1024 },
];

function parseArgs(argv: string[]) {
  const options = { threads: 2, repeats: 5, rounds: 3, transB: false, json: false, nativeAnchor: false, shapes: DEFAULT_SHAPES };
  for (let i = 0; i < argv.length; i++) {
    // --name value and --name=value both work (bench/run.ts forwards only the dashed words).
    const [arg, inline] = argv[i].split('=', 2) as [string, string | undefined];
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    if (arg === '--threads') options.threads = Number(value());
    else if (arg === '--repeats') options.repeats = Number(value());
    else if (arg === '--rounds') options.rounds = Number(value());
    else if (arg === '--trans-b') options.transB = true;
    else if (arg === '--json') options.json = true;
    else if (arg === '--native-anchor') options.nativeAnchor = true;
    else if (arg === '--shapes') {
      options.shapes = value().split(',').map((s) => {
        const [m, k, n] = s.split(/[x×]/).map(Number);
        if (![m, k, n].every((d) => Number.isSafeInteger(d) && d > 0)) throw new Error(`bad shape ${s} (want MxKxN)`);
        return { m, k, n };
      });
    } else console.error(`bench/gemm.ts: ignoring unknown option ${argv[i]}`);
  }
  return options;
}

function main(): void {
  const options = parseArgs(process.argv.slice(2));
  if (!numpyAvailable()) throw new Error('bench/gemm.ts needs python3 with numpy for its OpenBLAS anchor');
  const info = native().runtimeInfo();
  if (!options.json) {
    console.log(`gemm fp32: ${options.threads} threads, simd ${info.simd} (${info.cpuFeatures}), ${cpus()[0]?.model ?? '?'}`);
    console.log(`numpy: OPENBLAS_CORETYPE=${process.env.OPENBLAS_CORETYPE ?? '(unset)'} OPENBLAS_L2_SIZE=${process.env.OPENBLAS_L2_SIZE ?? '(unset)'}` +
      `, best of ${options.rounds}×${options.repeats} runs each; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    console.log(`${'M×K×N'.padEnd(18)} ${'ours GF/s'.padStart(10)} ${'numpy GF/s'.padStart(11)} ${'ratio'.padStart(6)}` +
      (options.nativeAnchor ? ` ${'np-native'.padStart(10)} ${'ratio'.padStart(6)}` : '') + `  max|err|`);
  }
  const rows = [];
  for (const shape of options.shapes) {
    const flops = 2 * shape.m * shape.n * shape.k;
    let ours = Infinity, anchor = Infinity, anchorNative = Infinity, maxAbsError = 0;
    for (let round = 0; round < options.rounds; round++) {
      const r = benchGemm({ ...shape, repeats: options.repeats, transB: options.transB, threads: options.threads, samples: round === 0 ? 256 : 16 });
      ours = Math.min(ours, r.bestSeconds);
      maxAbsError = Math.max(maxAbsError, r.maxAbsError);
      const anchorOptions = { threads: options.threads, repeats: options.repeats, transB: options.transB };
      anchor = Math.min(anchor, numpyGemmSeconds(shape, anchorOptions));
      if (options.nativeAnchor) anchorNative = Math.min(anchorNative, numpyGemmSeconds(shape, { ...anchorOptions, nativeCoretype: true }));
    }
    const row = {
      ...shape,
      transB: options.transB,
      threads: options.threads,
      oursGflops: flops / ours / 1e9,
      numpyGflops: flops / anchor / 1e9,
      ratio: anchor / ours,
      ...(options.nativeAnchor ? { numpyNativeGflops: flops / anchorNative / 1e9, ratioNative: anchorNative / ours } : {}),
      maxAbsError,
    };
    rows.push(row);
    if (!options.json) {
      console.log(`${`${shape.m}×${shape.k}×${shape.n}`.padEnd(18)} ${row.oursGflops.toFixed(1).padStart(10)} ` +
        `${row.numpyGflops.toFixed(1).padStart(11)} ${row.ratio.toFixed(2).padStart(6)}` +
        (options.nativeAnchor ? ` ${row.numpyNativeGflops!.toFixed(1).padStart(10)} ${row.ratioNative!.toFixed(2).padStart(6)}` : '') +
        `  ${maxAbsError.toExponential(1)}`);
    }
  }
  if (options.json) console.log(JSON.stringify({ simd: info.simd, load: loadavg(), rows }));
  else console.log(`load average at the end: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
}

main();
