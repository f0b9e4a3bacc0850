/**
 * The central directory of a zip archive (zip64 included), read from the end of the file: entry names,
 * sizes and where each entry's bytes start. Nothing is inflated: PyTorch stores its entries
 * uncompressed, so a stored entry is a plain byte range of the file, read in place like safetensors data.
 */
import * as fs from 'node:fs';
import { LensError } from '../errors';

export interface ZipEntry {
  name: string;
  /** 0 = stored; anything else is compressed and cannot be read in place. */
  method: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

export interface ZipDirectory {
  file: string;
  fileSize: number;
  entries: Map<string, ZipEntry>;
}

const EOCD = 0x06054b50;
const ZIP64_LOCATOR = 0x07064b50;
const ZIP64_EOCD = 0x06064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;
/** The end record is 22 bytes plus a comment of at most 65535. */
const MAX_TAIL = 22 + 0xffff;
/** Central directories beyond this are not state dicts (a 70B model's holds well under a megabyte). */
const MAX_DIRECTORY = 256 << 20;

export function readBytesAt(fd: number, file: string, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, buf, done, length - done, position + done);
    if (n === 0) throw new LensError(file, `truncated zip: unexpected end of file at byte ${position + done}`);
    done += n;
  }
  return buf;
}

function u64(b: Buffer, at: number, file: string): number {
  const v = b.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new LensError(file, `zip field ${v} is too large`);
  return Number(v);
}

/** Reads the central directory; throws a LensError naming the file for anything that is not a sound zip. */
export function readZipDirectory(fd: number, file: string, fileSize: number): ZipDirectory {
  const tailLength = Math.min(fileSize, MAX_TAIL);
  const tail = readBytesAt(fd, file, fileSize - tailLength, tailLength);
  let e = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === EOCD && i + 22 + tail.readUInt16LE(i + 20) === tail.length) {
      e = i;
      break;
    }
  }
  if (e < 0) throw new LensError(file, 'truncated or damaged zip: no end-of-central-directory record');
  const eocdAt = fileSize - tailLength + e;
  let count = tail.readUInt16LE(e + 10);
  let cdSize = tail.readUInt32LE(e + 12);
  let cdOffset = tail.readUInt32LE(e + 16);
  if (tail.readUInt16LE(e + 4) !== 0 || tail.readUInt16LE(e + 6) !== 0) throw new LensError(file, 'multi-part zip archives are not read');
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    if (eocdAt < 20) throw new LensError(file, 'damaged zip64: no locator before the end record');
    const loc = readBytesAt(fd, file, eocdAt - 20, 20);
    if (loc.readUInt32LE(0) !== ZIP64_LOCATOR) throw new LensError(file, 'damaged zip64: no locator before the end record');
    const at = u64(loc, 8, file);
    if (at + 56 > eocdAt) throw new LensError(file, 'damaged zip64: end record offset out of range');
    const rec = readBytesAt(fd, file, at, 56);
    if (rec.readUInt32LE(0) !== ZIP64_EOCD) throw new LensError(file, 'damaged zip64: bad end record signature');
    count = u64(rec, 32, file);
    cdSize = u64(rec, 40, file);
    cdOffset = u64(rec, 48, file);
  }
  if (cdSize > MAX_DIRECTORY) throw new LensError(file, `zip central directory of ${cdSize} bytes exceeds the limit of ${MAX_DIRECTORY}`);
  if (cdOffset + cdSize > eocdAt) throw new LensError(file, 'truncated or damaged zip: central directory out of range');
  const cd = readBytesAt(fd, file, cdOffset, cdSize);
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== CENTRAL) throw new LensError(file, `damaged zip: central directory entry ${i} is malformed`);
    const flags = cd.readUInt16LE(p + 8);
    const method = cd.readUInt16LE(p + 10);
    let compressedSize = cd.readUInt32LE(p + 20);
    let size = cd.readUInt32LE(p + 24);
    const nameLength = cd.readUInt16LE(p + 28);
    const extraLength = cd.readUInt16LE(p + 30);
    const commentLength = cd.readUInt16LE(p + 32);
    let localHeaderOffset = cd.readUInt32LE(p + 42);
    const end = p + 46 + nameLength + extraLength + commentLength;
    if (end > cd.length) throw new LensError(file, `damaged zip: central directory entry ${i} runs past the directory`);
    const name = cd.toString('utf8', p + 46, p + 46 + nameLength);
    if (flags & 1) throw new LensError(file, `zip entry ${name} is encrypted`);
    // Zip64 extra field: the 8-byte values of whichever 32-bit fields are saturated, in this order.
    const extra = cd.subarray(p + 46 + nameLength, p + 46 + nameLength + extraLength);
    for (let x = 0; x + 4 <= extra.length; ) {
      const id = extra.readUInt16LE(x);
      const len = extra.readUInt16LE(x + 2);
      if (id === 1) {
        let q = x + 4;
        const next = (): number => {
          if (q + 8 > x + 4 + len) throw new LensError(file, `damaged zip64 extra field of entry ${name}`);
          const v = u64(extra, q, file);
          q += 8;
          return v;
        };
        if (size === 0xffffffff) size = next();
        if (compressedSize === 0xffffffff) compressedSize = next();
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = next();
      }
      x += 4 + len;
    }
    if (entries.has(name)) throw new LensError(file, `zip holds entry ${name} twice`);
    entries.set(name, { name, method, compressedSize, size, localHeaderOffset });
    p = end;
  }
  return { file, fileSize, entries };
}

/** Absolute offset of a stored entry's first data byte (the local header's own name and extra lengths count). */
export function entryDataOffset(fd: number, dir: ZipDirectory, entry: ZipEntry): number {
  const { file } = dir;
  if (entry.method !== 0) {
    throw new LensError(file, `zip entry ${entry.name} is compressed (method ${entry.method}); PyTorch stores entries uncompressed and LoRA Lens reads them in place, so re-save the checkpoint with torch.save`);
  }
  if (entry.size !== entry.compressedSize) throw new LensError(file, `zip entry ${entry.name} is stored but its sizes differ`);
  if (entry.localHeaderOffset + 30 > dir.fileSize) throw new LensError(file, `truncated zip: local header of ${entry.name} is past the end`);
  const h = readBytesAt(fd, file, entry.localHeaderOffset, 30);
  if (h.readUInt32LE(0) !== LOCAL) throw new LensError(file, `damaged zip: bad local header for ${entry.name}`);
  const start = entry.localHeaderOffset + 30 + h.readUInt16LE(26) + h.readUInt16LE(28);
  if (start + entry.size > dir.fileSize) throw new LensError(file, `truncated zip: entry ${entry.name} needs ${entry.size} bytes at ${start}, the file has ${dir.fileSize}`);
  return start;
}
