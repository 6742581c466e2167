/**
 * GPU benchmarks: our CUDA kernels against PyTorch on the same machine, in the same run.
 *
 *   npx tsx bench/gpu/bench.ts [--iters 20] [--json] [--no-torch]
 *
 * GEMM (TFLOP/s): 4096³ in bfloat16 (NN and NT layouts), float32 through TF32 and through
 * 3xTF32, and the ViT-L/16 linear layers at batch 16 (3152 tokens) in bfloat16, against
 * torch.matmul with the same dtype, layout and TF32 setting. LayerNorm and softmax (GB/s)
 * at ViT-L shapes against torch.nn.functional; flash attention forward (bfloat16, D 64/128,
 * N 197 to 8192) against torch.nn.functional.scaled_dot_product_attention (its correctness is
 * test/cuda.test.ts's job). Every GEMM result is first checked on 64
 * sampled entries against a float64 dot product of the same (rounded) inputs. The torch
 * column is omitted when python3 with a CUDA-enabled torch is not installed.
 * Targets (issue 6): bf16 GEMM ≥ 0.7× torch.matmul at 4096³; attention ≥ 0.8× SDPA at N ≥ 1k.
 */
import { spawnSync } from 'node:child_process';
import { CudaDevice, DeviceBuffer, GemmMath, loadCudaBuild } from '../../lib/cuda.js';
import { Activation, DtypeCode } from '../../lib/native.js';

interface Options {
  iters: number;
  json: boolean;
  torch: boolean;
}

function parseArgs(argv: string[]): Options {
  const options: Options = { iters: 20, json: false, torch: true };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--iters') options.iters = Number(argv[++i]);
    else if (argv[i] === '--json') options.json = true;
    else if (argv[i] === '--no-torch') options.torch = false;
    else throw new Error(`unknown option ${argv[i]}`);
  }
  if (!Number.isSafeInteger(options.iters) || options.iters < 1) throw new Error('--iters must be a positive integer');
  return options;
}

interface GemmShape {
  name: string;
  m: number;
  n: number;
  k: number;
  transB: boolean;
  dtype: DtypeCode.Float32 | DtypeCode.BFloat16;
  math: GemmMath;
}

const GEMMS: GemmShape[] = [
  { name: 'gemm 4096³ bf16 NN', m: 4096, n: 4096, k: 4096, transB: false, dtype: DtypeCode.BFloat16, math: GemmMath.Fp32 },
  { name: 'gemm 4096³ bf16 NT', m: 4096, n: 4096, k: 4096, transB: true, dtype: DtypeCode.BFloat16, math: GemmMath.Fp32 },
  { name: 'gemm 4096³ tf32 NT', m: 4096, n: 4096, k: 4096, transB: true, dtype: DtypeCode.Float32, math: GemmMath.Tf32 },
  { name: 'gemm 4096³ f32(3xtf32) NT', m: 4096, n: 4096, k: 4096, transB: true, dtype: DtypeCode.Float32, math: GemmMath.Fp32 },
  // ViT-L/16 at batch 16 (16 × 197 tokens): qkv, MLP up, MLP down; x · Wᵀ as nn.Linear does.
  { name: 'vit-l qkv 3152x1024→3072 bf16', m: 3152, n: 3072, k: 1024, transB: true, dtype: DtypeCode.BFloat16, math: GemmMath.Fp32 },
  { name: 'vit-l mlp1 3152x1024→4096 bf16', m: 3152, n: 4096, k: 1024, transB: true, dtype: DtypeCode.BFloat16, math: GemmMath.Fp32 },
  { name: 'vit-l mlp2 3152x4096→1024 bf16', m: 3152, n: 1024, k: 4096, transB: true, dtype: DtypeCode.BFloat16, math: GemmMath.Fp32 },
];

/** Dense peak TFLOP/s by device name, for the "% of roof" column (tensor cores, no sparsity). */
function peakTflops(device: string, shape: GemmShape): number | null {
  const bf16 = /H100|H200|GH200/.test(device) ? 989 : /A100/.test(device) ? 312 : null;
  if (bf16 === null) return null;
  return shape.dtype === DtypeCode.BFloat16 ? bf16 : bf16 / 2; // tf32 is half the bf16 rate
}

// bfloat16 round-to-nearest-even on the host, as cuda/common.cuh does.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
function toBf16(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    f32[0] = x[i];
    const u = u32[0];
    out[i] = (u & 0x7fffffff) > 0x7f800000 ? (u >>> 16) | 0x40 : ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return out;
}
function bf16At(x: Uint16Array, i: number): number {
  u32[0] = x[i] << 16;
  return f32[0];
}

function random(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 32 - 0.5;
  }
  return out;
}

function timeIt(device: CudaDevice, iters: number, fn: () => void): number {
  for (let i = 0; i < 2; i++) fn();
  device.synchronize();
  const start = process.hrtime.bigint();
  for (let i = 0; i < iters; i++) fn();
  device.synchronize();
  return Number(process.hrtime.bigint() - start) / 1e9 / iters;
}

interface Row {
  name: string;
  ours: number;
  torch: number | null;
  unit: string;
  roof?: number | null;
}

function benchGemm(device: CudaDevice, s: GemmShape, iters: number): number {
  const a = random(s.m * s.k, 1);
  const b = random(s.k * s.n, 2);
  const host = (x: Float32Array) => (s.dtype === DtypeCode.BFloat16 ? toBf16(x) : x);
  const ha = host(a), hb = host(b);
  const at = (x: Float32Array | Uint16Array, i: number) => (x instanceof Uint16Array ? bf16At(x, i) : x[i]);
  const elem = s.dtype === DtypeCode.BFloat16 ? 2 : 4;
  const buffers: DeviceBuffer[] = [];
  try {
    const da = device.upload(ha);
    buffers.push(da);
    const db = device.upload(hb);
    buffers.push(db);
    const dc = device.alloc(s.m * s.n * elem);
    buffers.push(dc);
    const ldb = s.transB ? s.k : s.n;
    const run = () =>
      device.gemm(da, db, dc, null, 1, s.m, s.n, s.k, false, s.transB, s.k, ldb, s.n, 0, 0, 0, 1, 0, Activation.None,
        s.dtype, s.math);
    run();
    // Validate 64 sampled entries against float64 dot products of the same inputs.
    const c = s.dtype === DtypeCode.BFloat16 ? dc.toUint16(s.m * s.n) : dc.toFloat32(s.m * s.n);
    const tol = s.dtype === DtypeCode.BFloat16 ? 1e-2 : s.math === GemmMath.Tf32 ? 5e-3 : 1e-5;
    let worst = 0;
    for (let t = 0; t < 64; t++) {
      const i = (t * 7919) % s.m, j = (t * 104729) % s.n;
      let ref = 0, norm = 0;
      for (let l = 0; l < s.k; l++) {
        const p = at(ha, i * s.k + l) * at(hb, s.transB ? j * s.k + l : l * s.n + j);
        ref += p;
        norm += Math.abs(p);
      }
      worst = Math.max(worst, Math.abs(at(c, i * s.n + j) - ref) / Math.max(norm, 1e-30));
    }
    if (!(worst <= tol)) throw new Error(`${s.name}: validation failed, relative error ${worst.toExponential(2)} > ${tol}`);
    const seconds = timeIt(device, iters, run);
    return (2 * s.m * s.n * s.k) / seconds / 1e12;
  } finally {
    for (const buffer of buffers) buffer.dispose();
  }
}

interface AttentionShape {
  name: string;
  b: number;
  h: number;
  n: number;
  d: number;
}

const ATTENTIONS: AttentionShape[] = [
  { name: 'attention B16 H16 N197 D64 bf16', b: 16, h: 16, n: 197, d: 64 }, // ViT-L/16 at batch 16
  { name: 'attention B4 H16 N1024 D64 bf16', b: 4, h: 16, n: 1024, d: 64 },
  { name: 'attention B2 H16 N4096 D64 bf16', b: 2, h: 16, n: 4096, d: 64 },
  { name: 'attention B4 H8 N1024 D128 bf16', b: 4, h: 8, n: 1024, d: 128 },
  { name: 'attention B1 H8 N8192 D128 bf16', b: 1, h: 8, n: 8192, d: 128 },
];

/** Flash attention forward, [B, H, N, D] bfloat16, no mask: TFLOP/s counting 4·B·H·N²·D. */
function benchAttention(device: CudaDevice, s: AttentionShape, iters: number): number {
  const elems = s.b * s.h * s.n * s.d;
  const strides = [s.h * s.n * s.d, s.n * s.d, s.d];
  const bufs = [0, 1, 2].map((i) => device.upload(toBf16(random(elems, 10 + i))));
  const out = device.alloc(elems * 2), lse = device.alloc(s.b * s.h * s.n * 4);
  try {
    const seconds = timeIt(device, iters, () =>
      device.attentionForward(bufs[0], bufs[1], bufs[2], out, lse, null, [s.b, s.h, s.n, s.n, s.d], strides, strides,
        strides, strides, 1 / Math.sqrt(s.d), DtypeCode.BFloat16));
    return (4 * s.b * s.h * s.n * s.n * s.d) / seconds / 1e12;
  } finally {
    for (const buffer of [...bufs, out, lse]) buffer.dispose();
  }
}

/** Bytes moved per call / time, for the row kernels at ViT-L shapes. */
function benchRows(device: CudaDevice, iters: number): Row[] {
  const rows = 3152, cols = 1024, attnRows = 16 * 16 * 197, attnCols = 197;
  const out: Row[] = [];
  const x = device.upload(toBf16(random(rows * cols, 3)));
  const y = device.alloc(rows * cols * 2);
  const gamma = device.upload(new Float32Array(cols).fill(1));
  const beta = device.upload(new Float32Array(cols));
  const mean = device.alloc(rows * 4), rstd = device.alloc(rows * 4);
  const s = device.upload(toBf16(random(attnRows * attnCols, 4)));
  const p = device.alloc(attnRows * attnCols * 2);
  try {
    const ln = timeIt(device, iters, () =>
      device.layerNormForward(x, gamma, beta, y, mean, rstd, rows, cols, 1e-6, DtypeCode.BFloat16));
    out.push({ name: 'layernorm fwd 3152x1024 bf16', ours: (2 * rows * cols * 2) / ln / 1e9, torch: null, unit: 'GB/s' });
    const sm = timeIt(device, iters, () => device.softmaxForward(s, p, attnRows, attnCols, false, DtypeCode.BFloat16));
    out.push({ name: 'softmax fwd 50432x197 bf16', ours: (2 * attnRows * attnCols * 2) / sm / 1e9, torch: null, unit: 'GB/s' });
  } finally {
    for (const buffer of [x, y, gamma, beta, mean, rstd, s, p]) buffer.dispose();
  }
  return out;
}

const TORCH_SCRIPT = `
import json, sys, torch
if not torch.cuda.is_available():
    print(json.dumps({"error": "torch has no CUDA"})); sys.exit(0)
iters = int(sys.argv[1]); shapes = json.loads(sys.argv[2]); out = {}
def timed(fn):
    for _ in range(2): fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters): fn()
    end.record(); torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / iters
for s in shapes:
    dtype = torch.bfloat16 if s["dtype"] == 2 else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = s["math"] == 1
    a = torch.rand(s["m"], s["k"], device="cuda", dtype=dtype) - 0.5
    b = torch.rand(s["n"], s["k"], device="cuda", dtype=dtype) - 0.5 if s["transB"] else torch.rand(s["k"], s["n"], device="cuda", dtype=dtype) - 0.5
    fn = (lambda: a @ b.t()) if s["transB"] else (lambda: a @ b)
    out[s["name"]] = 2 * s["m"] * s["n"] * s["k"] / timed(fn) / 1e12
x = torch.rand(3152, 1024, device="cuda", dtype=torch.bfloat16)
w = torch.ones(1024, device="cuda"); bias = torch.zeros(1024, device="cuda")
t = timed(lambda: torch.nn.functional.layer_norm(x, (1024,), w.bfloat16(), bias.bfloat16(), 1e-6))
out["layernorm fwd 3152x1024 bf16"] = 2 * x.numel() * 2 / t / 1e9
s = torch.rand(16 * 16 * 197, 197, device="cuda", dtype=torch.bfloat16)
t = timed(lambda: torch.softmax(s, dim=-1))
out["softmax fwd 50432x197 bf16"] = 2 * s.numel() * 2 / t / 1e9
for s in json.loads(sys.argv[3]):
    q, k, v = (torch.rand(s["b"], s["h"], s["n"], s["d"], device="cuda", dtype=torch.bfloat16) - 0.5 for _ in range(3))
    t = timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    out[s["name"]] = 4 * s["b"] * s["h"] * s["n"] * s["n"] * s["d"] / t / 1e12
out["torch"] = torch.__version__
print(json.dumps(out))
`;

function runTorch(iters: number): Record<string, number | string> | null {
  const result = spawnSync('python3', ['-c', TORCH_SCRIPT, String(iters), JSON.stringify(GEMMS), JSON.stringify(ATTENTIONS)], {
    encoding: 'utf8',
    timeout: 180_000,
  });
  if (result.status !== 0) {
    console.error(`torch anchor unavailable: ${(result.stderr || result.error?.message || '').trim().split('\n').pop()}`);
    return null;
  }
  try {
    const parsed = JSON.parse(result.stdout.trim().split('\n').pop() ?? '{}') as Record<string, number | string>;
    if (typeof parsed.error === 'string') {
      console.error(`torch anchor unavailable: ${parsed.error}`);
      return null;
    }
    return parsed;
  } catch {
    console.error(`torch anchor printed no JSON: ${result.stdout.slice(0, 200)}`);
    return null;
  }
}

function main(): void {
  const options = parseArgs(process.argv.slice(2));
  const binding = loadCudaBuild();
  if (binding.cudaDeviceCount() === 0) {
    console.error('bench/gpu: no GPU answered (cudaDeviceCount() = 0)');
    process.exit(2);
  }
  const device = new CudaDevice(binding);
  const name = device.info().devices![0].name;
  const rows: Row[] = [];
  for (const shape of GEMMS) {
    rows.push({ name: shape.name, ours: benchGemm(device, shape, options.iters), torch: null, unit: 'TFLOP/s',
      roof: peakTflops(name, shape) });
  }
  for (const shape of ATTENTIONS) {
    rows.push({ name: shape.name, ours: benchAttention(device, shape, options.iters), torch: null, unit: 'TFLOP/s' });
  }
  rows.push(...benchRows(device, options.iters));
  const torch = options.torch ? runTorch(options.iters) : null;
  for (const row of rows) {
    const t = torch?.[row.name];
    row.torch = typeof t === 'number' ? t : null;
  }
  if (options.json) {
    console.log(JSON.stringify({ device: name, torch: torch?.torch ?? null, rows }));
    return;
  }
  console.log(`device: ${name}; torch: ${torch?.torch ?? 'not available'}`);
  console.log(`${'case'.padEnd(34)} ${'ours'.padStart(9)} ${'torch'.padStart(9)} ${'ratio'.padStart(6)}  unit      roof`);
  for (const r of rows) {
    const ratio = r.torch ? (r.ours / r.torch).toFixed(2) : '-';
    const roof = r.roof ? `${((100 * r.ours) / r.roof).toFixed(0)}% of ${r.roof}` : '';
    console.log(`${r.name.padEnd(34)} ${r.ours.toFixed(1).padStart(9)} ${(r.torch?.toFixed(1) ?? '-').padStart(9)} ` +
      `${ratio.padStart(6)}  ${r.unit.padEnd(8)}  ${roof}`);
  }
  console.log(`BENCH_JSON ${JSON.stringify({ device: name, torch: torch?.torch ?? null, rows })}`);
}

main();
