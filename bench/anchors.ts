/**
 * Anchors measured in the same run as our figures: OpenBLAS through numpy for GEMM.
 * numpy runs with OPENBLAS_NUM_THREADS equal to our thread count and the machine's
 * OpenBLAS settings; `nativeCoretype` unsets OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE so
 * OpenBLAS picks its kernels for this CPU itself.
 */
import { spawnSync } from 'node:child_process';

export interface GemmShape {
  m: number;
  k: number;
  n: number;
}

// Best seconds of `repeats` runs of C = A·B (A [m,k], B [k,n] or stored [n,k]) in numpy, out= preallocated.
const NUMPY_GEMM = `
import json, sys, time
import numpy as np
o = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
a = rng.uniform(-1, 1, (o['m'], o['k'])).astype(np.float32)
b = rng.uniform(-1, 1, (o['n'], o['k']) if o['transB'] else (o['k'], o['n'])).astype(np.float32)
bb = b.T if o['transB'] else b
c = np.empty((o['m'], o['n']), np.float32)
np.matmul(a, bb, out=c)
best = float('inf')
for _ in range(o['repeats']):
    t = time.perf_counter()
    np.matmul(a, bb, out=c)
    best = min(best, time.perf_counter() - t)
print(json.dumps({'seconds': best, 'numpy': np.__version__}))
`;

/** True when python3 with numpy is on PATH. */
export function numpyAvailable(): boolean {
  const r = spawnSync('python3', ['-c', 'import numpy'], { encoding: 'utf8' });
  return r.status === 0;
}

/** Best seconds of numpy's fp32 matmul for `shape` (throws if numpy is missing). */
export function numpyGemmSeconds(shape: GemmShape, { threads, repeats = 5, transB = false, nativeCoretype = false }: { threads: number; repeats?: number; transB?: boolean; nativeCoretype?: boolean }): number {
  const env: NodeJS.ProcessEnv = { ...process.env, OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) };
  if (nativeCoretype) {
    delete env.OPENBLAS_CORETYPE;
    delete env.OPENBLAS_L2_SIZE;
  }
  const result = spawnSync('python3', ['-c', NUMPY_GEMM, JSON.stringify({ ...shape, repeats, transB })], { env, encoding: 'utf8', timeout: 600_000 });
  if (result.status !== 0) throw new Error(`numpy anchor failed: ${result.stderr || result.error}`);
  return (JSON.parse(result.stdout.trim()) as { seconds: number }).seconds;
}
