import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAX_HEADER_SIZE, readSafetensors, safetensorsBytes, writeSafetensors } from '../lib/io/safetensors.js';
import { readTorchCheckpoint } from '../lib/io/torch.js';
import { fromFloat32, fromTypedArray, type HostTensor } from '../lib/io/host-tensor.js';
import { expectCode, randn } from './helpers.js';
import { fixturePath, readJson, readSafetensors as readFixtureSafetensors } from './fixtures-util.js';
import { expectEveryTruncationFails, expectMutationsSafe, expectSameTensor, expectTensorMatchesFixture } from './io-helpers.js';

const fixtureBytes = (...parts: string[]): Uint8Array => new Uint8Array(readFileSync(fixturePath(...parts)));

function hex(text: string): Uint8Array {
  return Uint8Array.from((text.match(/../g) ?? []).map((pair) => parseInt(pair, 16)));
}

/** A safetensors file from a header string and data bytes (header length = its UTF-8 length unless given). */
function file(header: string, data: Uint8Array = new Uint8Array(0), headerLength?: bigint): Uint8Array {
  const json = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + json.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(json.byteLength), true);
  out.set(json, 8);
  out.set(data, 8 + json.byteLength);
  return out;
}

function headerText(bytes: Uint8Array): string {
  const length = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return new TextDecoder().decode(bytes.subarray(8, 8 + length));
}

interface ReferenceCase {
  label: string;
  hex: string;
  ok: boolean;
  error?: string;
  tensors?: Array<[string, string, string[]]>;
}

const NAMES: Record<HostTensor['dtype'], string> = {
  float32: 'F32', float16: 'F16', bfloat16: 'BF16', float64: 'F64', int64: 'I64', int32: 'I32', int16: 'I16', int8: 'I8', uint8: 'U8', bool: 'BOOL',
};

describe('safetensors: agreement with the reference implementation', () => {
  const cases = readJson<ReferenceCase[]>('checkpoints', 'safetensors_cases.json');
  /** Files the reference accepts that a HostTensor cannot represent: reported, as ERR_DTYPE / ERR_FORMAT. */
  const unrepresentable: Record<string, string> = {
    'unsupported dtype U16': 'ERR_DTYPE',
    'unsupported dtype F8_E4M3': 'ERR_DTYPE',
    'valid huge dim, zero numel': 'ERR_FORMAT', // a dimension of 2^64 − 1 does not fit a JS number
  };

  for (const reference of cases) {
    it(`${reference.ok ? 'accepts' : 'rejects'}: ${reference.label}`, () => {
      const bytes = hex(reference.hex);
      if (reference.label in unrepresentable) {
        expect(reference.ok).toBe(true);
        expectCode(() => readSafetensors(bytes), unrepresentable[reference.label]);
        return;
      }
      if (!reference.ok) {
        expectCode(() => readSafetensors(bytes), 'ERR_FORMAT');
        return;
      }
      const { tensors } = readSafetensors(bytes);
      const byName = (a: unknown[], b: unknown[]): number => String(a[0]).localeCompare(String(b[0]));
      const ours = [...tensors].map(([name, tensor]) => [name, NAMES[tensor.dtype], tensor.shape.map(String)]);
      expect(ours.sort(byName)).toEqual([...reference.tensors!].sort(byName));
    });
  }

  it('names the failed check like the reference does', () => {
    const messageOf = (label: string): string => {
      try {
        readSafetensors(hex(cases.find((c) => c.label === label)!.hex));
      } catch (error) {
        return (error as Error).message;
      }
      return 'no error';
    };
    expect(messageOf('header too small')).toMatch(/HeaderTooSmall/);
    expect(messageOf('header too large')).toMatch(/HeaderTooLarge/);
    expect(messageOf('header length past end')).toMatch(/InvalidHeaderLength/);
    expect(messageOf('invalid utf-8')).toMatch(/InvalidHeader:/);
    expect(messageOf('unknown dtype')).toMatch(/InvalidHeaderDeserialization.*unknown dtype "F128"/);
    expect(messageOf('gap between')).toMatch(/InvalidOffset: tensor "b"/);
    expect(messageOf('overlap')).toMatch(/InvalidOffset/);
    expect(messageOf('shape product overflow')).toMatch(/ValidationOverflow/);
    expect(messageOf('size mismatch')).toMatch(/TensorInvalidInfo/);
    expect(messageOf('trailing bytes')).toMatch(/MetadataIncompleteBuffer/);
    expect(messageOf('deep nesting')).toMatch(/recursion limit/);
  });
});

describe('safetensors: reading files', () => {
  it('vit-tiny and bert-tiny: the same tensors as their torch checkpoints, as zero-copy views', () => {
    for (const [folder, safetensorsFile, torchFile] of [
      ['vit-tiny', 'weights.safetensors', 'weights.pth'],
      ['bert-tiny', 'model.safetensors', 'pytorch_model.bin'],
    ]) {
      const bytes = fixtureBytes(folder, safetensorsFile);
      const { tensors } = readSafetensors(bytes);
      const fromTorch = readTorchCheckpoint(fixturePath(folder, torchFile));
      expect([...tensors.keys()].sort()).toEqual([...fromTorch.keys()].sort());
      for (const [name, tensor] of tensors) {
        expectSameTensor(tensor, fromTorch.get(name)!, `${folder}/${name}`);
        expect(tensor.data.buffer).toBe(bytes.buffer);
      }
    }
  });

  it('agrees with the independent fixture reader on every dtype', () => {
    const expected = readFixtureSafetensors('checkpoints', 'all_dtypes_expected.safetensors');
    const { tensors, metadata } = readSafetensors(fixturePath('checkpoints', 'all_dtypes_expected.safetensors'));
    expect(Object.keys(metadata)).toEqual([]);
    expect([...tensors.keys()].sort()).toEqual([...expected.keys()].sort());
    for (const [name, tensor] of tensors) expectTensorMatchesFixture(tensor, expected.get(name)!, name);
  });

  it('refuses a header length beyond the cap without allocating it', () => {
    expectCode(() => readSafetensors(file('{}', undefined, 2n ** 63n)), 'ERR_FORMAT');
    expectCode(() => readSafetensors(file('{}', undefined, BigInt(MAX_HEADER_SIZE + 1))), 'ERR_FORMAT');
    // A header of exactly the cap is allowed (then fails only because the file is shorter).
    expect(() => readSafetensors(file('{}', undefined, BigInt(MAX_HEADER_SIZE)))).toThrow(/InvalidHeaderLength/);
  });

  it('fails with ERR_FORMAT when truncated at every offset', () => {
    const bytes = safetensorsBytes(
      { a: fromFloat32(Float32Array.of(1, 2), [2]), b: fromTypedArray(BigInt64Array.of(3n), [1]) },
      { note: 'x' },
    );
    expectEveryTruncationFails(bytes, readSafetensors);
  });

  it('never throws an uncoded error when any byte is corrupted', () => {
    const bytes = safetensorsBytes({ a: fromFloat32(Float32Array.of(1, 2), [2]), b: fromTypedArray(Uint8Array.of(1, 2, 3), [3]) }, { k: 'v' });
    expectMutationsSafe(bytes, readSafetensors);
  });
});

describe('safetensors: writing files', () => {
  it('writes byte-for-byte what the reference writer wrote', () => {
    // (vit-tiny/weights.safetensors keeps state-dict order, so another writer made it; it is read above.)
    for (const parts of [
      ['checkpoints', 'all_dtypes_expected.safetensors'],
      ['checkpoints', 'torch_legacy_expected.safetensors'],
      ['bert-tiny', 'model.safetensors'],
    ]) {
      const original = fixtureBytes(...parts);
      const { tensors, metadata } = readSafetensors(original);
      const hasMetadata = headerText(original).startsWith('{"__metadata__"');
      const rewritten = safetensorsBytes(tensors, hasMetadata ? metadata : undefined);
      expect(Buffer.from(rewritten).equals(Buffer.from(original)), parts.join('/')).toBe(true);
    }
  });

  it('sorts by dtype alignment then name, pads the header with spaces to 8 bytes', () => {
    const bytes = safetensorsBytes({
      b: fromFloat32(Float32Array.of(1), [1]),
      a: fromFloat32(Float32Array.of(2), [1]),
      z: fromTypedArray(BigInt64Array.of(1n), [1]),
      m: fromTypedArray(Uint8Array.of(1), [1], { asBool: true }),
      h: fromFloat32(Float32Array.of(3), [1], 'float16'),
    });
    const header = headerText(bytes);
    expect(new TextEncoder().encode(header).byteLength % 8).toBe(0);
    expect(header.trimEnd()).toBe(
      '{"z":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},' +
        '"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]},"h":{"dtype":"F16","shape":[1],"data_offsets":[16,18]},' +
        '"m":{"dtype":"BOOL","shape":[1],"data_offsets":[18,19]}}',
    );
    expect(/^ *$/.test(header.slice(header.trimEnd().length))).toBe(true);
  });

  it('round-trips every dtype, 0-d and empty tensors, and metadata (keys like __proto__ included)', () => {
    const tensors = new Map<string, HostTensor>([
      ['f32', fromFloat32(randn(12, 5), [3, 4])],
      ['f16', fromFloat32(randn(4, 6), [4], 'float16')],
      ['bf16', fromFloat32(randn(4, 7), [2, 2], 'bfloat16')],
      ['f64', fromTypedArray(Float64Array.of(1 / 3), [1])],
      ['i64', fromTypedArray(BigInt64Array.of(-(2n ** 63n)), [1])],
      ['i32', fromTypedArray(Int32Array.of(-1, 2), [2])],
      ['i16', fromTypedArray(Int16Array.of(7), [1, 1])],
      ['i8', fromTypedArray(Int8Array.of(-7), [1])],
      ['u8', fromTypedArray(Uint8Array.of(200), [1])],
      ['bool', fromTypedArray(Uint8Array.of(1, 0, 1), [3], { asBool: true })],
      ['scalar', fromFloat32(Float32Array.of(4), [])],
      ['empty', fromFloat32(new Float32Array(0), [2, 0])],
      ['name "quoted" \\ ✓ \n', fromFloat32(Float32Array.of(1), [1])],
    ]);
    const metadata = JSON.parse('{"format":"pt","__proto__":"kept","ünïcode":"väl\\u0001ue"}') as Record<string, string>;
    expect(Object.keys(metadata)).toContain('__proto__');
    const { tensors: read, metadata: readMetadata } = readSafetensors(safetensorsBytes(tensors, metadata));
    expect({ ...readMetadata }).toEqual({ ...metadata });
    expect(Object.getPrototypeOf(readMetadata)).toBe(null);
    expect(readMetadata['__proto__']).toBe('kept');
    expect(read.size).toBe(tensors.size);
    for (const [name, tensor] of tensors) expectSameTensor(read.get(name), tensor, name);
  });

  it('writes atomically and leaves nothing behind on error', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mstar-safetensors-'));
    try {
      const path = join(dir, 'out.safetensors');
      writeSafetensors(path, { features: fromFloat32(randn(8, 1), [2, 4]) }, { images: '["a.png","b.png"]' });
      const { tensors, metadata } = readSafetensors(path);
      expect(tensors.get('features')!.shape).toEqual([2, 4]);
      expect(metadata.images).toBe('["a.png","b.png"]');
      expectCode(() => writeSafetensors(path, { bad: { dtype: 'float32', shape: [2], data: new Uint8Array(3) } }), 'ERR_SHAPE');
      expectCode(() => writeSafetensors(path, { __metadata__: fromFloat32(Float32Array.of(1), [1]) }), 'ERR_FORMAT');
      expectCode(() => writeSafetensors(path, { ['\ud800']: fromFloat32(Float32Array.of(1), [1]) }), 'ERR_FORMAT');
      expect(() => writeSafetensors(path, {}, { k: 1 as unknown as string })).toThrow(TypeError);
      expect(readdirSync(dir)).toEqual(['out.safetensors']);
      expect(readSafetensors(path).tensors.get('features')!.shape).toEqual([2, 4]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
