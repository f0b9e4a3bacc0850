/**
 * Writes a state dict in torch.save's zip layout without torch, for the benchmarks: `<name>/data.pkl`
 * (protocol 2: an OrderedDict of `_rebuild_tensor_v2` calls on persistent storage ids), one stored
 * `<name>/data/<i>` entry per tensor with its data 64-byte aligned (torch pads the local header's extra
 * field the same way), and zip64 records once offsets pass 4 GiB. Data a tensor does not supply is left
 * as a hole of the file (sparse). CRCs are written as 0: the engine reads entries in place and never
 * checks them.
 */
import * as fs from 'node:fs';
import { Dtype } from '../src/shared/safetensors/dtypes';
import { STORAGE_DTYPES } from '../src/shared/pytorch/checkpoint';

export interface ZipTensor {
  name: string;
  dtype: Dtype;
  shape: number[];
  byteLength: number;
  /** Fills the tensor's bytes (called once, in order); absent: the data stays a hole. */
  write?: (fd: number, position: number) => void;
}

const STORAGE_OF = new Map(Object.entries(STORAGE_DTYPES).filter(([k]) => k !== 'UntypedStorage').map(([k, v]) => [v, k]));
const ELEMENT_BYTES: Partial<Record<Dtype, number>> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

function pickleStateDict(tensors: ZipTensor[]): Buffer {
  const parts: Buffer[] = [Buffer.from([0x80, 2])];
  const op = (...b: number[]): number => parts.push(Buffer.from(b));
  const text = (s: string): number => parts.push(Buffer.from(s, 'utf8'));
  const str = (s: string): void => {
    const b = Buffer.from(s, 'utf8');
    const n = Buffer.alloc(4);
    n.writeUInt32LE(b.length);
    parts.push(Buffer.from([0x58]), n, b);
  };
  const int = (v: number): void => {
    if (v < 2 ** 31) {
      const b = Buffer.alloc(4);
      b.writeInt32LE(v);
      parts.push(Buffer.from([0x4a]), b);
    } else {
      const b = Buffer.alloc(8);
      b.writeBigInt64LE(BigInt(v));
      parts.push(Buffer.from([0x8a, 8]), b);
    }
  };
  const tuple = (xs: number[]): void => {
    op(0x28);
    xs.forEach(int);
    op(0x74);
  };
  const global = (module: string, name: string): void => {
    op(0x63);
    text(`${module}\n${name}\n`);
  };
  global('collections', 'OrderedDict');
  op(0x29, 0x52, 0x28); // () REDUCE, MARK
  tensors.forEach((t, i) => {
    const storage = STORAGE_OF.get(t.dtype);
    if (!storage) throw new Error(`no torch storage for ${t.dtype}`);
    str(t.name);
    global('torch._utils', '_rebuild_tensor_v2');
    op(0x28, 0x28); // MARK (args), MARK (persistent id)
    str('storage');
    global('torch', storage);
    str(String(i));
    str('cpu');
    int(t.byteLength / ELEMENT_BYTES[t.dtype]!);
    op(0x74, 0x51); // TUPLE, BINPERSID
    int(0);
    tuple(t.shape);
    const strides = t.shape.map((_, d) => t.shape.slice(d + 1).reduce((a, b) => a * b, 1));
    tuple(strides);
    op(0x89);
    global('collections', 'OrderedDict');
    op(0x29, 0x52, 0x74, 0x52); // () REDUCE, TUPLE, REDUCE
  });
  op(0x75, 0x2e); // SETITEMS, STOP
  return Buffer.concat(parts);
}

export function writeTorchZip(file: string, tensors: ZipTensor[], archive = 'archive'): void {
  const fd = fs.openSync(file, 'w');
  const central: Buffer[] = [];
  let pos = 0;
  const put = (b: Buffer): void => {
    fs.writeSync(fd, b, 0, b.length, pos);
    pos += b.length;
  };
  const entry = (name: string, size: number, fill: (at: number) => void): void => {
    const nameBytes = Buffer.from(name, 'utf8');
    const offset = pos;
    // Pad the local extra field so that the data starts on a 64-byte boundary.
    const pad = (64 - ((offset + 30 + nameBytes.length + 4) % 64)) % 64;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(45, 4);
    local.writeUInt32LE(size, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(nameBytes.length, 26);
    local.writeUInt16LE(4 + pad, 28);
    const extra = Buffer.alloc(4 + pad);
    extra.writeUInt16LE(0x4246, 0);
    extra.writeUInt16LE(pad, 2);
    put(Buffer.concat([local, nameBytes, extra]));
    fill(pos);
    pos += size;
    const big = offset >= 0xffffffff;
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt16LE(45, 4);
    cd.writeUInt16LE(45, 6);
    cd.writeUInt32LE(size, 20);
    cd.writeUInt32LE(size, 24);
    cd.writeUInt16LE(nameBytes.length, 28);
    cd.writeUInt16LE(big ? 12 : 0, 30);
    cd.writeUInt32LE(big ? 0xffffffff : offset, 42);
    const z64 = Buffer.alloc(big ? 12 : 0);
    if (big) {
      z64.writeUInt16LE(1, 0);
      z64.writeUInt16LE(8, 2);
      z64.writeBigUInt64LE(BigInt(offset), 4);
    }
    central.push(cd, nameBytes, z64);
  };
  try {
    const pkl = pickleStateDict(tensors);
    entry(`${archive}/data.pkl`, pkl.length, (at) => fs.writeSync(fd, pkl, 0, pkl.length, at));
    entry(`${archive}/byteorder`, 6, (at) => fs.writeSync(fd, Buffer.from('little'), 0, 6, at));
    tensors.forEach((t, i) => entry(`${archive}/data/${i}`, t.byteLength, (at) => t.write?.(fd, at)));
    entry(`${archive}/version`, 2, (at) => fs.writeSync(fd, Buffer.from('3\n'), 0, 2, at));
    const cdOffset = pos;
    const cdBytes = Buffer.concat(central);
    put(cdBytes);
    const count = central.length / 3;
    const zip64 = cdOffset >= 0xffffffff;
    if (zip64) {
      const eocd64At = pos;
      const r = Buffer.alloc(56);
      r.writeUInt32LE(0x06064b50, 0);
      r.writeBigUInt64LE(44n, 4);
      r.writeUInt16LE(45, 12);
      r.writeUInt16LE(45, 14);
      r.writeBigUInt64LE(BigInt(count), 24);
      r.writeBigUInt64LE(BigInt(count), 32);
      r.writeBigUInt64LE(BigInt(cdBytes.length), 40);
      r.writeBigUInt64LE(BigInt(cdOffset), 48);
      const loc = Buffer.alloc(20);
      loc.writeUInt32LE(0x07064b50, 0);
      loc.writeBigUInt64LE(BigInt(eocd64At), 8);
      loc.writeUInt32LE(1, 16);
      put(Buffer.concat([r, loc]));
    }
    const e = Buffer.alloc(22);
    e.writeUInt32LE(0x06054b50, 0);
    e.writeUInt16LE(zip64 ? 0xffff : count, 8);
    e.writeUInt16LE(zip64 ? 0xffff : count, 10);
    e.writeUInt32LE(cdBytes.length, 12);
    e.writeUInt32LE(zip64 ? 0xffffffff : cdOffset, 16);
    put(e);
  } finally {
    fs.closeSync(fd);
  }
}
