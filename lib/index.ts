/**
 * mstar-node: the mSTAR pathology foundation model on a native engine.
 *
 * Engine: tensors in native memory (`Tensor`, `tidy`, `keep`, `noGrad`), differentiable
 * ops (`ops`), modules (`nn`), optimizers and schedules (`optim`).
 */
import { loadNative, native, type MemoryStats } from './native.js';

export { Tensor, Storage, tidy, keep, noGrad, isGradEnabled, numel, type Dtype, type Shape } from './tensor.js';
export * as ops from './ops/index.js';
export { Module, type LoadReport, type StateValue } from './nn/module.js';
export { Linear, LayerNorm, Dropout, MultiheadAttention } from './nn/layers.js';
export { AdamW, Adam, SGD, Optimizer, clipGradNorm, type OptimizerState } from './optim/optimizer.js';
export { warmupCosine, LRScheduler } from './optim/schedule.js';
export { manualSeed, withoutInit } from './random.js';
export { MstarError, type ErrorCode } from './errors.js';
export type { MemoryStats, RuntimeInfo } from './native.js';

/** Native bytes in use by tensors and kernel workspaces, and the peak. */
export function memoryStats(): MemoryStats {
  return native().memoryStats();
}

/** Resets the peak counter of memoryStats() to the current use. */
export function resetPeakMemory(): void {
  native().resetPeakBytes();
}

/**
 * Caps the native cache of freed large blocks (default 1 GiB, or MSTAR_HOST_CACHE_MB);
 * cached blocks beyond the cap are returned to the OS, and 0 empties the cache.
 * Returns the previous cap in bytes.
 */
export function setHostCacheLimit(bytes: number): number {
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`bytes must be a non-negative integer, got ${bytes}`);
  return native().setHostCacheLimit(bytes);
}

/** Returns every cached free block to the OS now (the cap stays as it was). */
export function releaseCachedMemory(): void {
  const binding = native();
  binding.setHostCacheLimit(binding.setHostCacheLimit(0));
}

/** Sets the number of threads the native kernels use (default: all cores, or MSTAR_NUM_THREADS). */
export function setNumThreads(threads: number): void {
  if (!Number.isSafeInteger(threads) || threads < 1) throw new RangeError(`threads must be a positive integer, got ${threads}`);
  native().setNumThreads(threads);
}

/** Which addon is loaded and what it uses. */
export function backendInfo(): { backend: 'cpu' | 'cuda'; addonPath: string; threads: number; simd: string; cpuFeatures: string; cudaBuilt: boolean; openslideBuilt: boolean } {
  const loaded = loadNative();
  const info = loaded.binding.runtimeInfo();
  return { backend: loaded.backend, addonPath: loaded.path, ...info };
}

// The patch encoder and its pieces.
export { loadPatchEncoder, PatchEncoder, type EmbedOptions, type EmbedResult, type LoadPatchEncoderOptions } from './encoder.js';
export { VisionTransformer, MSTAR_VIT_L16, vitConfigFromTimm, type VitConfig, type VitOutput } from './models/vit.js';
export { resampleAbsPosEmbed, resamplePosEmbed } from './models/pos-embed.js';
export { loadImageRgb, mstarTransform, stackImages, IMAGENET_MEAN, IMAGENET_STD } from './preprocess/transform.js';
export { resizePil, resizeTorchvision } from './preprocess/resize.js';

// File formats.
export { readTorchCheckpoint, readTorchFile, writeTorchCheckpoint } from './io/torch.js';
export { readSafetensors, writeSafetensors } from './io/safetensors.js';
export { loadStateDictFile } from './io/checkpoint.js';
export { toFloat32, fromFloat32, type HostTensor } from './io/host-tensor.js';
export { readClamCoords, writeClamCoords, readClamFeatures, writeClamFeatures } from './io/clam.js';

// Whole slides.
export { openSlide, availableSlideBackends, type Slide } from './io/slide.js';
export { segmentTissue } from './wsi/segment.js';
export { tileSlide, tileSlides } from './wsi/tile.js';
export { renderHeatmap } from './wsi/heatmap.js';
export { extractFeatures, listSlides, featurePaths, SLIDE_EXTENSIONS, type ExtractOptions, type ExtractProgress, type ExtractSlideOutcome, type ExtractSummary, type FeatureFormat } from './wsi/extract.js';
export { readPatchScores, type PatchScores } from './wsi/scores.js';
export { openslideSlideBackend } from './io/slide-openslide.js';

// Slide-level models (multiple-instance learning).
export { ABMIL, type AbmilConfig, type MilOutput, type MilForwardOptions } from './mil/abmil.js';
export { TransMIL, type TransmilConfig } from './mil/transmil.js';
export { buildMilModel, trainMil, type MilModel, type MilModelKind, type TrainMilOptions, type TrainMilResult } from './mil/train.js';
export { predictMil, loadMilModel, type PredictMilOptions, type PredictMilResult } from './mil/predict.js';
export { readCohort, readFeatureBag, type Cohort, type Patient, type FeatureBag } from './mil/data.js';
export { nllSurvLoss, survivalFromLogits } from './mil/losses.js';
export * as metrics from './mil/metrics.js';
