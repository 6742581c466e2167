/**
 * The CUDA backend's TypeScript surface: device buffers and typed wrappers over the
 * `cuda*` functions of the CUDA build (cpp/binding/cuda.cc → cuda/*.cu).
 *
 * Every build answers `cudaDeviceCount()` (0 on the CPU addon or without a GPU) and
 * `cudaInfo()`; the rest exists only in build-cuda/Release/mstar.node (`npm run build:cuda`).
 * Kernel wrappers take the arguments of the CPU function of the same name in lib/native.ts,
 * in the same order, with DeviceBuffers in place of typed arrays, then the storage dtype
 * (float32 or bfloat16; layer-norm parameters and statistics are always float32). The slide-level
 * aggregation ops (bag pooling, depthwise conv, Nyström row groups) are float32 only, like their CPU
 * kernels, and take no dtype; bag offsets stay a host Int32Array, masks are Uint8 device buffers. So
 * are the training ops (the contrastive loss, AdamW and SGD steps); the contrastive functions return
 * their scalar like the CPU ones, which makes them wait for the device.
 *
 * Memory is explicit: `device.alloc()` / `device.upload()` return a DeviceBuffer that must be
 * disposed (`using buf = ...` or `buf.dispose()`); the GC finalizer is only a safety net.
 * Kernels are queued on one stream and return at once; `download()` waits for them, so an
 * asynchronous device error surfaces there (code ERR_CUDA; after an illegal address the
 * device is lost for the rest of the process and every call says so).
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  checkFiniteNumber,
  checkNonNegativeInteger,
  checkNumberInRange,
  checkPositiveInteger,
  invalidArgument,
  MstarError,
  rangeError,
} from './errors.js';
import { Activation, BinaryOp, DtypeCode, loadNative, packageRoot, UnaryOp, type NativeBinding } from './native.js';

declare const deviceHandleBrand: unique symbol;
/** Opaque native handle of a device allocation (a type-tagged N-API external). */
export type DeviceHandle = { readonly [deviceHandleBrand]: true };

/** How float32 GEMM operands are multiplied on tensor cores (cuda/gemm.cuh). */
export enum GemmMath {
  /** 3xTF32 split products: float32-level accuracy (default). */
  Fp32 = 0,
  /** One TF32 product: ~3x faster, ~1e-3 relative error (torch's allow_tf32). */
  Tf32 = 1,
}

/** Storage types the CUDA kernels accept. */
export type CudaDtype = DtypeCode.Float32 | DtypeCode.BFloat16;

export interface CudaDeviceInfo {
  index: number;
  name: string;
  /** e.g. "9.0" */
  computeCapability: string;
  multiprocessors: number;
  totalMemory: number;
}

export interface CudaInfo {
  /** false on the CPU addon; the other fields exist only when true. */
  built: boolean;
  runtimeVersion?: number;
  driverVersion?: number;
  devices?: CudaDeviceInfo[];
  deviceLost?: boolean;
  lostReason?: string;
}

export interface CudaMemoryStats {
  /** Bytes handed out (rounded to allocator buckets). */
  bytesInUse: number;
  /** Freed bytes kept for reuse. */
  bytesCached: number;
  /** In use + cached: what the allocator holds from the device. */
  bytesReserved: number;
  peakBytesInUse: number;
  /** 0 = no budget. */
  budget: number;
  liveAllocations: number;
  allocations: number;
  cacheHits: number;
  deviceMallocs: number;
  /** Times the cache was emptied to satisfy a request. */
  oomRetries: number;
}

/** What every build exports. */
export interface CudaProbe {
  /** GPUs this build can use (compute capability 8.0+); 0 without CUDA, driver or GPU. Never throws. */
  cudaDeviceCount(): number;
  cudaInfo(): CudaInfo;
}

type H = DeviceHandle;

/** What only the CUDA build exports (cpp/binding/cuda.cc). */
export interface CudaNativeBinding extends CudaProbe {
  cudaSupportedOps(): string[];
  cudaSynchronize(): void;
  /** Test hook: queues an illegal-address kernel; the device is lost for the rest of the process. */
  cudaTestFault(): void;
  cudaAlloc(bytes: number): H;
  cudaFree(buffer: H): void;
  cudaView(buffer: H, byteOffset: number, bytes: number): H;
  cudaUpload(host: ArrayBufferView, buffer: H): void;
  cudaDownload(buffer: H, host: ArrayBufferView): void;
  cudaCopy(src: H, dst: H, bytes: number): void;
  cudaZero(buffer: H): void;
  cudaMemoryStats(): CudaMemoryStats;
  cudaResetPeakMemory(): void;
  cudaSetMemoryBudget(bytes: number): void;
  cudaEmptyCache(): void;
  cudaGemm(
    a: H, b: H, c: H, bias: H | null,
    batch: number, m: number, n: number, k: number,
    transA: boolean, transB: boolean,
    lda: number, ldb: number, ldc: number,
    strideA: number, strideB: number, strideC: number,
    alpha: number, beta: number, activation: Activation,
    dtype?: CudaDtype, math?: GemmMath,
  ): void;
  cudaUnaryForward(op: UnaryOp, x: H, y: H, n: number, dtype?: CudaDtype): void;
  cudaUnaryBackward(op: UnaryOp, x: H, y: H, gy: H, gx: H, n: number, dtype?: CudaDtype): void;
  cudaBinaryForward(op: BinaryOp, a: H, b: H, out: H, shape: number[], aStrides: number[], bStrides: number[],
    dtype?: CudaDtype): void;
  cudaSoftmaxForward(x: H, y: H, rows: number, cols: number, log: boolean, dtype?: CudaDtype): void;
  cudaSoftmaxBackward(y: H, gy: H, gx: H, rows: number, cols: number, log: boolean, dtype?: CudaDtype): void;
  cudaLayerNormForward(x: H, gamma: H | null, beta: H | null, y: H, mean: H, rstd: H,
    rows: number, cols: number, eps: number, dtype?: CudaDtype): void;
  cudaLayerNormBackward(x: H, gamma: H | null, mean: H, rstd: H, gy: H, gx: H,
    gGamma: H | null, gBeta: H | null, rows: number, cols: number, dtype?: CudaDtype): void;
  cudaAttentionForward(q: H, k: H, v: H, out: H, lse: H, keyMask: H | null,
    dims: number[], qStrides: number[], kStrides: number[], vStrides: number[], outStrides: number[],
    scale: number, dtype?: CudaDtype): void;
  cudaBagPoolForward(scores: H, h: H, offsets: Int32Array, mask: H | null, attn: H, pooled: H,
    bags: number, total: number, heads: number, dim: number, hStride: number): void;
  cudaBagPoolBackward(h: H, offsets: Int32Array, mask: H | null, attn: H, pooled: H, gradPooled: H,
    gradH: H | null, gradScores: H | null, bags: number, total: number, heads: number, dim: number, hStride: number): void;
  cudaDwconv2dForward(x: H, xRow0: number, xRows: number, xStride: number, weight: H, bias: H | null,
    y: H, yRow0: number, yRows: number, yStride: number, dims: number[], rowBegin: number, rowEnd: number): void;
  cudaDwconv2dBackwardInput(gy: H, gyRow0: number, gyRows: number, gyStride: number, weight: H,
    gx: H, gxRow0: number, gxRows: number, gxStride: number, dims: number[], rowBegin: number, rowEnd: number): void;
  cudaDwconv2dBackwardWeight(x: H, xRow0: number, xRows: number, xStride: number, gy: H, gyRow0: number, gyRows: number,
    gyStride: number, gWeight: H | null, gBias: H | null, dims: number[], rowBegin: number, rowEnd: number): void;
  cudaGroupRowSum(x: H, xStride: number, rowBegin: number, rowEnd: number, cols: number, group: number, out: H): void;
  cudaGroupRowBroadcast(g: H, rowBegin: number, rowEnd: number, cols: number, group: number, alpha: number,
    out: H, outStride: number, accumulate: boolean): void;
  cudaContrastiveForward(a: H, b: H, n: number, d: number, scale: number, tileRows: number, lseRows: H, lseCols: H): number;
  cudaContrastiveBackward(a: H, b: H, n: number, d: number, scale: number, tileRows: number, lseRows: H, lseCols: H,
    gLoss: number, gradA: H, gradB: H): number;
  cudaAdamwStep(param: H, grad: H, m: H, v: H, n: number, lr: number, beta1: number, beta2: number, eps: number,
    weightDecay: number, step: number): void;
  cudaSgdStep(param: H, grad: H, momentumBuffer: H | null, n: number, lr: number, momentum: number, dampening: number,
    weightDecay: number, nesterov: boolean, first: boolean): void;
}

/** Where `npm run build:cuda` puts the CUDA-enabled addon. */
export const cudaBuildPath = join(packageRoot, 'build-cuda', 'Release', 'mstar.node');

/**
 * Loads the CUDA build directly, whatever MSTAR_DEVICE says (tests, benchmarks). It has
 * the CPU functions of lib/native.ts too. Throws ERR_NATIVE_LOAD if it is missing or is
 * not a CUDA build.
 */
export function loadCudaBuild(path: string = cudaBuildPath): NativeBinding & CudaNativeBinding {
  if (!existsSync(path)) {
    throw new MstarError('ERR_NATIVE_LOAD', `No CUDA build at ${path}; run \`npm run build:cuda\` (needs nvcc).`);
  }
  const binding = createRequire(import.meta.url)(path) as NativeBinding & Partial<CudaNativeBinding>;
  if (typeof binding.cudaAlloc !== 'function') {
    throw new MstarError('ERR_NATIVE_LOAD', `${path} was built without CUDA (no cudaAlloc).`);
  }
  return binding as NativeBinding & CudaNativeBinding;
}

/** True when the addon in use (lib/native.ts) is the CUDA build and a GPU answered. */
export function cudaAvailable(): boolean {
  try {
    return loadNative().backend === 'cuda';
  } catch {
    return false;
  }
}

/**
 * What CUDA this installation has (for `mstar info`): the addon in use when it is the
 * CUDA build; else the CUDA build on disk, if any (it answers without a GPU, with no
 * devices); else `{ built: false }`.
 */
export function cudaDeviceInfo(): CudaInfo {
  const loaded = loadNative();
  if (loaded.backend === 'cuda') return (loaded.binding as unknown as CudaProbe).cudaInfo();
  if (existsSync(cudaBuildPath)) return loadCudaBuild().cudaInfo();
  return { built: false };
}

/** The CUDA device of the addon in use; ERR_UNSUPPORTED when that is the CPU addon. */
export function defaultCudaDevice(): CudaDevice {
  const loaded = loadNative();
  if (loaded.backend !== 'cuda') {
    throw new MstarError(
      'ERR_UNSUPPORTED',
      `CUDA is not in use (loaded ${loaded.path}): build it with \`npm run build:cuda\`, run on a machine ` +
        'with an NVIDIA GPU, and leave MSTAR_DEVICE unset.',
    );
  }
  defaultDevice ??= new CudaDevice(loaded.binding as unknown as CudaNativeBinding);
  return defaultDevice;
}
let defaultDevice: CudaDevice | undefined;

/**
 * Device memory. An owning buffer frees its allocation on dispose(); a view (from
 * `view()`) shares it and only forgets its handle. Using a buffer after its owner was
 * disposed throws ERR_DISPOSED here (ERR_DETACHED from native code).
 */
export class DeviceBuffer implements Disposable {
  readonly bytes: number;
  readonly owner: boolean;
  #device: CudaDevice;
  #handle: H | null;

  /** @internal Use CudaDevice.alloc / upload / DeviceBuffer.view. */
  constructor(device: CudaDevice, handle: H, bytes: number, owner: boolean) {
    this.#device = device;
    this.#handle = handle;
    this.bytes = bytes;
    this.owner = owner;
    // No FinalizationRegistry: the native handle's own GC finalizer returns the memory
    // once no handle (owner or view) of the allocation is left.
  }

  get disposed(): boolean {
    return this.#handle === null;
  }

  /** The native handle (for the cuda* functions). */
  get handle(): H {
    if (this.#handle === null) throw new MstarError('ERR_DISPOSED', 'DeviceBuffer was disposed');
    return this.#handle;
  }

  /** Copies `host` (any typed array, bytes as they are) to the start of this buffer. */
  upload(host: ArrayBufferView): this {
    if (!ArrayBuffer.isView(host)) throw invalidArgument('host', 'a typed array', host);
    if (host.byteLength > this.bytes) {
      throw rangeError('ERR_SHAPE', `host has ${host.byteLength} bytes, more than the buffer's ${this.bytes}`);
    }
    this.#device.binding.cudaUpload(host, this.handle);
    return this;
  }

  /** Fills `into` from the start of this buffer; waits for queued kernels. */
  download<T extends ArrayBufferView>(into: T): T {
    if (!ArrayBuffer.isView(into)) throw invalidArgument('into', 'a typed array', into);
    if (into.byteLength > this.bytes) {
      throw rangeError('ERR_SHAPE', `into has ${into.byteLength} bytes, more than the buffer's ${this.bytes}`);
    }
    this.#device.binding.cudaDownload(this.handle, into);
    return into;
  }

  /** The first `length` float32 values (default: all). */
  toFloat32(length = Math.floor(this.bytes / 4)): Float32Array {
    return this.download(new Float32Array(checkNonNegativeInteger('length', length)));
  }

  /** The first `length` 16-bit values (bfloat16 bits; default: all). */
  toUint16(length = Math.floor(this.bytes / 2)): Uint16Array {
    return this.download(new Uint16Array(checkNonNegativeInteger('length', length)));
  }

  /** A non-owning view of [byteOffset, byteOffset + bytes). */
  view(byteOffset: number, bytes: number): DeviceBuffer {
    checkNonNegativeInteger('byteOffset', byteOffset);
    checkNonNegativeInteger('bytes', bytes);
    if (byteOffset + bytes > this.bytes) {
      throw rangeError('ERR_SHAPE', `view [${byteOffset}, ${byteOffset + bytes}) exceeds the buffer's ${this.bytes} bytes`);
    }
    return new DeviceBuffer(this.#device, this.#device.binding.cudaView(this.handle, byteOffset, bytes), bytes, false);
  }

  /** Frees the allocation now (owner) or drops the view; idempotent. */
  dispose(): void {
    if (this.#handle === null) return;
    if (this.owner) this.#device.binding.cudaFree(this.#handle);
    this.#handle = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

type Buf = DeviceBuffer;

function handleOf(name: string, buffer: unknown): H {
  if (!(buffer instanceof DeviceBuffer)) throw invalidArgument(name, 'a DeviceBuffer', buffer);
  return buffer.handle;
}

function optionalHandle(name: string, buffer: unknown): H | null {
  return buffer === null || buffer === undefined ? null : handleOf(name, buffer);
}

function checkDtype(dtype: unknown): CudaDtype {
  if (dtype !== DtypeCode.Float32 && dtype !== DtypeCode.BFloat16) {
    throw invalidArgument('dtype', 'DtypeCode.Float32 or DtypeCode.BFloat16', dtype);
  }
  return dtype;
}

function checkEnum(name: string, value: unknown, count: number): number {
  if (!(typeof value === 'number' && Number.isInteger(value) && value >= 0 && value < count)) {
    throw invalidArgument(name, `an integer code in [0, ${count})`, value);
  }
  return value;
}

function checkBoolean(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw invalidArgument(name, 'a boolean', value);
  return value;
}

function checkSizes(name: string, values: unknown): number[] {
  if (!Array.isArray(values)) throw invalidArgument(name, 'an array of non-negative integers', values);
  return values.map((v, i) => checkNonNegativeInteger(`${name}[${i}]`, v));
}

/** Bag offsets: an Int32Array of exactly bags + 1 entries, 0 = o[0] <= o[1] <= ... <= o[bags] = total. */
function checkBagOffsets(offsets: unknown, bags: number, total: number): Int32Array {
  if (!(offsets instanceof Int32Array)) throw invalidArgument('offsets', 'an Int32Array', offsets);
  if (offsets.length !== bags + 1) {
    throw rangeError('ERR_SHAPE', `offsets needs bags + 1 = ${bags + 1} entries, got ${offsets.length}`);
  }
  for (let b = 0; b <= bags; b++) {
    const o = offsets[b];
    if (o < 0 || o > total || (b > 0 && o < offsets[b - 1])) {
      throw rangeError('ERR_RANGE', `offsets[${b}] = ${o} breaks 0 <= offsets[b] <= offsets[b+1] <= total (${total})`);
    }
  }
  if (offsets[0] !== 0 || offsets[bags] !== total) {
    throw rangeError('ERR_RANGE', `offsets must start at 0 and end at total (${total})`);
  }
  return offsets;
}

/** dims = [B, H, W, C, kh, kw] with odd kernels, and output rows rowBegin <= rowEnd <= H. */
function checkDwconvDims(dims: unknown, rowBegin: unknown, rowEnd: unknown): number[] {
  const d = checkSizes('dims', dims);
  if (d.length !== 6) throw rangeError('ERR_SHAPE', `dims must be [B, H, W, C, kh, kw], got ${d.length} entries`);
  if (d[4] % 2 === 0 || d[5] % 2 === 0 || d[4] < 1 || d[5] < 1) {
    throw rangeError('ERR_SHAPE', `kernel sizes must be odd and >= 1, got ${d[4]}x${d[5]}`);
  }
  const begin = checkNonNegativeInteger('rowBegin', rowBegin), end = checkNonNegativeInteger('rowEnd', rowEnd);
  if (begin > end || end > d[1]) throw rangeError('ERR_RANGE', `rows [${begin}, ${end}) are not inside [0, H = ${d[1]})`);
  return d;
}

/** A dwconv2d image buffer's (row0, rows, stride): rows inside the image, stride >= C. */
function checkDwconvRows(name: string, dims: number[], row0: unknown, rows: unknown, stride: unknown): [number, number, number] {
  const r0 = checkNonNegativeInteger(`${name}Row0`, row0), n = checkNonNegativeInteger(`${name}Rows`, rows);
  const s = checkNonNegativeInteger(`${name}Stride`, stride);
  if (r0 + n > dims[1]) throw rangeError('ERR_RANGE', `${name} rows [${r0}, ${r0 + n}) extend beyond the image height ${dims[1]}`);
  if (s < dims[3]) throw rangeError('ERR_SHAPE', `${name}Stride (${s}) must be >= C (${dims[3]})`);
  return [r0, n, s];
}

/** Nyström row range: rowBegin <= rowEnd, group >= 1, stride >= cols. */
function checkRowGroups(rowBegin: unknown, rowEnd: unknown, cols: unknown, group: unknown, strideName: string,
  stride: unknown): [number, number, number, number, number] {
  const begin = checkNonNegativeInteger('rowBegin', rowBegin), end = checkNonNegativeInteger('rowEnd', rowEnd);
  if (begin > end) throw rangeError('ERR_RANGE', `rowBegin (${begin}) must be <= rowEnd (${end})`);
  const c = checkNonNegativeInteger('cols', cols), g = checkPositiveInteger('group', group);
  const s = checkNonNegativeInteger(strideName, stride);
  if (s < c) throw rangeError('ERR_SHAPE', `${strideName} (${s}) must be >= cols (${c})`);
  return [begin, end, c, g, s];
}

/**
 * A CUDA device through one addon binding. Arguments are validated here (names in the
 * messages); sizes against buffer extents are checked again in C++, which throws ERR_SHAPE.
 */
export class CudaDevice {
  constructor(readonly binding: CudaNativeBinding) {}

  info(): CudaInfo {
    return this.binding.cudaInfo();
  }

  supportedOps(): string[] {
    return this.binding.cudaSupportedOps();
  }

  /** Uninitialized device memory. */
  alloc(bytes: number): DeviceBuffer {
    checkNonNegativeInteger('bytes', bytes);
    return new DeviceBuffer(this, this.binding.cudaAlloc(bytes), bytes, true);
  }

  /** A new buffer holding a copy of `host`. */
  upload(host: ArrayBufferView): DeviceBuffer {
    if (!ArrayBuffer.isView(host)) throw invalidArgument('host', 'a typed array', host);
    const buffer = this.alloc(host.byteLength);
    try {
      return buffer.upload(host);
    } catch (error) {
      buffer.dispose();
      throw error;
    }
  }

  /** Waits for every queued kernel and copy. */
  synchronize(): void {
    this.binding.cudaSynchronize();
  }

  memoryStats(): CudaMemoryStats {
    return this.binding.cudaMemoryStats();
  }

  resetPeakMemory(): void {
    this.binding.cudaResetPeakMemory();
  }

  /** Caps device memory held by the allocator (in use + cached); 0 removes the cap. */
  setMemoryBudget(bytes: number): void {
    this.binding.cudaSetMemoryBudget(checkNonNegativeInteger('bytes', bytes));
  }

  /** Returns cached (freed) blocks to the driver. */
  emptyCache(): void {
    this.binding.cudaEmptyCache();
  }

  /** lib/native.ts `gemm` on device buffers; `math` applies to float32 only. */
  gemm(
    a: Buf, b: Buf, c: Buf, bias: Buf | null,
    batch: number, m: number, n: number, k: number,
    transA: boolean, transB: boolean,
    lda: number, ldb: number, ldc: number,
    strideA: number, strideB: number, strideC: number,
    alpha: number, beta: number, activation: Activation,
    dtype: CudaDtype = DtypeCode.Float32, math: GemmMath = GemmMath.Fp32,
  ): void {
    this.binding.cudaGemm(
      handleOf('a', a), handleOf('b', b), handleOf('c', c), optionalHandle('bias', bias),
      checkNonNegativeInteger('batch', batch), checkNonNegativeInteger('m', m),
      checkNonNegativeInteger('n', n), checkNonNegativeInteger('k', k),
      checkBoolean('transA', transA), checkBoolean('transB', transB),
      checkNonNegativeInteger('lda', lda), checkNonNegativeInteger('ldb', ldb), checkNonNegativeInteger('ldc', ldc),
      checkNonNegativeInteger('strideA', strideA), checkNonNegativeInteger('strideB', strideB),
      checkNonNegativeInteger('strideC', strideC),
      checkFiniteNumber('alpha', alpha), checkFiniteNumber('beta', beta),
      checkEnum('activation', activation, 3) as Activation,
      checkDtype(dtype), checkEnum('math', math, 2) as GemmMath,
    );
  }

  unaryForward(op: UnaryOp, x: Buf, y: Buf, n: number, dtype: CudaDtype = DtypeCode.Float32): void {
    this.binding.cudaUnaryForward(checkEnum('op', op, 10) as UnaryOp, handleOf('x', x), handleOf('y', y),
      checkNonNegativeInteger('n', n), checkDtype(dtype));
  }

  unaryBackward(op: UnaryOp, x: Buf, y: Buf, gy: Buf, gx: Buf, n: number, dtype: CudaDtype = DtypeCode.Float32): void {
    this.binding.cudaUnaryBackward(checkEnum('op', op, 10) as UnaryOp, handleOf('x', x), handleOf('y', y),
      handleOf('gy', gy), handleOf('gx', gx), checkNonNegativeInteger('n', n), checkDtype(dtype));
  }

  binaryForward(op: BinaryOp, a: Buf, b: Buf, out: Buf, shape: number[], aStrides: number[], bStrides: number[],
    dtype: CudaDtype = DtypeCode.Float32): void {
    const dims = checkSizes('shape', shape);
    const as = checkSizes('aStrides', aStrides);
    const bs = checkSizes('bStrides', bStrides);
    if (as.length !== dims.length || bs.length !== dims.length) {
      throw rangeError('ERR_SHAPE', `shape has ${dims.length} dims but aStrides ${as.length} and bStrides ${bs.length}`);
    }
    this.binding.cudaBinaryForward(checkEnum('op', op, 6) as BinaryOp, handleOf('a', a), handleOf('b', b),
      handleOf('out', out), dims, as, bs, checkDtype(dtype));
  }

  softmaxForward(x: Buf, y: Buf, rows: number, cols: number, log: boolean, dtype: CudaDtype = DtypeCode.Float32): void {
    this.binding.cudaSoftmaxForward(handleOf('x', x), handleOf('y', y), checkNonNegativeInteger('rows', rows),
      checkNonNegativeInteger('cols', cols), checkBoolean('log', log), checkDtype(dtype));
  }

  softmaxBackward(y: Buf, gy: Buf, gx: Buf, rows: number, cols: number, log: boolean,
    dtype: CudaDtype = DtypeCode.Float32): void {
    this.binding.cudaSoftmaxBackward(handleOf('y', y), handleOf('gy', gy), handleOf('gx', gx),
      checkNonNegativeInteger('rows', rows), checkNonNegativeInteger('cols', cols), checkBoolean('log', log),
      checkDtype(dtype));
  }

  /** gamma, beta, mean and rstd are float32 whatever `dtype` (of x and y) is. */
  layerNormForward(x: Buf, gamma: Buf | null, beta: Buf | null, y: Buf, mean: Buf, rstd: Buf,
    rows: number, cols: number, eps: number, dtype: CudaDtype = DtypeCode.Float32): void {
    this.binding.cudaLayerNormForward(handleOf('x', x), optionalHandle('gamma', gamma), optionalHandle('beta', beta),
      handleOf('y', y), handleOf('mean', mean), handleOf('rstd', rstd), checkNonNegativeInteger('rows', rows),
      checkNonNegativeInteger('cols', cols), checkFiniteNumber('eps', eps), checkDtype(dtype));
  }

  /**
   * Flash attention forward (lib/native.ts attentionForward): dims [B, H, Nq, Nk, D], strides
   * [sB, sH, sN] in elements, lse float32 [B, H, Nq], keyMask a Uint8 buffer [B, Nk] (1 = attend)
   * or null. CUDA takes bfloat16 and D = 64 or 128 (else ERR_UNSUPPORTED: use the CPU kernel).
   */
  attentionForward(q: Buf, k: Buf, v: Buf, out: Buf, lse: Buf, keyMask: Buf | null, dims: number[],
    qStrides: number[], kStrides: number[], vStrides: number[], outStrides: number[], scale: number,
    dtype: CudaDtype = DtypeCode.BFloat16): void {
    const d = checkSizes('dims', dims);
    if (d.length !== 5) throw rangeError('ERR_SHAPE', `dims must be [B, H, Nq, Nk, D], got ${d.length} entries`);
    const strides = (name: string, s: number[]) => {
      const out = checkSizes(name, s);
      if (out.length !== 3) throw rangeError('ERR_SHAPE', `${name} must be [batch, head, row] strides`);
      return out;
    };
    this.binding.cudaAttentionForward(handleOf('q', q), handleOf('k', k), handleOf('v', v), handleOf('out', out),
      handleOf('lse', lse), optionalHandle('keyMask', keyMask), d, strides('qStrides', qStrides),
      strides('kStrides', kStrides), strides('vStrides', vStrides), strides('outStrides', outStrides),
      checkFiniteNumber('scale', scale), checkDtype(dtype));
  }

  /** gGamma/gBeta (float32, may be null) are accumulated (+=). */
  layerNormBackward(x: Buf, gamma: Buf | null, mean: Buf, rstd: Buf, gy: Buf, gx: Buf,
    gGamma: Buf | null, gBeta: Buf | null, rows: number, cols: number, dtype: CudaDtype = DtypeCode.Float32): void {
    this.binding.cudaLayerNormBackward(handleOf('x', x), optionalHandle('gamma', gamma), handleOf('mean', mean),
      handleOf('rstd', rstd), handleOf('gy', gy), handleOf('gx', gx), optionalHandle('gGamma', gGamma),
      optionalHandle('gBeta', gBeta), checkNonNegativeInteger('rows', rows), checkNonNegativeInteger('cols', cols),
      checkDtype(dtype));
  }

  /**
   * Attention pooling over ragged bags (lib/native.ts bagPoolForward), float32: scores [T, K], h [T, L]
   * (row stride hStride), offsets a host Int32Array [B + 1], mask a Uint8 buffer [T] (1 = valid) or null;
   * writes attn [T, K] (masked softmax within each bag) and pooled [B, K, L] = Σ attn · h.
   */
  bagPoolForward(scores: Buf, h: Buf, offsets: Int32Array, mask: Buf | null, attn: Buf, pooled: Buf,
    bags: number, total: number, heads: number, dim: number, hStride: number): void {
    const B = checkNonNegativeInteger('bags', bags), T = checkNonNegativeInteger('total', total);
    const L = checkNonNegativeInteger('dim', dim), stride = checkNonNegativeInteger('hStride', hStride);
    if (stride < L) throw rangeError('ERR_SHAPE', `hStride (${stride}) must be >= dim (${L})`);
    this.binding.cudaBagPoolForward(handleOf('scores', scores), handleOf('h', h), checkBagOffsets(offsets, B, T),
      optionalHandle('mask', mask), handleOf('attn', attn), handleOf('pooled', pooled), B, T,
      checkPositiveInteger('heads', heads), L, stride);
  }

  /**
   * gradH [T, L] = Σ_k attn · gradPooled[b, k]; gradScores [T, K] = attn · (h·g − pooled·g); either may be
   * null (lib/native.ts bagPoolBackward). attn and pooled are the forward's outputs.
   */
  bagPoolBackward(h: Buf, offsets: Int32Array, mask: Buf | null, attn: Buf, pooled: Buf, gradPooled: Buf,
    gradH: Buf | null, gradScores: Buf | null, bags: number, total: number, heads: number, dim: number,
    hStride: number): void {
    const B = checkNonNegativeInteger('bags', bags), T = checkNonNegativeInteger('total', total);
    const L = checkNonNegativeInteger('dim', dim), stride = checkNonNegativeInteger('hStride', hStride);
    if (stride < L) throw rangeError('ERR_SHAPE', `hStride (${stride}) must be >= dim (${L})`);
    this.binding.cudaBagPoolBackward(handleOf('h', h), checkBagOffsets(offsets, B, T), optionalHandle('mask', mask),
      handleOf('attn', attn), handleOf('pooled', pooled), handleOf('gradPooled', gradPooled),
      optionalHandle('gradH', gradH), optionalHandle('gradScores', gradScores), B, T,
      checkPositiveInteger('heads', heads), L, stride);
  }

  /**
   * Depthwise 2-D convolution, channels-last, same padding (lib/native.ts dwconv2dForward), float32:
   * dims [B, H, W, C, kh, kw] (odd kernels), weight [C, kh, kw], bias [C] or null; each image buffer is
   * (buffer, row0, rows, stride) holding image rows [row0, row0 + rows). Writes y rows [rowBegin, rowEnd).
   */
  dwconv2dForward(x: Buf, xRow0: number, xRows: number, xStride: number, weight: Buf, bias: Buf | null,
    y: Buf, yRow0: number, yRows: number, yStride: number, dims: number[], rowBegin: number, rowEnd: number): void {
    const d = checkDwconvDims(dims, rowBegin, rowEnd);
    this.binding.cudaDwconv2dForward(handleOf('x', x), ...checkDwconvRows('x', d, xRow0, xRows, xStride),
      handleOf('weight', weight), optionalHandle('bias', bias), handleOf('y', y),
      ...checkDwconvRows('y', d, yRow0, yRows, yStride), d, rowBegin, rowEnd);
  }

  /** gx rows [rowBegin, rowEnd) of the input gradient (written); lib/native.ts dwconv2dBackwardInput. */
  dwconv2dBackwardInput(gy: Buf, gyRow0: number, gyRows: number, gyStride: number, weight: Buf,
    gx: Buf, gxRow0: number, gxRows: number, gxStride: number, dims: number[], rowBegin: number, rowEnd: number): void {
    const d = checkDwconvDims(dims, rowBegin, rowEnd);
    this.binding.cudaDwconv2dBackwardInput(handleOf('gy', gy), ...checkDwconvRows('gy', d, gyRow0, gyRows, gyStride),
      handleOf('weight', weight), handleOf('gx', gx), ...checkDwconvRows('gx', d, gxRow0, gxRows, gxStride), d,
      rowBegin, rowEnd);
  }

  /** gWeight [C, kh, kw] += and gBias [C] += over output rows [rowBegin, rowEnd); either may be null. */
  dwconv2dBackwardWeight(x: Buf, xRow0: number, xRows: number, xStride: number, gy: Buf, gyRow0: number,
    gyRows: number, gyStride: number, gWeight: Buf | null, gBias: Buf | null, dims: number[], rowBegin: number,
    rowEnd: number): void {
    const d = checkDwconvDims(dims, rowBegin, rowEnd);
    this.binding.cudaDwconv2dBackwardWeight(handleOf('x', x), ...checkDwconvRows('x', d, xRow0, xRows, xStride),
      handleOf('gy', gy), ...checkDwconvRows('gy', d, gyRow0, gyRows, gyStride), optionalHandle('gWeight', gWeight),
      optionalHandle('gBias', gBias), d, rowBegin, rowEnd);
  }

  /** out[r / group, c] += Σ x[(r − rowBegin)·xStride + c] over rows [rowBegin, rowEnd); lib/native.ts groupRowSum. */
  groupRowSum(x: Buf, xStride: number, rowBegin: number, rowEnd: number, cols: number, group: number, out: Buf): void {
    const [begin, end, c, g, stride] = checkRowGroups(rowBegin, rowEnd, cols, group, 'xStride', xStride);
    this.binding.cudaGroupRowSum(handleOf('x', x), stride, begin, end, c, g, handleOf('out', out));
  }

  /** out[(r − rowBegin)·outStride + c] (+)= alpha · g[r / group, c]; lib/native.ts groupRowBroadcast. */
  groupRowBroadcast(g: Buf, rowBegin: number, rowEnd: number, cols: number, group: number, alpha: number,
    out: Buf, outStride: number, accumulate: boolean): void {
    const [begin, end, c, grp, stride] = checkRowGroups(rowBegin, rowEnd, cols, group, 'outStride', outStride);
    this.binding.cudaGroupRowBroadcast(handleOf('g', g), begin, end, c, grp, checkFiniteNumber('alpha', alpha),
      handleOf('out', out), stride, checkBoolean('accumulate', accumulate));
  }

  /**
   * Symmetric InfoNCE (CLIP loss) of paired rows a, b [n, d] with S = scale·a bᵀ, computed over row tiles
   * of tileRows rows (0: automatic), never n×n (lib/native.ts contrastiveForward), float32. Writes lseRows and
   * lseCols [n] for the backward; returns the loss (waits for the device).
   */
  contrastiveForward(a: Buf, b: Buf, n: number, d: number, scale: number, tileRows: number, lseRows: Buf,
    lseCols: Buf): number {
    return this.binding.cudaContrastiveForward(handleOf('a', a), handleOf('b', b), checkPositiveInteger('n', n),
      checkPositiveInteger('d', d), checkNumberInRange('scale', scale, 0, Number.MAX_VALUE, true),
      checkNonNegativeInteger('tileRows', tileRows), handleOf('lseRows', lseRows), handleOf('lseCols', lseCols));
  }

  /**
   * Writes gradA = scale·G b and gradB = scale·Gᵀ a [n, d] for upstream gLoss, with
   * G = gLoss/(2n)·(softmax_rows(S) + softmax_cols(S) − 2I) recomputed tile by tile from the forward's
   * lseRows/lseCols; returns d loss / d logit_scale = Σ G⊙S (waits for the device). Deterministic.
   */
  contrastiveBackward(a: Buf, b: Buf, n: number, d: number, scale: number, tileRows: number, lseRows: Buf,
    lseCols: Buf, gLoss: number, gradA: Buf, gradB: Buf): number {
    return this.binding.cudaContrastiveBackward(handleOf('a', a), handleOf('b', b), checkPositiveInteger('n', n),
      checkPositiveInteger('d', d), checkNumberInRange('scale', scale, 0, Number.MAX_VALUE, true),
      checkNonNegativeInteger('tileRows', tileRows), handleOf('lseRows', lseRows), handleOf('lseCols', lseCols),
      checkFiniteNumber('gLoss', gLoss), handleOf('gradA', gradA), handleOf('gradB', gradB));
  }

  /**
   * Fused AdamW step over float32 [n] buffers, param, m and v updated in place (lib/native.ts adamwStep):
   * the CPU kernel's operations and roundings, so the results match it bit for bit on AVX2 hosts.
   */
  adamwStep(param: Buf, grad: Buf, m: Buf, v: Buf, n: number, lr: number, beta1: number, beta2: number, eps: number,
    weightDecay: number, step: number): void {
    this.binding.cudaAdamwStep(handleOf('param', param), handleOf('grad', grad), handleOf('m', m), handleOf('v', v),
      checkNonNegativeInteger('n', n), checkNumberInRange('lr', lr, 0, Number.MAX_VALUE),
      checkNumberInRange('beta1', beta1, 0, 1, false, true), checkNumberInRange('beta2', beta2, 0, 1, false, true),
      checkNumberInRange('eps', eps, 0, Number.MAX_VALUE, true),
      checkNumberInRange('weightDecay', weightDecay, 0, Number.MAX_VALUE), checkPositiveInteger('step', step));
  }

  /**
   * SGD step as torch.optim.SGD over float32 [n] buffers (lib/native.ts sgdStep); momentumBuffer is needed
   * when momentum ≠ 0 (`first` initializes it), nesterov needs momentum > 0 and dampening = 0.
   */
  sgdStep(param: Buf, grad: Buf, momentumBuffer: Buf | null, n: number, lr: number, momentum: number,
    dampening: number, weightDecay: number, nesterov: boolean, first: boolean): void {
    const mom = checkNumberInRange('momentum', momentum, 0, Number.MAX_VALUE);
    const damp = checkNumberInRange('dampening', dampening, 0, 1);
    const buffer = optionalHandle('momentumBuffer', momentumBuffer);
    if (mom !== 0 && buffer === null) {
      throw invalidArgument('momentumBuffer', `a DeviceBuffer (momentum is ${mom})`, momentumBuffer);
    }
    if (checkBoolean('nesterov', nesterov) && (mom <= 0 || damp !== 0)) {
      throw rangeError('ERR_ARGUMENT', 'nesterov needs momentum > 0 and dampening = 0 (as torch.optim.SGD)');
    }
    this.binding.cudaSgdStep(handleOf('param', param), handleOf('grad', grad), buffer, checkNonNegativeInteger('n', n),
      checkNumberInRange('lr', lr, 0, Number.MAX_VALUE), mom, damp,
      checkNumberInRange('weightDecay', weightDecay, 0, Number.MAX_VALUE), nesterov, checkBoolean('first', first));
  }
}
