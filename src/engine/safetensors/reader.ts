import * as fs from 'node:fs';
import { LensError } from '../errors';
import { isFloatDtype } from '../../shared/safetensors/dtypes';
import { decodeBf16Array, decodeF16Array } from '../../shared/safetensors/half';
import { MAX_READ, readFully } from '../../shared/safetensors/file';
import { TensorInfo } from '../../shared/safetensors/header';
import { openRegularFile } from '../../shared/files';

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
      fd = openRegularFile(file);
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
