import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  findStateDict,
  flattenTensors,
  readTorchCheckpoint,
  readTorchFile,
  torchCheckpointBytes,
  valueAtPath,
  writeTorchCheckpoint,
  TORCH_GLOBALS,
  type CheckpointValue,
} from '../lib/io/torch.js';
import { fromFloat32, fromTypedArray, hostTensor, type HostTensor } from '../lib/io/host-tensor.js';
import { PickleWriter, pickleCallable, unpickle, type PickleValue } from '../lib/io/pickle.js';
import { readZip, zipBytes, type ZipWriteEntry } from '../lib/io/zip.js';
import { expectCode, randn } from './helpers.js';
import { fixturePath, readJson, readSafetensors as readFixtureSafetensors } from './fixtures-util.js';
import {
  expectEveryTruncationFails,
  expectMutationsSafe,
  expectSameTensor,
  expectTensorMatchesFixture,
  toTagged,
} from './io-helpers.js';

const fixtureBytes = (...parts: string[]): Uint8Array => new Uint8Array(readFileSync(fixturePath(...parts)));

/** Every tensor of `actual` matches the fixture safetensors file, and the names are the same. */
function expectMatchesExpected(actual: Map<string, HostTensor>, expectedParts: string[], options: { widened?: boolean; prefix?: string } = {}): void {
  const expected = readFixtureSafetensors(...expectedParts);
  const prefix = options.prefix ?? '';
  const wanted = [...expected.keys()].filter((name) => name.startsWith(prefix));
  expect([...actual.keys()].map((name) => prefix + name).sort()).toEqual(wanted.sort());
  for (const name of wanted) {
    expectTensorMatchesFixture(actual.get(name.slice(prefix.length))!, expected.get(name)!, name, options);
  }
}

describe('reading checkpoints written by torch.save', () => {
  it('vit-tiny: zip and legacy formats give the tensors of the safetensors copy', () => {
    for (const file of ['weights.pth', 'weights_legacy.pth']) {
      expectMatchesExpected(readTorchCheckpoint(fixturePath('vit-tiny', file)), ['vit-tiny', 'weights.safetensors']);
    }
  });

  it('returns zero-copy, 64-byte-aligned views of the file for contiguous tensors', () => {
    const bytes = fixtureBytes('vit-tiny', 'weights.pth');
    const tensors = readTorchCheckpoint(bytes);
    expect(tensors.size).toBe(34);
    for (const [name, tensor] of tensors) {
      expect(tensor.data.buffer, name).toBe(bytes.buffer);
      expect(tensor.data.byteOffset % 64, name).toBe(0);
    }
  });

  it('views_nested: nested dict, transposed view, offset slice, float16, bfloat16, int64, shared storage', () => {
    const bytes = fixtureBytes('vit-tiny', 'views_nested.pth');
    const root = readTorchFile(bytes) as Map<CheckpointValue, CheckpointValue>;
    expect([...root.keys()]).toEqual(['model_state_dict', 'epoch']);
    expect(root.get('epoch')).toBe(3);
    const tensors = readTorchCheckpoint(bytes);
    expect([...tensors.keys()]).toEqual(['w_t', 'w_slice', 'half', 'bf16', 'i64', 'shared_a', 'shared_b']);
    expect(tensors.get('half')!.dtype).toBe('float16');
    expect(tensors.get('bf16')!.dtype).toBe('bfloat16');
    expectMatchesExpected(tensors, ['vit-tiny', 'views_nested_expected.safetensors'], { widened: true });
    // Strided views are materialized copies; contiguous ones stay views of the file.
    expect(tensors.get('w_t')!.data.buffer).not.toBe(bytes.buffer);
    expect(tensors.get('half')!.data.buffer).toBe(bytes.buffer);
    // Dotted names when flattening the whole checkpoint.
    expect([...flattenTensors(root).keys()][0]).toBe('model_state_dict.w_t');
    expect(readTorchCheckpoint(bytes, { stateDictKey: 'model_state_dict' }).size).toBe(7);
    expect(() => readTorchCheckpoint(bytes, { stateDictKey: 'model' })).toThrow(/no "model"/);
  });

  it('legacy files from Pickle.jl: strides, offsets, reshape, slice, bool', () => {
    const expected = readFixtureSafetensors('checkpoints', 'torch_legacy_expected.safetensors');
    for (const file of readdirSync(fixturePath('torch-legacy'))) {
      const stem = file.replace(/\.bin$/, '');
      const tensors = readTorchCheckpoint(fixturePath('torch-legacy', file));
      expect(tensors.size, file).toBeGreaterThan(0);
      expectMatchesExpected(tensors, ['checkpoints', 'torch_legacy_expected.safetensors'], { prefix: `${stem}.` });
      expect(expected.size).toBeGreaterThan(tensors.size);
    }
    const bools = readTorchCheckpoint(fixturePath('torch-legacy', 'bool.bin'));
    expect([...bools.values()].map((t) => t.dtype)).toEqual(['float32', 'bool']);
  });

  it('bert-tiny: HF pytorch_model.bin equals model.safetensors', () => {
    expectMatchesExpected(readTorchCheckpoint(fixturePath('bert-tiny', 'pytorch_model.bin')), ['bert-tiny', 'model.safetensors']);
  });

  it('every dtype and view kind, in zip, legacy and big-endian files', () => {
    for (const file of ['all_dtypes.pth', 'all_dtypes_legacy.pth', 'all_dtypes_legacy_protocol4.pth', 'big_endian.pth']) {
      const tensors = readTorchCheckpoint(fixturePath('checkpoints', file), { verifyCrc: true });
      expectMatchesExpected(tensors, ['checkpoints', 'all_dtypes_expected.safetensors']);
      expect(tensors.get('scalar')!.shape, file).toEqual([]);
      expect(tensors.get('empty')!.shape, file).toEqual([0, 3]);
    }
  });

  it('any archive folder name, legacy storage views, nn.Parameter values', () => {
    expect(readZip(fixtureBytes('checkpoints', 'custom_prefix.pth')).names[0]).toMatch(/^my-model\.v2\//);
    const custom = readTorchCheckpoint(fixturePath('checkpoints', 'custom_prefix.pth'));
    const expected = readFixtureSafetensors('checkpoints', 'all_dtypes_expected.safetensors');
    expectTensorMatchesFixture(custom.get('weight')!, expected.get('f32')!, 'weight');
    expectTensorMatchesFixture(custom.get('bias')!, expected.get('i64')!, 'bias');
    expectMatchesExpected(readTorchCheckpoint(fixturePath('checkpoints', 'legacy_storage_views.pth')), [
      'checkpoints',
      'legacy_storage_views_expected.safetensors',
    ]);
    expectMatchesExpected(readTorchCheckpoint(fixturePath('checkpoints', 'parameters.pth')), ['checkpoints', 'parameters_expected.safetensors']);
  });

  it('nested checkpoints with plain Python values, pickle protocols 2, 4 and 5', () => {
    const expected = readJson<{
      epoch: number;
      meta: unknown;
      protocol5_extra: { mutable_blob: number[] };
      model_state_dict: Record<string, { shape: number[]; values: number[] }>;
    }>('checkpoints', 'nested_expected.json');
    for (const protocol of [2, 4, 5]) {
      const root = readTorchFile(fixturePath('checkpoints', `nested_protocol${protocol}.pth`)) as Map<CheckpointValue, CheckpointValue>;
      expect(root.get('epoch')).toBe(expected.epoch);
      const meta = toTagged(root.get('meta')) as { dict: unknown[][] };
      if (protocol === 5) {
        const extra = meta.dict.pop();
        expect(extra).toEqual(['mutable_blob', { bytes: expected.protocol5_extra.mutable_blob }]);
      }
      expect(meta).toEqual(expected.meta);
      const tensors = readTorchCheckpoint(fixturePath('checkpoints', `nested_protocol${protocol}.pth`));
      for (const [name, { shape, values }] of Object.entries(expected.model_state_dict)) {
        expect(tensors.get(name)!.shape).toEqual(shape);
        expect(Array.from(new Float32Array(tensors.get(name)!.data.slice().buffer))).toEqual(Array.from(Float32Array.from(values)));
      }
    }
  });
});

describe('finding and flattening the state dict', () => {
  const t = (value: number): HostTensor => fromFloat32(Float32Array.of(value), [1]);
  const dict = (entries: Record<string, CheckpointValue>): Map<CheckpointValue, CheckpointValue> => new Map(Object.entries(entries));

  it('picks the root, a well-known key, or the only child holding tensors', () => {
    const weights = dict({ 'a.weight': t(1) });
    expect(findStateDict(weights)).toBe(weights);
    expect(findStateDict(dict({ optimizer: dict({ state: dict({ m: t(2) }) }), state_dict: weights, epoch: 1 }))).toBe(weights);
    expect(findStateDict(dict({ model: dict({ state_dict: weights }) }))).toBe(weights);
    expect(findStateDict(dict({ student: weights, teacher: dict({ b: t(3) }) }))).toEqual(dict({ b: t(3) }));
    expect(findStateDict(dict({ only: weights, step: 3 }))).toBe(weights);
    const ambiguous = dict({ a: weights, b: dict({ c: t(4) }) });
    expect(findStateDict(ambiguous)).toBe(ambiguous);
    expect([...flattenTensors(ambiguous).keys()]).toEqual(['a.a.weight', 'b.c']);
    expect([...flattenTensors(ambiguous, { separator: '/' }).keys()]).toEqual(['a/a.weight', 'b/c']);
    expect(valueAtPath(dict({ model: dict({ ema: weights }) }), 'model.ema')).toBe(weights);
  });

  it('flattens lists by index and keeps a tensor shared under two names', () => {
    const shared = t(5);
    const names = [...flattenTensors(dict({ layers: [shared, dict({ w: shared })] })).keys()];
    expect(names).toEqual(['layers.0', 'layers.1.w']);
  });

  it('refuses cycles, name collisions and exponentially shared containers', () => {
    const cyclic = dict({ w: t(1) });
    cyclic.set('self', cyclic);
    expectCode(() => flattenTensors(cyclic), 'ERR_FORMAT');
    expectCode(() => flattenTensors(dict({ 'a.b': t(1), a: dict({ b: t(2) }) })), 'ERR_FORMAT');
    let level: CheckpointValue = [t(1)];
    for (let i = 0; i < 64; i++) level = [level, level]; // 2^64 paths, 65 containers
    const started = performance.now();
    expectCode(() => flattenTensors(level), 'ERR_FORMAT');
    expect(performance.now() - started).toBeLessThan(2000);
  });
});

describe('writing .pth files', () => {
  const tensors = new Map<string, HostTensor>([
    ['f32', fromFloat32(randn(24, 1), [2, 3, 4])],
    ['f32_4d', fromFloat32(randn(120, 2), [2, 3, 4, 5])],
    ['f16', fromFloat32(randn(6, 3), [6], 'float16')],
    ['bf16', fromFloat32(randn(6, 4), [3, 2], 'bfloat16')],
    ['f64', fromTypedArray(Float64Array.of(Math.PI, -1e300), [2])],
    ['i64', fromTypedArray(BigInt64Array.of(-(2n ** 63n), 2n ** 63n - 1n, 0n), [3])],
    ['i32', fromTypedArray(Int32Array.of(-5, 7), [1, 2])],
    ['i16', fromTypedArray(Int16Array.of(-300), [1])],
    ['i8', fromTypedArray(Int8Array.of(-128, 127), [2])],
    ['u8', fromTypedArray(Uint8Array.of(0, 255, 9), [3])],
    ['bool', fromTypedArray(Uint8Array.of(1, 0), [2], { asBool: true })],
    ['scalar', fromFloat32(Float32Array.of(2.5), [])],
    ['empty', fromFloat32(new Float32Array(0), [0, 3])],
    ['ünïcode.name ✓', fromFloat32(Float32Array.of(1), [1])],
  ]);

  it('round-trips every dtype, shape and name in order', () => {
    const bytes = torchCheckpointBytes(tensors);
    const read = readTorchCheckpoint(bytes, { verifyCrc: true });
    expect([...read.keys()]).toEqual([...tensors.keys()]);
    for (const [name, tensor] of tensors) expectSameTensor(read.get(name), tensor, name);
  });

  it('lays the archive out like torch.save: folder, records, aligned data', () => {
    const archive = readZip(torchCheckpointBytes(tensors, { archiveName: 'weights' }));
    expect(archive.names.slice(0, 4)).toEqual(['weights/data.pkl', 'weights/.format_version', 'weights/.storage_alignment', 'weights/byteorder']);
    expect(archive.names.at(-1)).toBe('weights/version');
    expect(new TextDecoder().decode(archive.read('weights/version'))).toBe('3\n');
    for (const [name, entry] of archive.entries) if (name.includes('/data/')) expect(entry.dataOffset % 64).toBe(0);
    expect(() => torchCheckpointBytes(tensors, { archiveName: 'a/b' })).toThrow(/single folder name/);
  });

  it('re-writes a torch checkpoint byte-for-byte in its tensors', () => {
    const original = readTorchCheckpoint(fixturePath('vit-tiny', 'weights.pth'));
    const again = readTorchCheckpoint(torchCheckpointBytes(original));
    for (const [name, tensor] of original) expectSameTensor(again.get(name), tensor, name);
  });

  it('writes atomically: a temporary file renamed into place, nothing left on error', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mstar-torch-'));
    try {
      const path = join(dir, 'model.pth');
      writeTorchCheckpoint(path, tensors);
      writeTorchCheckpoint(path, { only: tensors.get('f32')! }); // replaces
      expect([...readTorchCheckpoint(path).keys()]).toEqual(['only']);
      const bad = { broken: { dtype: 'float32', shape: [3], data: new Uint8Array(5) } as HostTensor };
      expectCode(() => writeTorchCheckpoint(path, bad), 'ERR_SHAPE');
      expectCode(() => writeTorchCheckpoint(join(dir, 'other.pth'), bad), 'ERR_SHAPE');
      expect(readdirSync(dir)).toEqual(['model.pth']);
      expect([...readTorchCheckpoint(path).keys()]).toEqual(['only']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects malformed tensors with a coded error', () => {
    expectCode(() => torchCheckpointBytes({ x: { dtype: 'complex64', shape: [1], data: new Uint8Array(8) } as unknown as HostTensor }), 'ERR_DTYPE');
    expectCode(() => torchCheckpointBytes({ x: hostTensor('float32', [2], new Uint8Array(8)), y: { dtype: 'float32', shape: [-1], data: new Uint8Array(0) } }), 'ERR_SHAPE');
  });
});

// ---------------------------------------------------------------------------------
// Hostile files

interface CraftOptions {
  storageType?: string;
  pidKind?: string;
  numel?: number | bigint;
  offset?: number;
  shape?: number[];
  stride?: number[];
  records?: Record<string, Uint8Array>;
  byteorder?: string;
}

/** A zip checkpoint holding one tensor `t` whose pickle says exactly what the options say. */
function craftedCheckpoint({
  storageType = 'FloatStorage',
  pidKind = 'storage',
  numel = 4,
  offset = 0,
  shape = [4],
  stride = [1],
  records = { 'data/0': new Uint8Array(16) },
  byteorder = 'little',
}: CraftOptions = {}): Uint8Array {
  const pickle = new PickleWriter().global('collections', 'OrderedDict').emptyTuple().reduce().mark().string('t');
  pickle.global('torch._utils', '_rebuild_tensor_v2').mark();
  pickle.mark().string(pidKind).global('torch', storageType).string('0').string('cpu').int(numel).tuple().binPersId();
  pickle.int(offset).intTuple(shape).intTuple(stride).bool(false).global('collections', 'OrderedDict').emptyTuple().reduce();
  pickle.tuple().reduce().setItems().stop();
  return pickledCheckpoint(pickle.bytes(), { ...records, byteorder: new TextEncoder().encode(byteorder) });
}

function pickledCheckpoint(dataPkl: Uint8Array, records: Record<string, Uint8Array> = {}): Uint8Array {
  const entries: ZipWriteEntry[] = [{ name: 'archive/data.pkl', data: dataPkl }];
  for (const [name, data] of Object.entries(records)) entries.push({ name: `archive/${name}`, data });
  return zipBytes(entries);
}

describe('hostile checkpoints', () => {
  it('refuses a pickle that calls os.system, naming the global', () => {
    const path = fixturePath('checkpoints', 'malicious_os_system.pth');
    expectCode(() => readTorchCheckpoint(path), 'ERR_PICKLE_FORBIDDEN');
    expect(() => readTorchCheckpoint(path)).toThrow(/malicious_os_system\.pth: GLOBAL posix\.system is not allowed/);
    const legacy = fixturePath('checkpoints', 'malicious_legacy_eval.pth');
    expectCode(() => readTorchCheckpoint(legacy), 'ERR_PICKLE_FORBIDDEN');
    expect(() => readTorchCheckpoint(legacy)).toThrow(/GLOBAL builtins\.eval is not allowed/);
  });

  it('refuses globals and persistent ids outside the allowlist', () => {
    expect(() => readTorchFile(craftedCheckpoint({ storageType: 'ComplexFloatStorage' }))).toThrow(/GLOBAL torch\.ComplexFloatStorage is not allowed/);
    expectCode(() => readTorchFile(craftedCheckpoint({ pidKind: 'module' })), 'ERR_PICKLE_FORBIDDEN');
    const torchScript = new PickleWriter().global('__torch__.MyModule', 'forward').stop().bytes();
    expect(() => readTorchFile(pickledCheckpoint(torchScript))).toThrow(/GLOBAL __torch__\.MyModule\.forward is not allowed/);
  });

  it('checks sizes, offsets and strides against the storage', () => {
    expect(readTorchCheckpoint(craftedCheckpoint()).get('t')!.shape).toEqual([4]);
    const formatError = (options: CraftOptions, message: RegExp): void => {
      expectCode(() => readTorchFile(craftedCheckpoint(options)), 'ERR_FORMAT');
      expect(() => readTorchFile(craftedCheckpoint(options))).toThrow(message);
    };
    formatError({ numel: 2n ** 60n }, /numel must be a non-negative integer/);
    formatError({ numel: 2 ** 50 }, /has 16 bytes, its tensors need \d+/);
    formatError({ numel: 5 }, /has 16 bytes, its tensors need 20/);
    formatError({ shape: [2 ** 40, 2 ** 40], stride: [2 ** 40, 1] }, /overflows|reaches past/);
    formatError({ offset: 1 }, /reaches past its storage of 4 elements/);
    formatError({ offset: 2 ** 53 - 1 }, /reaches past/);
    formatError({ shape: [2, 2], stride: [3, 1] }, /reaches past/);
    formatError({ shape: [5], stride: [1] }, /reaches past/);
    formatError({ shape: [4], stride: [-1] }, /non-negative integer/);
    formatError({ shape: [4, 1], stride: [1] }, /dims/);
    formatError({ records: {} }, /no archive\/data\/0 record/);
    formatError({ byteorder: 'middle' }, /byteorder/);
    // A zero-element view may point anywhere; an expanded (stride 0) view is fine inside the storage.
    expect(readTorchCheckpoint(craftedCheckpoint({ shape: [0, 7], stride: [100, 1], offset: 1000 })).get('t')!.shape).toEqual([0, 7]);
    expect(readTorchCheckpoint(craftedCheckpoint({ shape: [3, 4], stride: [0, 1] })).get('t')!.data.byteLength).toBe(48);
    expect(readTorchCheckpoint(craftedCheckpoint({ shape: [5], stride: [0], offset: 3 })).get('t')!.shape).toEqual([5]);
    // A stride-0 view of a 16-byte storage that would expand to 4 TiB is refused before allocating.
    formatError({ shape: [2 ** 20, 2 ** 20], stride: [0, 0] }, /materializing needs 4398046511104 more bytes/);
    formatError({ shape: [2 ** 26, 2 ** 26, 2 ** 26], stride: [0, 0, 0] }, /overflow/);
  });

  it('rejects archives that are not torch checkpoints', () => {
    expectCode(() => readTorchFile(zipBytes([{ name: 'archive/other', data: new Uint8Array(1) }])), 'ERR_FORMAT');
    expectCode(() => readTorchFile(zipBytes([{ name: 'data.pkl', data: new Uint8Array(1) }])), 'ERR_FORMAT');
    expectCode(() => readTorchFile(new Uint8Array(0)), 'ERR_FORMAT');
    expectCode(() => readTorchFile(new TextEncoder().encode('not a checkpoint')), 'ERR_FORMAT');
    const notMagic = new PickleWriter().int(42).stop().bytes();
    expect(() => readTorchFile(notMagic)).toThrow(/magic number/);
  });

  it('checks legacy storage counts and keys', () => {
    const bytes = fixtureBytes('torch-legacy', 'linear_state.bin');
    // Five pickles (magic, protocol, sys info, object, storage keys), then the first storage's int64 count.
    const ends: number[] = [];
    let keys: PickleValue = null;
    const inertGlobals = new Map([...TORCH_GLOBALS.keys()].map((name) => [name, pickleCallable(name, () => null)]));
    for (let i = 0; i < 5; i++) {
      const result = unpickle(bytes, { offset: ends.at(-1) ?? 0, globals: inertGlobals, persistentLoad: () => null });
      ends.push(result.end);
      keys = result.value;
    }
    const countOffset = ends[4];
    const firstKey = (keys as string[])[0];
    const firstCount = new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(countOffset, true);
    expect([typeof firstKey, firstCount]).toEqual(['string', 3n]); // the bias [3] is stored first

    const wrongCount = bytes.slice();
    new DataView(wrongCount.buffer).setBigUint64(countOffset, firstCount + 1n, true);
    expect(() => readTorchFile(wrongCount)).toThrow(/holds 4 elements, its tensors declared 3/);
    const hugeCount = bytes.slice();
    new DataView(hugeCount.buffer).setBigUint64(countOffset, 2n ** 63n, true);
    expectCode(() => readTorchFile(hugeCount), 'ERR_FORMAT');

    // Rename the first key in the key list only: it now names a storage no tensor uses.
    const keyBytes = new TextEncoder().encode(firstKey);
    const keyAt = Buffer.from(bytes.subarray(ends[3], ends[4])).indexOf(Buffer.from(keyBytes)) + ends[3];
    const unknownKey = bytes.slice();
    unknownKey[keyAt] = unknownKey[keyAt] === 0x39 ? 0x38 : unknownKey[keyAt] + 1;
    expect(() => readTorchFile(unknownKey)).toThrow(/lists storage \d+, which no tensor uses/);
  });

  it('fails with a coded error when truncated at every offset', () => {
    expectEveryTruncationFails(fixtureBytes('torch-legacy', 'linear_state.bin'), (bytes) => readTorchFile(bytes));
    expectEveryTruncationFails(fixtureBytes('checkpoints', 'legacy_storage_views.pth'), (bytes) => readTorchFile(bytes));
    expectEveryTruncationFails(fixtureBytes('checkpoints', 'custom_prefix.pth'), (bytes) => readTorchFile(bytes));
    expectEveryTruncationFails(torchCheckpointBytes({ a: fromFloat32(Float32Array.of(1, 2), [2]) }), (bytes) => readTorchFile(bytes));
  });

  it('never throws an uncoded error when any byte is corrupted', () => {
    const read = (bytes: Uint8Array): unknown => readTorchCheckpoint(bytes, { verifyCrc: false });
    for (const file of ['linear_state.bin', 'strides.bin', 'bool.bin']) expectMutationsSafe(fixtureBytes('torch-legacy', file), read);
    expectMutationsSafe(fixtureBytes('checkpoints', 'custom_prefix.pth'), read);
    expectMutationsSafe(fixtureBytes('vit-tiny', 'views_nested.pth'), read, { stride: 3 });
  });

  it('does not recurse on deep nesting and stays linear on shared containers', () => {
    const depth = 100_000;
    const nested = new Uint8Array(2 * depth);
    nested.fill(0x5d, 0, depth);
    nested.fill(0x61, depth, 2 * depth - 1);
    nested[2 * depth - 1] = 0x2e;
    const root = readTorchFile(pickledCheckpoint(nested));
    expect(Array.isArray(root)).toBe(true);
    expect(flattenTensors(root).size).toBe(0);

    // L0 = []; L(k+1) = [Lk, Lk] for 60 levels, through the memo: 2^60 paths, 61 lists.
    const dag: number[] = [0x80, 0x02, 0x5d, 0x71, 0x00]; // [] memo 0
    for (let level = 1; level <= 60; level++) {
      // EMPTY_LIST, MARK, BINGET k−1, BINGET k−1, APPENDS, BINPUT k, POP → leaves the stack as it was
      dag.push(0x5d, 0x28, 0x68, level - 1, 0x68, level - 1, 0x65, 0x71, level, 0x30);
    }
    dag.push(0x68, 60, 0x2e); // BINGET 60, STOP
    const started = performance.now();
    const dagRoot = readTorchFile(pickledCheckpoint(Uint8Array.from(dag)));
    expectCode(() => flattenTensors(dagRoot), 'ERR_FORMAT');
    expect(performance.now() - started).toBeLessThan(2000);
  });
});

describe('the files on disk stay where they are', () => {
  it('reads paths and bytes alike and writes nothing while reading', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mstar-torch-read-'));
    try {
      const path = join(dir, 'copy.pth');
      writeFileSync(path, fixtureBytes('vit-tiny', 'weights.pth'));
      const fromPath = readTorchCheckpoint(path);
      const fromBytes = readTorchCheckpoint(fixtureBytes('vit-tiny', 'weights.pth'));
      for (const [name, tensor] of fromBytes) expectSameTensor(fromPath.get(name), tensor, name);
      expect(readdirSync(dir)).toEqual(['copy.pth']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
