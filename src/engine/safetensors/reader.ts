import * as fs from 'node:fs';
import { LensError } from '../errors';
import { byteSize, Dtype, isDtype, isFloatDtype } from './dtypes';
import { decodeBf16Array, decodeF16Array } from './half';

/** The most header bytes huggingface/safetensors accepts. */
export const MAX_HEADER_BYTES = 100_000_000;
/** fs.read moves at most 2 GiB - 1 per call. */
const MAX_READ = 1 << 30;

export interface TensorInfo {
  name: string;
  dtype: Dtype;
  shape: number[];
  numel: number;
  /** Absolute offset of the first data byte in `file`. */
  offset: number;
  byteLength: number;
  /** The safetensors file that holds the data. */
  file: string;
}

export interface SafetensorsHeader {
  file: string;
  fileSize: number;
  headerBytes: number;
  metadata: Record<string, string>;
  /** Tensors in header (insertion) order. */
  tensors: TensorInfo[];
}

/** Reads and validates the header only, as huggingface/safetensors does; never touches the data. */
export function readHeader(file: string): SafetensorsHeader {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new LensError(file, `cannot open: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    const fileSize = fs.fstatSync(fd).size;
    if (fileSize < 8) throw new LensError(file, `truncated: ${fileSize} bytes, not even the 8-byte header length`);
    const len8 = Buffer.alloc(8);
    readFully(fd, len8, 0, file);
    const n = len8.readBigUInt64LE(0);
    if (n > BigInt(MAX_HEADER_BYTES)) throw new LensError(file, `header length ${n} exceeds the limit of ${MAX_HEADER_BYTES} bytes`);
    const headerBytes = Number(n);
    if (8 + headerBytes > fileSize) {
      throw new LensError(file, `truncated: header says ${headerBytes} bytes but the file has ${fileSize - 8} after the length`);
    }
    const raw = Buffer.alloc(headerBytes);
    readFully(fd, raw, 8, file);
    return parseHeader(file, raw, fileSize);
  } finally {
    fs.closeSync(fd);
  }
}

export function parseHeader(file: string, raw: Buffer, fileSize: number): SafetensorsHeader {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    throw new LensError(file, 'header is not valid UTF-8');
  }
  if (!text.startsWith('{')) throw new LensError(file, 'header does not start with a JSON object');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new LensError(file, `header is not valid JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new LensError(file, 'header is not a JSON object');
  const dup = firstDuplicateKey(text);
  if (dup !== undefined) throw new LensError(file, 'duplicate tensor name in header', dup);

  const dataStart = 8 + raw.length;
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      // The reference library reads `"__metadata__": null` (mlx-lm writes it) as no metadata.
      if (entry === null) continue;
      if (typeof entry !== 'object' || Array.isArray(entry)) throw new LensError(file, '__metadata__ is not an object');
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string') throw new LensError(file, `__metadata__ value of '${k}' is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    tensors.push(parseEntry(file, name, entry, dataStart));
  }

  // Offsets must tile the data region exactly: contiguous from 0, no gaps, no overlaps, to end of file.
  const sorted = [...tensors].sort((a, b) => a.offset - b.offset || a.byteLength - b.byteLength);
  let expected = dataStart;
  for (const t of sorted) {
    if (t.offset !== expected) {
      const what = t.offset < expected ? 'overlaps the previous tensor' : `leaves a gap of ${t.offset - expected} bytes before it`;
      throw new LensError(file, `data_offsets ${what}`, t.name);
    }
    expected = t.offset + t.byteLength;
  }
  if (expected !== fileSize) {
    const what = expected > fileSize ? `truncated: data needs ${expected - dataStart} bytes but only ${fileSize - dataStart} follow the header` : `${fileSize - expected} trailing bytes after the last tensor`;
    throw new LensError(file, what);
  }
  return { file, fileSize, headerBytes: raw.length, metadata, tensors };
}

function parseEntry(file: string, name: string, entry: unknown, dataStart: number): TensorInfo {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw new LensError(file, 'header entry is not an object', name);
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
  if (typeof dtype !== 'string' || !isDtype(dtype)) throw new LensError(file, `unknown dtype ${JSON.stringify(dtype)}`, name);
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new LensError(file, `shape ${JSON.stringify(shape)} is not a list of non-negative integers`, name);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    throw new LensError(file, `data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`, name);
  }
  const [begin, end] = offsets as number[];
  if (end < begin) throw new LensError(file, `data_offsets [${begin}, ${end}] end before they begin`, name);
  const numel = (shape as number[]).reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(numel)) throw new LensError(file, `shape ${JSON.stringify(shape)} is too large`, name);
  const bytes = byteSize(dtype, numel);
  if (bytes === undefined) throw new LensError(file, `${numel} elements of ${dtype} do not fill whole bytes`, name);
  if (bytes !== end - begin) {
    throw new LensError(file, `size mismatch: shape ${JSON.stringify(shape)} of ${dtype} needs ${bytes} bytes, data_offsets give ${end - begin}`, name);
  }
  return { name, dtype, shape: shape as number[], numel, offset: dataStart + begin, byteLength: end - begin, file };
}

/** JSON.parse keeps the last of duplicate keys silently; safetensors refuses them. Scans top-level keys. */
function firstDuplicateKey(text: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = depth === 1 && c === '{';
    } else if (c === '}' || c === ']') {
      depth--;
    } else if (c === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return undefined;
}

function readFully(fd: number, target: Uint8Array, position: number, file: string): void {
  let done = 0;
  while (done < target.length) {
    const n = fs.readSync(fd, target, done, Math.min(MAX_READ, target.length - done), position + done);
    if (n === 0) throw new LensError(file, `unexpected end of file at byte ${position + done}`);
    done += n;
  }
}

function readFullyAsync(fd: number, target: Uint8Array, position: number, file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let done = 0;
    const step = (): void => {
      if (done === target.length) return resolve();
      fs.read(fd, target, done, Math.min(MAX_READ, target.length - done), position + done, (err, n) => {
        if (err) return reject(new LensError(file, `read failed: ${err.message}`));
        if (n === 0) return reject(new LensError(file, `unexpected end of file at byte ${position + done}`));
        done += n;
        step();
      });
    };
    step();
  });
}

/**
 * Open file descriptors by path, shared by every tensor of a checkpoint (one per shard), closed together.
 */
export class FileHandles {
  private readonly fds = new Map<string, number>();

  fd(file: string): number {
    let fd = this.fds.get(file);
    if (fd === undefined) {
      try {
        fd = fs.openSync(file, 'r');
      } catch (e) {
        throw new LensError(file, `cannot open: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      this.fds.set(file, fd);
    }
    return fd;
  }

  /** Reads a tensor's raw bytes into `target` (which must be exactly `byteLength` long). */
  readBytesSync(t: TensorInfo, target: Uint8Array): Uint8Array {
    readFully(this.fd(t.file), target, t.offset, t.file);
    return target;
  }

  async readBytes(t: TensorInfo, target: Uint8Array): Promise<Uint8Array> {
    await readFullyAsync(this.fd(t.file), target, t.offset, t.file);
    return target;
  }

  close(): void {
    for (const fd of this.fds.values()) fs.closeSync(fd);
    this.fds.clear();
  }
}

/**
 * Reused, aligned, already-touched memory: reading into fresh allocations runs at half the speed of
 * reading into reused ones. Each slot grows to the largest request it has served. `shared` puts the
 * slots in SharedArrayBuffers, which the CPU backend's worker threads read and write in place.
 */
export class Scratch {
  private readonly slots = new Map<string, ArrayBuffer | SharedArrayBuffer>();

  constructor(private readonly shared = false) {}

  bytes(slot: string, n: number): Uint8Array {
    let buf = this.slots.get(slot);
    if (buf === undefined || buf.byteLength < n) {
      const size = Math.max(n, Math.ceil((buf?.byteLength ?? 0) * 1.25), 64);
      buf = this.shared ? new SharedArrayBuffer(size) : new ArrayBuffer(size);
      this.slots.set(slot, buf);
    }
    return new Uint8Array(buf, 0, n);
  }

  f32(slot: string, n: number): Float32Array {
    const b = this.bytes(slot, n * 4);
    return new Float32Array(b.buffer, 0, n);
  }

  f64(slot: string, n: number): Float64Array {
    const b = this.bytes(slot, n * 8);
    return new Float64Array(b.buffer, 0, n);
  }
}

/**
 * Decodes raw tensor bytes of a float dtype into fp32. F32 is returned as a view (no copy) when `raw`
 * is 4-aligned; otherwise values are written to `out`.
 */
export function bytesToF32(t: TensorInfo, raw: Uint8Array, out: Float32Array): Float32Array {
  const n = t.numel;
  switch (t.dtype) {
    case 'F32':
      if (raw.byteOffset % 4 === 0) return new Float32Array(raw.buffer, raw.byteOffset, n);
      new Uint8Array(out.buffer, out.byteOffset, n * 4).set(raw);
      return out;
    case 'F16':
    case 'BF16': {
      const h = raw.byteOffset % 2 === 0 ? new Uint16Array(raw.buffer, raw.byteOffset, n) : new Uint16Array(raw.slice().buffer);
      return t.dtype === 'F16' ? decodeF16Array(h, out) : decodeBf16Array(h, out);
    }
    case 'F64': {
      const d = raw.byteOffset % 8 === 0 ? new Float64Array(raw.buffer, raw.byteOffset, n) : new Float64Array(raw.slice().buffer);
      for (let i = 0; i < n; i++) out[i] = d[i];
      return out;
    }
    default:
      throw new LensError(t.file, `dtype ${t.dtype} is not a floating-point type the engine computes with`, t.name);
  }
}

export function assertFloat(t: TensorInfo): void {
  if (!isFloatDtype(t.dtype)) throw new LensError(t.file, `dtype ${t.dtype} is not a floating-point type (F64, F32, F16, BF16)`, t.name);
}
