import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { keep, Linear, memoryStats, ops, releaseCachedMemory, setHostCacheLimit, Tensor, tidy, withoutInit } from '../lib/index.js';
import { readFileBytes, releaseFileBytes } from '../lib/io/files.js';
import { native } from '../lib/native.js';
import { expectAllClose, expectCode, randn } from './helpers.js';

describe('Tensor creation and data', () => {
  it('round-trips values through native memory', () => {
    const t = Tensor.fromArray([1, 2, 3, 4, 5, 6], [2, 3]);
    expect(t.shape).toEqual([2, 3]);
    expect(t.strides).toEqual([3, 1]);
    expect([...t.toFloat32Array()]).toEqual([1, 2, 3, 4, 5, 6]);
    expect(t.toNested()).toEqual([[1, 2, 3], [4, 5, 6]]);
    t.dispose();
  });

  it('handles empty and scalar tensors', () => {
    const e = Tensor.zeros([0, 4]);
    expect(e.size).toBe(0);
    expect(e.toFloat32Array().length).toBe(0);
    const s = Tensor.scalar(2.5);
    expect(s.shape).toEqual([]);
    expect(s.item()).toBe(2.5);
    e.dispose();
    s.dispose();
  });

  it('rejects bad input at the boundary with coded errors', () => {
    expectCode(() => Tensor.fromArray(new Int32Array(4), [4]), 'ERR_DTYPE');
    expectCode(() => Tensor.fromArray(new Float32Array(5), [2, 3]), 'ERR_SHAPE');
    expectCode(() => Tensor.fromArray(new Float32Array(6), [-2, -3]), 'ERR_ARGUMENT');
    expectCode(() => Tensor.fromArray(new Float32Array(6), [1.5, 4]), 'ERR_ARGUMENT');
    expectCode(() => Tensor.fromArray('abc' as unknown as number[], [3]), 'ERR_ARGUMENT');
    expectCode(() => Tensor.fromArray(new Float32Array(4), [2, 2], 'float16'), 'ERR_DTYPE');
    expectCode(() => Tensor.zeros([2, 3]).reshape([4, 2]), 'ERR_SHAPE');
    expectCode(() => Tensor.zeros([2, 3]).permute([0, 0]), 'ERR_SHAPE');
    expectCode(() => Tensor.zeros([2, 3]).transpose(0, 5), 'ERR_SHAPE');
    expectCode(() => ops.add(Tensor.zeros([2, 3]), Tensor.zeros([4])), 'ERR_SHAPE');
    expectCode(() => ops.matmul(Tensor.zeros([2, 3]), Tensor.zeros([4, 2])), 'ERR_SHAPE');
    expectCode(() => ops.add(Tensor.zeros([2]), 3 as unknown as Tensor), 'ERR_ARGUMENT');
  });

  it('a detached buffer is refused, never read', () => {
    const ab = native().alloc(16, true);
    const view = new Float32Array(ab);
    native().free(ab);
    expect(view.length).toBe(0);
    expectCode(() => native().unaryForward(0, view, new Float32Array(4), 4), 'ERR_DETACHED');
    const t = Tensor.fromArray([1, 2]);
    t.dispose();
    expectCode(() => t.toFloat32Array(), 'ERR_DISPOSED');
    expectCode(() => ops.relu(t), 'ERR_DISPOSED');
  });
});

describe('views', () => {
  const base = () => Tensor.fromArray(Float32Array.from({ length: 24 }, (_, i) => i), [2, 3, 4]);

  it('permute/transpose/slice/expand share storage and read correctly', () => {
    tidy(() => {
      const x = base();
      const p = x.permute([2, 0, 1]);
      expect(p.shape).toEqual([4, 2, 3]);
      expect(p.isContiguous()).toBe(false);
      expect(p.storage).toBe(x.storage);
      const ref = [];
      for (let k = 0; k < 4; k++) for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) ref.push(i * 12 + j * 4 + k);
      expect([...p.toFloat32Array()]).toEqual(ref);
      expect([...p.contiguous().toFloat32Array()]).toEqual(ref);
      const s = x.slice(2, 1, 3);
      expect(s.shape).toEqual([2, 3, 2]);
      expect([...s.toFloat32Array()]).toEqual([1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22]);
      const e = Tensor.fromArray([1, 2, 3], [3, 1]).expand([2, 3, 4]);
      expect(e.strides).toEqual([0, 1, 0]);
      expect([...e.toFloat32Array()].slice(0, 8)).toEqual([1, 1, 1, 1, 2, 2, 2, 2]);
      expect(x.reshape([6, -1]).shape).toEqual([6, 4]);
      expect(x.unsqueeze(1).shape).toEqual([2, 1, 3, 4]);
      expect(x.unsqueeze(1).squeeze(1).shape).toEqual([2, 3, 4]);
    });
  });

  it('ops read non-contiguous inputs correctly', () => {
    tidy(() => {
      const a = Tensor.fromArray(randn(12, 1), [3, 4]);
      const at = a.transpose(0, 1); // [4, 3] view
      const r = ops.relu(at).toFloat32Array();
      const ref = at.toFloat32Array().map((v) => Math.max(v, 0));
      expectAllClose(r, ref);
      const b = Tensor.fromArray(randn(12, 2), [4, 3]);
      expectAllClose(ops.add(at, b).toFloat32Array(), at.toFloat32Array().map((v, i) => v + b.toFloat32Array()[i]));
    });
  });
});

describe('dtypes', () => {
  it('float16 and bfloat16 storage convert with round-to-nearest-even', () => {
    tidy(() => {
      const x = Tensor.fromArray([1, 0.1, -2.5, 65504, 1e-8, 70000], [6]);
      const h = x.to('float16');
      expect(h.dtype).toBe('float16');
      expect([...(h.rawData() as Uint16Array)]).toEqual([0x3c00, 0x2e66, 0xc100, 0x7bff, 0x0000, 0x7c00]);
      const back = h.to('float32').toFloat32Array();
      expect(back[0]).toBe(1);
      expect(back[2]).toBe(-2.5);
      const b = x.to('bfloat16');
      expect([...(b.rawData() as Uint16Array)].slice(0, 3)).toEqual([0x3f80, 0x3dcd, 0xc020]);
      expectCode(() => ops.relu(h), 'ERR_DTYPE');
    });
  });
});

describe('deterministic memory', () => {
  it('tidy releases intermediates and keeps what is returned', () => {
    const before = memoryStats().bytesInUse;
    const kept = tidy(() => {
      const a = Tensor.fromArray(randn(1000, 1), [10, 100]);
      const b = ops.relu(a);
      const c = ops.mul(b, b);
      return ops.sum(c, 1);
    });
    expect(memoryStats().bytesInUse).toBe(before + 10 * 4);
    kept.dispose();
    expect(memoryStats().bytesInUse).toBe(before);
  });

  it('views keep storage alive until the last reference is disposed', () => {
    const before = memoryStats().bytesInUse;
    const a = Tensor.zeros([100]);
    const v = a.reshape([10, 10]);
    a.dispose();
    expect(memoryStats().bytesInUse).toBe(before + 400);
    expect(v.toFloat32Array().length).toBe(100);
    v.dispose();
    expect(memoryStats().bytesInUse).toBe(before);
  });

  it('keep() moves a tensor out of the scope; errors inside tidy still release', () => {
    const before = memoryStats().bytesInUse;
    let kept: Tensor | undefined;
    tidy(() => {
      kept = keep(Tensor.zeros([8]));
      Tensor.zeros([8]);
    });
    expect(memoryStats().bytesInUse).toBe(before + 32);
    kept!.dispose();
    expect(() => tidy(() => {
      Tensor.zeros([8]);
      throw new Error('boom');
    })).toThrow('boom');
    expect(memoryStats().bytesInUse).toBe(before);
  });

  it('using disposes at the end of the block', () => {
    const before = memoryStats().bytesInUse;
    {
      using t = Tensor.zeros([16]);
      expect(t.size).toBe(16);
    }
    expect(memoryStats().bytesInUse).toBe(before);
  });
});

describe('large blocks and mapped files', () => {
  it('freed large blocks are cached up to the limit and handed out again, zeroed on request', () => {
    releaseCachedMemory();
    const previous = setHostCacheLimit(64 * 2 ** 20);
    try {
      const before = memoryStats();
      expect(before.cachedBytes).toBe(0);
      const a = Tensor.empty([3 * 2 ** 20]); // 12 MiB: a large block
      a.data().fill(7);
      a.dispose();
      expect(memoryStats().cachedBytes).toBe(12 * 2 ** 20);
      expect(memoryStats().bytesInUse).toBe(before.bytesInUse);
      const b = Tensor.zeros([3 * 2 ** 20 - 100]); // same 2 MiB-rounded size: reuses the block
      expect(memoryStats().cachedBytes).toBe(0);
      expect(b.data().every((v) => v === 0)).toBe(true);
      b.dispose();
      const big = Tensor.empty([20 * 2 ** 20]); // 80 MiB > limit: unmapped on dispose, never cached
      big.dispose();
      expect(memoryStats().cachedBytes).toBe(12 * 2 ** 20);
      expect(Tensor.empty([2 ** 20]).dispose()).toBeUndefined(); // 4 MiB is not "nearly" 12 MiB: fresh
      expect(memoryStats().cachedBytes).toBe(16 * 2 ** 20);
      setHostCacheLimit(5 * 2 ** 20); // trims the largest first
      expect(memoryStats().cachedBytes).toBe(4 * 2 ** 20);
      releaseCachedMemory();
      expect(memoryStats().cachedBytes).toBe(0);
    } finally {
      setHostCacheLimit(previous);
    }
    expect(() => setHostCacheLimit(-1)).toThrow(RangeError);
  });

  it('mapFile maps the whole file copy-on-write; free unmaps and detaches', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mstar-map-'));
    try {
      const path = join(dir, 'bytes.bin');
      const content = new Uint8Array(100_003).map((_, i) => (i * 31) & 255);
      writeFileSync(path, content);
      const mapped = native().mapFile(path);
      const view = new Uint8Array(mapped);
      expect(view).toEqual(content);
      view[0] = 99; // private: the file stays as it was
      expect(readFileBytes(path)[0]).toBe(0);
      native().releasePages(mapped, 0, view.length); // pages given back read back from the file
      expect(view).toEqual(content);
      expectCode(() => native().releasePages(mapped, 10, view.length), 'ERR_RANGE');
      native().free(mapped);
      expect(view.length).toBe(0);
      expectCode(() => native().mapFile(join(dir, 'missing.bin')), 'ERR_NOT_FOUND');
      expectCode(() => native().mapFile(dir), 'ERR_IO');
      writeFileSync(join(dir, 'empty.bin'), new Uint8Array(0));
      expectCode(() => native().mapFile(join(dir, 'empty.bin')), 'ERR_IO');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('readFileBytes maps large files and releaseFileBytes unmaps them', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mstar-map-'));
    try {
      const path = join(dir, 'large.bin');
      const content = new Uint8Array(65 * 2 ** 20);
      content[12345] = 7;
      content[content.length - 1] = 9;
      writeFileSync(path, content);
      const bytes = readFileBytes(path);
      expect(bytes.length).toBe(content.length);
      expect(bytes[12345]).toBe(7);
      expect(bytes[content.length - 1]).toBe(9);
      releaseFileBytes([{ dtype: 'uint8', shape: [bytes.length], data: bytes }]);
      expect(bytes.length).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('withoutInit builds layers at zero without consuming seeds', () => {
    const layer = withoutInit(() => new Linear(4, 3));
    expect(layer.weight.toFloat32Array().every((v) => v === 0)).toBe(true);
    expect(layer.bias!.toFloat32Array().every((v) => v === 0)).toBe(true);
    const random = new Linear(4, 3);
    expect(random.weight.toFloat32Array().some((v) => v !== 0)).toBe(true);
    layer.dispose();
    random.dispose();
  });
});
