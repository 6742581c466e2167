import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import * as zlib from 'node:zlib';
import { crc32, crc32Portable, looksLikeZip, readZip, zipBytes, type ZipWriteEntry } from '../lib/io/zip.js';
import { expectCode, makeRng } from './helpers.js';
import { fixturePath } from './fixtures-util.js';
import { expectEveryTruncationFails, expectMutationsSafe } from './io-helpers.js';

function randomBytes(length: number, seed: number): Uint8Array {
  const rng = makeRng(seed);
  return Uint8Array.from({ length }, () => Math.floor(rng() * 256));
}

const ENTRIES: ZipWriteEntry[] = [
  { name: 'archive/data.pkl', data: randomBytes(100, 1) },
  { name: 'archive/empty', data: new Uint8Array(0) },
  { name: 'archive/data/0', data: randomBytes(1, 2) },
  { name: 'archive/data/1', data: randomBytes(64, 3) },
  { name: 'archive/data/ünïcode ✓', data: randomBytes(1000, 4) },
];

/** Reads every entry of an archive (what a loader would do). */
function readAll(bytes: Uint8Array, verifyCrc = false): Map<string, Uint8Array> {
  const archive = readZip(bytes);
  return new Map(archive.names.map((name) => [name, archive.read(name, { verifyCrc })]));
}

/** Offsets of the fixed records in a small archive written by `zipBytes`, found by signature. */
function findSignature(bytes: Uint8Array, signature: number, from = 0): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = from; i + 4 <= bytes.byteLength; i++) if (view.getUint32(i, true) === signature) return i;
  return -1;
}

describe('crc32', () => {
  it('matches the standard check value and zlib', () => {
    const check = new TextEncoder().encode('123456789');
    expect(crc32(check)).toBe(0xcbf43926);
    expect(crc32Portable(check)).toBe(0xcbf43926);
    expect(crc32Portable(new Uint8Array(0))).toBe(0);
    for (const length of [1, 7, 8, 9, 63, 64, 1000, 4097]) {
      const data = randomBytes(length, length);
      const expected = (zlib as unknown as { crc32?: (d: Uint8Array) => number }).crc32?.(data) ?? crc32(data);
      expect(crc32Portable(data), `length ${length}`).toBe(expected >>> 0);
      expect(crc32(data), `length ${length}`).toBe(expected >>> 0);
      // Continuing from a previous value equals one pass over the concatenation.
      const split = Math.floor(length / 3);
      expect(crc32Portable(data.subarray(split), crc32Portable(data.subarray(0, split)))).toBe(expected >>> 0);
    }
  });
});

describe('zip writer and reader', () => {
  it('round-trips stored entries with 64-byte-aligned data, as zero-copy views', () => {
    const bytes = zipBytes(ENTRIES);
    expect(looksLikeZip(bytes)).toBe(true);
    const archive = readZip(bytes);
    expect(archive.names).toEqual(ENTRIES.map((entry) => entry.name));
    for (const { name, data } of ENTRIES) {
      const entry = archive.entries.get(name)!;
      expect(entry.dataOffset % 64, name).toBe(0);
      expect(entry.crc32).toBe(crc32(data));
      const read = archive.read(name, { verifyCrc: true });
      expect(read).toEqual(data);
      expect(read.buffer).toBe(bytes.buffer);
    }
  });

  it('writes the zip64 records when forced, and reads them back', () => {
    const bytes = zipBytes(ENTRIES, { forceZip64: true });
    expect(findSignature(bytes, 0x06064b50)).toBeGreaterThan(0); // zip64 end record
    expect(findSignature(bytes, 0x07064b50)).toBeGreaterThan(0); // zip64 locator
    const read = readAll(bytes, true);
    for (const { name, data } of ENTRIES) expect(read.get(name)).toEqual(data);
  });

  it('honours other alignments and an empty archive', () => {
    const bytes = zipBytes(ENTRIES, { alignment: 4096 });
    for (const entry of readZip(bytes).entries.values()) expect(entry.dataOffset % 4096).toBe(0);
    expect(readZip(zipBytes([])).names).toEqual([]);
    expect(() => zipBytes([{ name: 'a', data: new Uint8Array(1) }, { name: 'a', data: new Uint8Array(1) }])).toThrow(/duplicate/);
  });

  it('reads archives written by torch.save and by Python zipfile', () => {
    const torchArchive = readZip(readFileSync(fixturePath('vit-tiny', 'weights.pth')));
    expect(torchArchive.names.slice(0, 4)).toEqual(['weights/data.pkl', 'weights/.format_version', 'weights/.storage_alignment', 'weights/byteorder']);
    for (const name of torchArchive.names) {
      torchArchive.read(name, { verifyCrc: true });
      if (name.includes('/data/')) expect(torchArchive.entries.get(name)!.dataOffset % 64).toBe(0);
    }
    // Python's zipfile aligns nothing and writes no padding.
    const pythonArchive = readZip(readFileSync(fixturePath('checkpoints', 'malicious_os_system.pth')));
    expect(new TextDecoder().decode(pythonArchive.read('archive/byteorder', { verifyCrc: true }))).toBe('little');
  });

  it('finds the end record behind an archive comment', () => {
    const bytes = zipBytes(ENTRIES.slice(0, 2));
    const comment = new TextEncoder().encode('a comment with PK\x05\x06 inside');
    const withComment = new Uint8Array(bytes.byteLength + comment.byteLength);
    withComment.set(bytes);
    withComment.set(comment, bytes.byteLength);
    new DataView(withComment.buffer).setUint16(bytes.byteLength - 2, comment.byteLength, true);
    expect(readAll(withComment).get('archive/data.pkl')).toEqual(ENTRIES[0].data);
  });
});

describe('zip reader on hostile input', () => {
  const good = zipBytes(ENTRIES.slice(0, 3));
  const centralDirectory = findSignature(good, 0x02014b50);
  const end = findSignature(good, 0x06054b50, centralDirectory);

  function patched(edit: (view: DataView, bytes: Uint8Array) => void, source = good): Uint8Array {
    const bytes = source.slice();
    edit(new DataView(bytes.buffer), bytes);
    return bytes;
  }

  it('fails with ERR_FORMAT when truncated at every offset', () => {
    expectEveryTruncationFails(good, (bytes) => readAll(bytes));
    expectEveryTruncationFails(zipBytes(ENTRIES.slice(0, 2), { forceZip64: true }), (bytes) => readAll(bytes));
  });

  it('never throws an uncoded error when any byte is corrupted', () => {
    expectMutationsSafe(good, (bytes) => readAll(bytes, true));
    expectMutationsSafe(zipBytes(ENTRIES.slice(0, 2), { forceZip64: true }), (bytes) => readAll(bytes, true));
  });

  it('rejects offsets and sizes past the end', () => {
    expectCode(() => readZip(patched((v) => v.setUint32(end + 16, 0xfffffff0, true))), 'ERR_FORMAT'); // directory offset
    expectCode(() => readZip(patched((v) => v.setUint32(end + 12, 0x7fffffff, true))), 'ERR_FORMAT'); // directory size
    expectCode(() => readZip(patched((v) => v.setUint16(end + 10, 0xfff0, true))), 'ERR_FORMAT'); // entry count
    expectCode(() => readZip(patched((v) => v.setUint32(centralDirectory + 42, good.byteLength, true))), 'ERR_FORMAT'); // local offset
    expectCode(() => readZip(patched((v) => v.setUint32(centralDirectory + 20, 0x7ffffff0, true))), 'ERR_FORMAT'); // entry size
    expectCode(() => readZip(patched((v) => v.setUint16(centralDirectory + 28, 0xffff, true))), 'ERR_FORMAT'); // name length
    expectCode(() => readZip(new Uint8Array(10)), 'ERR_FORMAT');
    expectCode(() => readZip(new Uint8Array(100)), 'ERR_FORMAT');
  });

  it('rejects zip64 values that overflow or point outside the archive', () => {
    const zip64 = zipBytes(ENTRIES.slice(0, 2), { forceZip64: true });
    const locator = findSignature(zip64, 0x07064b50);
    const record = findSignature(zip64, 0x06064b50);
    expectCode(() => readZip(patched((v) => v.setBigUint64(locator + 8, 1n << 62n, true), zip64)), 'ERR_FORMAT');
    expectCode(() => readZip(patched((v) => v.setBigUint64(record + 48, 2n ** 64n - 1n, true), zip64)), 'ERR_FORMAT');
    expectCode(() => readZip(patched((v) => v.setBigUint64(record + 32, 2n ** 40n, true), zip64)), 'ERR_FORMAT');
    const firstCentral = findSignature(zip64, 0x02014b50);
    // The zip64 extra holds 8-byte sizes; make the first one enormous.
    const extraStart = firstCentral + 46 + new DataView(zip64.buffer).getUint16(firstCentral + 28, true);
    expectCode(() => readZip(patched((v) => v.setBigUint64(extraStart + 4, 2n ** 53n, true), zip64)), 'ERR_FORMAT');
  });

  it('rejects duplicate names, mismatched local headers, compressed and encrypted entries', () => {
    const duplicate = zipBytes([ENTRIES[0], { name: 'archive/data.pkM', data: new Uint8Array(1) }]);
    const second = findSignature(duplicate, 0x02014b50, findSignature(duplicate, 0x02014b50) + 4);
    const nameEnd = second + 46 + 'archive/data.pk'.length;
    const renamed = patched((_view, b) => (b[nameEnd] = 'l'.charCodeAt(0)), duplicate);
    expectCode(() => readZip(renamed), 'ERR_FORMAT');
    expect(() => readZip(renamed)).toThrow(/duplicate entry name "archive\/data.pkl"/);

    expect(() => readZip(patched((_view, b) => (b[30] ^= 0x20)))).toThrow(/local header name .* does not match/);

    const deflated = readZip(patched((v) => v.setUint16(centralDirectory + 10, 8, true)));
    expectCode(() => deflated.read('archive/data.pkl'), 'ERR_FORMAT');
    const encrypted = readZip(patched((v) => v.setUint16(centralDirectory + 8, 1, true)));
    expectCode(() => encrypted.read('archive/data.pkl'), 'ERR_FORMAT');
    expectCode(() => readZip(good).read('archive/missing'), 'ERR_FORMAT');
  });

  it('detects corrupted data only when asked to check CRCs', () => {
    const archive = readZip(good);
    const corrupted = patched((_view, b) => (b[archive.entries.get('archive/data.pkl')!.dataOffset] ^= 1));
    expect(() => readZip(corrupted).read('archive/data.pkl')).not.toThrow();
    expectCode(() => readZip(corrupted).read('archive/data.pkl', { verifyCrc: true }), 'ERR_FORMAT');
  });
});
