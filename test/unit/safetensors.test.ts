import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { closeCheckpoint, openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { LensError } from '../../src/engine/errors';
import { bytesToF32, FileHandles } from '../../src/engine/safetensors/reader';
import { readHeader } from '../../src/shared/safetensors/file';
import { SafetensorsWriter, ShardedWriter } from '../../src/engine/safetensors/writer';
import { FIXTURES, randomF32, tmpDir } from './helpers/builders';

/** A safetensors file from a header object (serialized as given, unpadded unless `pad`) and data bytes. */
function rawFile(file: string, header: Record<string, unknown> | string, data: Uint8Array, pad = ''): string {
  const json = Buffer.from((typeof header === 'string' ? header : JSON.stringify(header)) + pad, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, data]));
  return file;
}

/** Asserts a LensError naming the file (and the tensor when given) whose detail matches `detail`. */
function rejects(file: string, detail: RegExp, tensor?: string): void {
  assert.throws(
    () => readHeader(file),
    (e: unknown) => {
      assert.ok(e instanceof LensError, `not a LensError: ${e}`);
      assert.equal(e.file, file);
      assert.match(e.detail, detail);
      assert.equal(e.tensor, tensor);
      assert.ok(!e.message.includes('\n'), 'one line');
      return true;
    },
  );
}

const f32 = (name: string, n: number, begin: number): Record<string, unknown> => ({ [name]: { dtype: 'F32', shape: [n], data_offsets: [begin, begin + 4 * n] } });

describe('safetensors reader refuses malformed files with a LensError naming file and tensor', () => {
  const dir = tmpDir();
  const p = (n: string): string => path.join(dir, n);

  it('shorter than the 8-byte length', () => {
    fs.writeFileSync(p('tiny'), Buffer.from([1, 2, 3]));
    rejects(p('tiny'), /truncated: 3 bytes/);
  });
  it('header longer than the file', () => {
    const b = Buffer.alloc(16);
    b.writeBigUInt64LE(100n);
    fs.writeFileSync(p('short-header'), b);
    rejects(p('short-header'), /truncated: header says 100 bytes/);
  });
  it('header length over 100,000,000 bytes', () => {
    const b = Buffer.alloc(16);
    b.writeBigUInt64LE(100_000_001n);
    fs.writeFileSync(p('huge-header'), b);
    rejects(p('huge-header'), /exceeds the limit of 100000000/);
  });
  it('invalid JSON', () => rejects(rawFile(p('bad-json'), '{"a": {"dtype": "F32",', new Uint8Array(0)), /not valid JSON/));
  it('not valid UTF-8', () => {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(3n);
    fs.writeFileSync(p('utf8'), Buffer.concat([len, Buffer.from([0x7b, 0xff, 0x7d])]));
    rejects(p('utf8'), /not valid UTF-8/);
  });
  it('a JSON array, not an object', () => rejects(rawFile(p('array'), '[1, 2]', new Uint8Array(0)), /JSON object/));
  it('an entry that is not an object', () => rejects(rawFile(p('entry'), { w: 3 }, new Uint8Array(0)), /not an object/, 'w'));
  it('data truncated', () => rejects(rawFile(p('data-short'), f32('w', 4, 0), new Uint8Array(12)), /truncated: data needs 16 bytes but only 12/));
  it('trailing bytes after the last tensor', () => rejects(rawFile(p('trailing'), f32('w', 4, 0), new Uint8Array(20)), /4 trailing bytes/));
  it('overlapping tensors', () => rejects(rawFile(p('overlap'), { ...f32('a', 4, 0), ...f32('b', 4, 8) }, new Uint8Array(24)), /overlaps/, 'b'));
  it('a gap between tensors', () => rejects(rawFile(p('gap'), { ...f32('a', 4, 0), ...f32('b', 4, 20) }, new Uint8Array(36)), /gap of 4 bytes/, 'b'));
  it('offsets not starting at 0', () => rejects(rawFile(p('start'), f32('a', 2, 4), new Uint8Array(12)), /gap of 4 bytes/, 'a'));
  it('size mismatch between shape x dtype and offsets', () =>
    rejects(rawFile(p('size'), { w: { dtype: 'F16', shape: [2, 3], data_offsets: [0, 24] } }, new Uint8Array(24)), /size mismatch: shape \[2,3\] of F16 needs 12 bytes, data_offsets give 24/, 'w'));
  it('unknown dtype', () => rejects(rawFile(p('dtype'), { w: { dtype: 'F12', shape: [1], data_offsets: [0, 2] } }, new Uint8Array(2)), /unknown dtype "F12"/, 'w'));
  it('negative or fractional shapes and bad offsets', () => {
    rejects(rawFile(p('shape'), { w: { dtype: 'U8', shape: [-1], data_offsets: [0, 0] } }, new Uint8Array(0)), /not a list of non-negative integers/, 'w');
    rejects(rawFile(p('offsets'), { w: { dtype: 'U8', shape: [1], data_offsets: [1] } }, new Uint8Array(1)), /not a pair/, 'w');
    rejects(rawFile(p('reversed'), { w: { dtype: 'U8', shape: [0], data_offsets: [1, 0] } }, new Uint8Array(1)), /end before they begin/, 'w');
  });
  it('duplicate tensor names', () => {
    const h = '{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}';
    rejects(rawFile(p('dup'), h, new Uint8Array(2)), /duplicate tensor name/, 'w');
  });
  it('__metadata__ values that are not strings', () => {
    rejects(rawFile(p('meta'), { __metadata__: { format: 'pt', step: 3 }, ...f32('w', 1, 0) }, new Uint8Array(4)), /__metadata__ value of 'step' is not a string/);
    rejects(rawFile(p('meta2'), { __metadata__: ['pt'], ...f32('w', 1, 0) }, new Uint8Array(4)), /__metadata__ is not an object/);
  });
  it('a missing file', () => rejects(p('absent'), /cannot open: .*ENOENT/));
});

describe('safetensors reader', () => {
  const dir = tmpDir();

  it('reads tensors at unaligned offsets (a 13-byte header, a 3-byte tensor first) exactly', () => {
    const a = Float32Array.from([1.5, -2.25, 3e-5]);
    const d = Float64Array.from([1 / 3, -1e300]);
    const h = Uint16Array.from([0x3c00, 0xc000, 0x7c00]); // f16 1, -2, +inf
    const b = Uint16Array.from([0x3f80, 0x4049, 0xff80]); // bf16 1, 3.140625, -inf
    const u8 = (x: ArrayBufferView): Uint8Array => new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    const header = {
      i8: { dtype: 'I8', shape: [3], data_offsets: [0, 3] },
      f32: { dtype: 'F32', shape: [3], data_offsets: [3, 15] },
      f64: { dtype: 'F64', shape: [2], data_offsets: [15, 31] },
      f16: { dtype: 'F16', shape: [3], data_offsets: [31, 37] },
      bf16: { dtype: 'BF16', shape: [3], data_offsets: [37, 43] },
    };
    const json = JSON.stringify(header);
    const file = rawFile(path.join(dir, 'unaligned.safetensors'), json, Buffer.concat([Buffer.from([1, 2, 255]), u8(a), u8(d), u8(h), u8(b)]), ' '.repeat((13 - (json.length % 8) + 8) % 8));
    const hdr = readHeader(file);
    assert.equal(hdr.headerBytes % 8, 5);
    const fh = new FileHandles();
    const read = (name: string): number[] => {
      const t = hdr.tensors.find((x) => x.name === name)!;
      // Read into an odd position of a larger buffer: the decoder must not assume alignment either.
      const raw = new Uint8Array(t.byteLength + 1).subarray(1);
      fh.readBytesSync(t, raw);
      return Array.from(bytesToF32(t, raw, new Float32Array(t.numel)));
    };
    assert.deepEqual(read('f32'), Array.from(a));
    assert.deepEqual(read('f64'), Array.from(Float32Array.from(d)));
    assert.deepEqual(read('f16'), [1, -2, Infinity]);
    assert.deepEqual(read('bf16'), [1, 3.140625, -Infinity]);
    const i8 = hdr.tensors[0];
    assert.deepEqual(Array.from(new Int8Array(fh.readBytesSync(i8, new Uint8Array(3)).buffer)), [1, 2, -1]);
    fh.close();
  });

  it('reads a file written by the reference Python library (every dtype, its own padding and order)', async () => {
    const file = path.join(FIXTURES, 'python-safetensors', 'python.safetensors');
    const expected = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'python-safetensors', 'expected.json'), 'utf8')) as Record<string, { dtype: string; shape: number[]; values: Array<number | string> }>;
    const hdr = readHeader(file);
    assert.deepEqual(hdr.metadata, { format: 'pt', written_by: 'safetensors-python' });
    assert.deepEqual(hdr.tensors.map((t) => t.name).sort(), Object.keys(expected).sort());
    const fh = new FileHandles();
    const ints: Record<string, (b: ArrayBuffer) => ArrayLike<number | bigint>> = {
      I64: (b) => new BigInt64Array(b),
      I32: (b) => new Int32Array(b),
      I16: (b) => new Int16Array(b),
      I8: (b) => new Int8Array(b),
      U8: (b) => new Uint8Array(b),
      BOOL: (b) => new Uint8Array(b),
    };
    for (const t of hdr.tensors) {
      const e = expected[t.name];
      assert.deepEqual(t.shape, e.shape, t.name);
      const raw = await fh.readBytes(t, new Uint8Array(t.byteLength));
      const want = e.values.map((v) => (typeof v === 'string' ? (v.startsWith('-') ? -Infinity : Infinity) : v));
      if (ints[t.dtype]) {
        assert.deepEqual(Array.from(ints[t.dtype](raw.slice().buffer), Number), want, t.name);
      } else if (t.dtype === 'F64') {
        assert.deepEqual(Array.from(new Float64Array(raw.slice().buffer)), want, t.name);
      } else {
        assert.deepEqual(Array.from(bytesToF32(t, raw, new Float32Array(t.numel))), want, t.name);
      }
    }
    fh.close();
  });
});

describe('safetensors dtypes', () => {
  it('reads headers of every dtype of the spec, sub-byte ones by their bit width', () => {
    const dir = tmpDir();
    const sizes: Array<[string, number[], number]> = [
      ['F8_E4M3', [3], 3], ['F8_E5M2', [2], 2], ['F8_E8M0', [1], 1], ['U16', [2], 4], ['U32', [1], 4], ['U64', [1], 8], ['C64', [2], 16],
      ['F4', [2, 2], 2], ['F6_E2M3', [4], 3], ['F6_E3M2', [8], 6], ['BOOL', [1], 1],
    ];
    let at = 0;
    const header: Record<string, unknown> = {};
    for (const [dtype, shape, bytes] of sizes) {
      header[dtype] = { dtype, shape, data_offsets: [at, at + bytes] };
      at += bytes;
    }
    const h = readHeader(rawFile(path.join(dir, 'all.safetensors'), header, new Uint8Array(at)));
    assert.deepEqual(h.tensors.map((t) => [t.dtype, t.byteLength]), sizes.map(([d, , b]) => [d, b]));
    const odd = rawFile(path.join(dir, 'odd.safetensors'), { w: { dtype: 'F4', shape: [3], data_offsets: [0, 2] } }, new Uint8Array(2));
    rejects(odd, /3 elements of F4 do not fill whole bytes/, 'w');
  });
});

describe('safetensors writer', () => {
  it('round-trips through the reader: 8-byte padded header, format pt, values exact', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'out.safetensors');
    const a = randomF32(15, 3);
    const w = new SafetensorsWriter(file, [
      { name: 'a', dtype: 'F32', shape: [3, 5] },
      { name: 'flags', dtype: 'BOOL', shape: [3] },
    ]);
    w.write('a', new Uint8Array(a.buffer));
    w.write('flags', Uint8Array.from([1, 0, 1]));
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f === 'out.safetensors'), [], 'nothing at the target before finish()');
    w.finish();
    assert.deepEqual(fs.readdirSync(dir), ['out.safetensors'], 'no temp file left');
    const h = readHeader(file);
    assert.equal(h.headerBytes % 8, 0);
    assert.deepEqual(h.metadata, { format: 'pt' });
    const fh = new FileHandles();
    const t = h.tensors[0];
    assert.deepEqual(bytesToF32(t, fh.readBytesSync(t, new Uint8Array(t.byteLength)), new Float32Array(15)), a);
    fh.close();
  });

  it('abort() leaves nothing; wrong order or size is refused', () => {
    const dir = tmpDir();
    const w = new SafetensorsWriter(path.join(dir, 'x.safetensors'), [{ name: 'a', dtype: 'F32', shape: [2] }]);
    assert.throws(() => w.write('b', new Uint8Array(8)), /'a' was expected/);
    assert.throws(() => w.write('a', new Uint8Array(4)), /header says 8/);
    w.abort();
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it('shards with an index that openCheckpoint follows, every value intact', () => {
    const dir = tmpDir();
    const specs = Array.from({ length: 7 }, (_, i) => ({ name: `layers.${i}.weight`, dtype: 'F32' as const, shape: [10, 10] }));
    const w = new ShardedWriter(dir, specs, 900);
    const values = specs.map((_, i) => randomF32(100, i + 1));
    specs.forEach((s, i) => w.write(s.name, new Uint8Array(values[i].buffer)));
    w.finish();
    assert.equal(w.fileNames.length, 4);
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    assert.equal(index.metadata.total_size, 7 * 400);
    assert.equal(index.weight_map['layers.6.weight'], 'model-00004-of-00004.safetensors');
    const c = openCheckpoint(dir);
    assert.equal(c.kind, 'sharded-model');
    assert.equal(c.files.length, 4);
    c.tensors.forEach((t, i) => {
      assert.equal(t.name, specs[i].name);
      assert.deepEqual(bytesToF32(t, c.handles.readBytesSync(t, new Uint8Array(400)), new Float32Array(100)), values[i]);
    });
    closeCheckpoint(c);
  });
});

describe('sharded index', () => {
  function sharded(weightMap: Record<string, string>): string {
    const dir = tmpDir();
    rawFile(path.join(dir, 'model-00001-of-00001.safetensors'), f32('w', 1, 0), new Uint8Array(4));
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    return dir;
  }
  const refuses = (dir: string, detail: RegExp, tensor: string): void => {
    assert.throws(
      () => openCheckpoint(dir),
      (e: unknown) => e instanceof LensError && detail.test(e.detail) && e.tensor === tensor,
    );
  };

  it('refuses ../ paths, absolute paths and symlinks out of the folder', () => {
    const outside = tmpDir();
    rawFile(path.join(outside, 'evil.safetensors'), f32('x', 1, 0), new Uint8Array(4));
    refuses(sharded({ w: 'model-00001-of-00001.safetensors', x: '../evil.safetensors' }), /outside the folder/, 'x');
    refuses(sharded({ w: 'model-00001-of-00001.safetensors', x: path.join(outside, 'evil.safetensors') }), /outside the folder/, 'x');
    const dir = sharded({ w: 'model-00001-of-00001.safetensors', x: 'link.safetensors' });
    fs.symlinkSync(path.join(outside, 'evil.safetensors'), path.join(dir, 'link.safetensors'));
    refuses(dir, /resolves outside the folder/, 'x');
  });

  it('refuses a missing shard, a tensor missing from its shard, and a tensor in the wrong shard', () => {
    refuses(sharded({ w: 'model-00001-of-00001.safetensors', x: 'nope.safetensors' }), /does not exist/, 'x');
    refuses(sharded({ w: 'model-00001-of-00001.safetensors', y: 'model-00001-of-00001.safetensors' }), /missing from its shard/, 'y');
    const dir = sharded({ w: 'b.safetensors', x: 'model-00001-of-00001.safetensors' });
    rawFile(path.join(dir, 'b.safetensors'), f32('x', 1, 0), new Uint8Array(4));
    refuses(dir, /not listed for this shard/, 'x');
    assert.throws(() => openCheckpoint(sharded({})), /weight_map lists no tensors/);
  });
});
