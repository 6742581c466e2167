/**
 * The native surface, declared once. Every function here is implemented by one
 * `cpp/binding/<stem>.cc` (CPU addon) and, in the CUDA build, may dispatch to
 * `cuda/<stem>.cu`. Callers in lib/ validate arguments first (clear TypeError /
 * RangeError naming the parameter); the C++ side re-checks everything.
 *
 * Conventions: row-major float32; typed-array arguments may be subarrays (their
 * byteOffset is honoured); sizes are element counts; outputs are written, not
 * accumulated, unless a comment says "+=".
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type F32 = Float32Array;

export interface MemoryStats {
  /** Native bytes held by tensors and kernel workspaces right now. */
  bytesInUse: number;
  /** High-water mark since start or `resetPeakBytes()`. */
  peakBytes: number;
  liveAllocations: number;
  totalAllocations: number;
  /** Freed large blocks (≥ 256 KiB) kept mapped for reuse; not part of bytesInUse. */
  cachedBytes: number;
}

export interface RuntimeInfo {
  threads: number;
  simd: 'portable' | 'avx2' | 'avx512';
  cpuFeatures: string;
  cudaBuilt: boolean;
  openslideBuilt: boolean;
}

/** Storage dtype codes shared with C++ (cpp/ops/copy.h). */
export enum DtypeCode {
  Float32 = 0,
  Float16 = 1,
  BFloat16 = 2,
}

/** Elementwise unary ops (cpp/ops/elementwise.h). */
export enum UnaryOp {
  Relu = 0,
  Gelu = 1, // erf form: x/2 (1 + erf(x/sqrt 2))
  Tanh = 2,
  Sigmoid = 3,
  Exp = 4,
  Log = 5,
  Neg = 6,
  Sqrt = 7,
  Abs = 8,
  Square = 9,
}

/** Elementwise binary ops with broadcasting (cpp/ops/elementwise.h). */
export enum BinaryOp {
  Add = 0,
  Sub = 1,
  Mul = 2,
  Div = 3,
  Max = 4,
  Min = 5,
}

/** GEMM epilogue activations (cpp/ops/gemm.h). */
export enum Activation {
  None = 0,
  Relu = 1,
  Gelu = 2,
}

export enum ReduceOp {
  Sum = 0,
  Mean = 1,
  Max = 2,
}

export interface NativeBinding {
  // ---- runtime (cpp/binding/memory.cc) ----
  /** Native, 64-byte aligned memory as an ArrayBuffer; zero-filled when `zero`. */
  alloc(bytes: number, zero: boolean): ArrayBuffer;
  /** Releases the memory now and detaches the buffer (idempotent). */
  free(buffer: ArrayBuffer): void;
  /**
   * The whole file as a private copy-on-write mapping (pages from the page cache, no
   * copy); release with `free`. Throws ERR_NOT_FOUND / ERR_IO. The file must not
   * shrink while mapped.
   */
  mapFile(path: string): ArrayBuffer;
  /**
   * For a buffer from mapFile: drops the whole pages inside [byteOffset, byteOffset +
   * byteLength) from the process (they read back from the file if touched). Else a no-op.
   */
  releasePages(buffer: ArrayBuffer, byteOffset: number, byteLength: number): void;
  memoryStats(): MemoryStats;
  resetPeakBytes(): void;
  /** Caps the large-block cache (bytes; 0 empties it); returns the previous cap. */
  setHostCacheLimit(bytes: number): number;
  setNumThreads(threads: number): void;
  /** Caps the SIMD level (tests); returns the level in force. */
  setSimdLevel(level: 'portable' | 'avx2' | 'avx512'): string;
  runtimeInfo(): RuntimeInfo;

  // ---- layout and dtype (cpp/ops/copy.cc) ----
  /**
   * dst[i] = convert(src[offset + Σ idx_d · srcStrides[d]]) for every index of `shape`,
   * dst contiguous. src/dst are Float32Array (float32) or Uint16Array (float16/bfloat16).
   */
  copyStrided(
    src: Float32Array | Uint16Array, srcDtype: DtypeCode, srcOffset: number,
    shape: number[], srcStrides: number[],
    dst: Float32Array | Uint16Array, dstDtype: DtypeCode,
  ): void;

  // ---- GEMM (cpp/ops/gemm.cc) ----
  /**
   * For each batch index b:
   *   C_b[m×n] = act(alpha · op(A_b) · op(B_b) + beta · C_b + bias[n])
   * op(A) is A[m×k] (lda ≥ k) or, when transA, Aᵀ with A stored [k×m] (lda ≥ m); same for B
   * ([k×n] or transB [n×k]). A_b = a + b·strideA (strideA 0 broadcasts). beta = 0 ignores C's
   * old contents (NaN included). bias may be null. activation: Activation.
   */
  gemm(
    a: F32, b: F32, c: F32, bias: F32 | null,
    batch: number, m: number, n: number, k: number,
    transA: boolean, transB: boolean,
    lda: number, ldb: number, ldc: number,
    strideA: number, strideB: number, strideC: number,
    alpha: number, beta: number, activation: Activation,
  ): void;

  // ---- elementwise (cpp/ops/elementwise.cc) ----
  /** y[i] = f(x[i]), i < n. */
  unaryForward(op: UnaryOp, x: F32, y: F32, n: number): void;
  /** gx[i] = gy[i] · f'(x[i]) (y = f(x) given too, for ops whose derivative uses it). */
  unaryBackward(op: UnaryOp, x: F32, y: F32, gy: F32, gx: F32, n: number): void;
  /**
   * out (contiguous, `shape`) = a ⊙ b where a and b are read with strides
   * (0 on broadcast dims): out[idx] = op(a[Σ idx·aStrides], b[Σ idx·bStrides]).
   */
  binaryForward(op: BinaryOp, a: F32, b: F32, out: F32, shape: number[], aStrides: number[], bStrides: number[]): void;
  /** y[i] = alpha · x[i] + beta. */
  affine(x: F32, y: F32, n: number, alpha: number, beta: number): void;
  /** y[i] += alpha · x[i]. */
  axpy(x: F32, y: F32, n: number, alpha: number): void;
  /**
   * Sum-to-shape (the backward of broadcasting): dst (contiguous, dstShape) =
   * Σ over src (contiguous, srcShape) entries that broadcast onto each dst entry.
   * dstShape has the same rank as srcShape with 1 on reduced dims.
   */
  sumToShape(src: F32, srcShape: number[], dst: F32, dstShape: number[]): void;

  // ---- reductions (cpp/ops/reduce.cc) ----
  /** x viewed [outer, dim, inner] → out [outer, inner]; argmax (Int32Array) only for Max, may be null. */
  reduce(op: ReduceOp, x: F32, out: F32, outer: number, dim: number, inner: number, argmax: Int32Array | null): void;
  /** Σ x[i]² in float64 (gradient-norm clipping). */
  sumSquares(x: F32, n: number): number;

  // ---- softmax (cpp/ops/softmax.cc) ----
  /** Over the last dim of [rows, cols]; log-softmax when `log`. */
  softmaxForward(x: F32, y: F32, rows: number, cols: number, log: boolean): void;
  softmaxBackward(y: F32, gy: F32, gx: F32, rows: number, cols: number, log: boolean): void;

  // ---- cross entropy (cpp/ops/cross_entropy.cc) ----
  /** losses[r] = logsumexp(logits[r]) − logits[r, target[r]]; target −1 (ignored) gives 0. */
  crossEntropyForward(logits: F32, targets: Int32Array, losses: F32, rows: number, cols: number): void;
  /** gLogits[r] = gLosses[r] · (softmax(logits[r]) − onehot(target[r])). */
  crossEntropyBackward(logits: F32, targets: Int32Array, gLosses: F32, gLogits: F32, rows: number, cols: number): void;

  // ---- layer norm (cpp/ops/layernorm.cc) ----
  /** Over the last dim of [rows, cols]; mean/rstd [rows] saved for backward; gamma/beta may be null. */
  layerNormForward(x: F32, gamma: F32 | null, beta: F32 | null, y: F32, mean: F32, rstd: F32,
    rows: number, cols: number, eps: number): void;
  /** gx written; gGamma/gBeta (+=) may be null. */
  layerNormBackward(x: F32, gamma: F32 | null, mean: F32, rstd: F32, gy: F32, gx: F32,
    gGamma: F32 | null, gBeta: F32 | null, rows: number, cols: number): void;

  // ---- gather / scatter (cpp/ops/index.cc) ----
  /** x [outer, dim, inner], idx [count] → out [outer, count, inner]. Indices checked in range. */
  indexSelect(x: F32, idx: Int32Array, out: F32, outer: number, dim: number, inner: number, count: number): void;
  /** gx [outer, dim, inner] += scatter of gOut [outer, count, inner] at idx. */
  indexAdd(gOut: F32, idx: Int32Array, gx: F32, outer: number, dim: number, inner: number, count: number): void;

  // ---- dropout (cpp/ops/dropout.cc) ----
  /**
   * Counter-based RNG (same result for any thread count): keep[i] = u(seed, i) ≥ p,
   * y = x · keep / (1 − p); mask (Uint8Array, 1 = kept) saved for backward.
   */
  dropoutForward(x: F32, y: F32, mask: Uint8Array, n: number, p: number, seed: number): void;
  dropoutBackward(gy: F32, mask: Uint8Array, gx: F32, n: number, p: number): void;

  // ---- attention (cpp/ops/attention.cc) ----
  /**
   * Tiled (flash) attention with online softmax; never materializes [Nq, Nk].
   * dims = [B, H, Nq, Nk, D]. q/k/v/out are read/written with strides [sB, sH, sN]
   * (last dim contiguous), so fused qkv [B, N, 3, H, D] is used in place.
   * lse [B, H, Nq] (contiguous) saved for backward. keyMask: Uint8Array [B, Nk], 1 = attend, or null.
   * A query row whose keys are all masked outputs zeros (lse = −Infinity).
   */
  attentionForward(q: F32, k: F32, v: F32, out: F32, lse: F32, keyMask: Uint8Array | null,
    dims: number[], qStrides: number[], kStrides: number[], vStrides: number[], outStrides: number[],
    scale: number): void;
  /** gq/gk/gv written with the layouts of q/k/v; gOut read with out's layout. */
  attentionBackward(q: F32, k: F32, v: F32, out: F32, gOut: F32, lse: F32,
    gq: F32, gk: F32, gv: F32, keyMask: Uint8Array | null,
    dims: number[], qStrides: number[], kStrides: number[], vStrides: number[], outStrides: number[],
    scale: number): void;
  /** The anchor: materializes the [Nq, Nk] scores per (b, h). Same arguments as attentionForward, no lse. */
  attentionNaiveForward(q: F32, k: F32, v: F32, out: F32, keyMask: Uint8Array | null,
    dims: number[], qStrides: number[], kStrides: number[], vStrides: number[], outStrides: number[],
    scale: number): void;

  // ---- optimizers (cpp/ops/optim.cc) ----
  /**
   * Fused AdamW (decoupled weight decay, Loshchilov & Hutter):
   *   p −= lr·wd·p;  m = β1 m + (1−β1) g;  v = β2 v + (1−β2) g²;
   *   p −= lr · (m / (1−β1^step)) / (sqrt(v / (1−β2^step)) + eps)
   */
  adamwStep(param: F32, grad: F32, m: F32, v: F32, n: number,
    lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, step: number): void;
  /** SGD with momentum as torch.optim.SGD (dampening, nesterov, weight decay); `first` initializes the buffer. */
  sgdStep(param: F32, grad: F32, momentumBuffer: F32 | null, n: number, lr: number, momentum: number,
    dampening: number, weightDecay: number, nesterov: boolean, first: boolean): void;

  // ---- contrastive loss (cpp/ops/contrastive.cc) ----
  /**
   * Symmetric InfoNCE of paired rows a, b [n, d] with S = scale·a bᵀ, tiled over tileRows rows
   * of S (0: automatic). Returns the loss; writes lseRows/lseCols [n] for the backward.
   */
  contrastiveForward(a: F32, b: F32, n: number, d: number, scale: number, tileRows: number, lseRows: F32, lseCols: F32): number;
  /** Writes gradA, gradB [n, d] for upstream gLoss; returns d loss / d logit_scale. */
  contrastiveBackward(a: F32, b: F32, n: number, d: number, scale: number, tileRows: number, lseRows: F32, lseCols: F32,
    gLoss: number, gradA: F32, gradB: F32): number;

  // ---- OpenSlide (cpp/binding/openslide.cc over cpp/ops/openslide_reader.cc) ----
  // Every function exists in every build; without libopenslide at build time
  // (`runtimeInfo().openslideBuilt === false`) all but `openslideVersion` and
  // `openslideArgbToRgb` throw ERR_UNSUPPORTED.
  /** `openslide_get_version()`, or null when built without OpenSlide. */
  openslideVersion(): string | null;
  /** `openslide_detect_vendor(path)`: the vendor name, or null when OpenSlide does not recognize the file. */
  openslideDetectVendor(path: string): string | null;
  /** Opens a slide and returns its handle. Throws ERR_FORMAT with OpenSlide's reason. */
  openslideOpen(path: string): number;
  /** Releases a handle (an in-flight read finishes first); false when it was not open. */
  openslideClose(handle: number): boolean;
  /** Geometry and properties; every libopenslide call is error-checked. */
  openslideInfo(handle: number): OpenSlideNativeInfo;
  /**
   * `openslide_read_region` on the libuv thread pool, converted to RGB [h, w, 3] into
   * `out` (≥ w·h·3 bytes; do not transfer or detach it before the promise settles):
   * premultiplied ARGB un-premultiplied as openslide-python does, transparent pixels
   * (alpha 0) set to `background`. (x, y) level-0, (w, h) pixels of `level`.
   * Rejects with ERR_RANGE (level, size), ERR_FORMAT (OpenSlide read error; the handle
   * stays in error), ERR_ARGUMENT (closed handle).
   */
  openslideReadRegion(
    handle: number, x: number, y: number, level: number, w: number, h: number,
    out: Uint8Array, background: readonly [number, number, number],
  ): Promise<void>;
  /** The pixel conversion alone: premultiplied ARGB [n] → RGB [n, 3] (always built). */
  openslideArgbToRgb(argb: Uint32Array, rgb: Uint8Array, background: readonly [number, number, number]): void;


  // ---- MIL: fused attention pooling (cpp/ops/bag_pool.cc) ----
  /**
   * Ragged bags: instances [T] delimited by offsets [B + 1]; mask [T] (1 = valid) or null.
   * attn [T, K] = softmax over each bag's valid rows of scores [T, K];
   * pooled [B, K, L] = Σ_t attn[t, k] · h[t, :] (h rows `hStride` apart).
   */
  bagPoolForward(scores: F32, h: F32, offsets: Int32Array, mask: Uint8Array | null, attn: F32, pooled: F32,
    bags: number, total: number, heads: number, dim: number, hStride: number): void;
  /**
   * gradH [T, L] = Σ_k attn · gradPooled[b, k]; gradScores [T, K] = attn · (h·g − pooled·g).
   * Either output may be null. attn and pooled are the forward's outputs.
   */
  bagPoolBackward(h: F32, offsets: Int32Array, mask: Uint8Array | null, attn: F32, pooled: F32, gradPooled: F32,
    gradH: F32 | null, gradScores: F32 | null, bags: number, total: number, heads: number, dim: number, hStride: number): void;

  // ---- depthwise 2-D convolution, channels-last, same padding (cpp/ops/dwconv2d.cc) ----
  /**
   * dims = [B, H, W, C, kh, kw] (odd kernels). Each buffer is (data, row0, rows, stride): it holds
   * image rows [row0, row0 + rows), pixels `stride` elements apart. Computes output rows
   * [rowBegin, rowEnd): y = bias + Σ w[c, i, j] · x[r + i − kh/2, x + j − kw/2, c]. weight [C, kh, kw].
   */
  dwconv2dForward(x: F32, xRow0: number, xRows: number, xStride: number, weight: F32, bias: F32 | null,
    y: F32, yRow0: number, yRows: number, yStride: number, dims: number[], rowBegin: number, rowEnd: number): void;
  /** gx rows [rowBegin, rowEnd) of the input gradient (written). */
  dwconv2dBackwardInput(gy: F32, gyRow0: number, gyRows: number, gyStride: number, weight: F32,
    gx: F32, gxRow0: number, gxRows: number, gxStride: number, dims: number[], rowBegin: number, rowEnd: number): void;
  /** gWeight [C, kh, kw] += and gBias [C] += over output rows [rowBegin, rowEnd); either may be null. */
  dwconv2dBackwardWeight(x: F32, xRow0: number, xRows: number, xStride: number, gy: F32, gyRow0: number, gyRows: number,
    gyStride: number, gWeight: F32 | null, gBias: F32 | null, dims: number[], rowBegin: number, rowEnd: number): void;

  // ---- Nyström landmarks (cpp/ops/nystrom.cc) ----
  /** out[r / group, c] += Σ x[(r − rowBegin)·xStride + c] over rows r in [rowBegin, rowEnd), c < cols. */
  groupRowSum(x: F32, xStride: number, rowBegin: number, rowEnd: number, cols: number, group: number, out: F32): void;
  /** out[(r − rowBegin)·outStride + c] (+)= alpha · g[r / group, c] for r in [rowBegin, rowEnd). */
  groupRowBroadcast(g: F32, rowBegin: number, rowEnd: number, cols: number, group: number, alpha: number,
    out: F32, outStride: number, accumulate: boolean): void;
}

/** What `openslideInfo` returns. */
export interface OpenSlideNativeInfo {
  /** [L] of [width, height], level 0 first. */
  levelDimensions: [number, number][];
  /** [L] downsample of each level relative to level 0. */
  levelDownsamples: number[];
  /** Every OpenSlide property (`openslide.*`, `tiff.*`, vendor keys). */
  properties: Record<string, string>;
}

const here = dirname(fileURLToPath(import.meta.url));
/** Package root: lib/ (sources under vitest/tsx) and dist/ (compiled) both sit one level down. */
export const packageRoot = join(here, '..');

export interface LoadedNative {
  binding: NativeBinding;
  /** Path of the .node file that was loaded. */
  path: string;
  backend: 'cpu' | 'cuda';
}

let loaded: LoadedNative | undefined;

/**
 * Loads the addon. Order: MSTAR_ADDON (an explicit path, for development); the CUDA build (build-cuda/) when present, a GPU answers
 * and MSTAR_DEVICE is not 'cpu'; then the CPU addon through node-gyp-build
 * (prebuilds/<platform>-<arch>/ first, then build/Release). If every candidate
 * fails, the error lists what was tried and how to fix it.
 */
export function loadNative(): LoadedNative {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  const override = process.env.MSTAR_ADDON;
  if (override) {
    // Development: an explicit addon path (scripts/dev-build.sh) wins.
    loaded = { binding: require(override) as NativeBinding, path: override, backend: 'cpu' };
    return loaded;
  }
  const forceCpu = (process.env.MSTAR_DEVICE ?? '').toLowerCase() === 'cpu';
  const cudaPath = join(packageRoot, 'build-cuda', 'Release', 'mstar.node');
  if (!forceCpu && existsSync(cudaPath)) {
    try {
      const binding = require(cudaPath) as NativeBinding & { cudaDeviceCount?: () => number };
      const devices = binding.cudaDeviceCount ? binding.cudaDeviceCount() : 0;
      if (devices > 0) {
        loaded = { binding, path: cudaPath, backend: 'cuda' };
        return loaded;
      }
      tried.push(`${cudaPath}: built with CUDA but no GPU answered; using the CPU addon`);
    } catch (error) {
      tried.push(`${cudaPath}: ${(error as Error).message}`);
    }
  }
  try {
    const nodeGypBuild = require('node-gyp-build') as { (dir: string): unknown; resolve(dir: string): string };
    const path = nodeGypBuild.resolve(packageRoot);
    loaded = { binding: require(path) as NativeBinding, path, backend: 'cpu' };
    return loaded;
  } catch (error) {
    tried.push(`CPU addon (prebuilds/, build/Release/): ${(error as Error).message}`);
  }
  const error = new Error(
    'mstar-node: could not load the native addon.\nTried:\n' +
      tried.map((t) => `  - ${t}`).join('\n') +
      '\nFix: run `npm rebuild mstar-node` (needs python3, make and a C++17 compiler), ' +
      'or `npm run build:native` in a checkout; for the GPU build run `npm run build:cuda`.',
  ) as Error & { code: string };
  error.code = 'ERR_NATIVE_LOAD';
  throw error;
}

/** The binding of the loaded addon. */
export function native(): NativeBinding {
  return loadNative().binding;
}
