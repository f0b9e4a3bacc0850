/** Reading a safetensors header from disk (Node only: the webview never imports this). */
import * as fs from 'node:fs';
import { LensError } from '../errors';
import { openRegularFile } from '../files';
import { MAX_HEADER_BYTES, parseHeader, SafetensorsHeader } from './header';

/** fs.read moves at most 2 GiB - 1 per call. */
export const MAX_READ = 1 << 30;

/** Reads and validates the header only, as huggingface/safetensors does; never touches the data. */
export function readHeader(file: string): SafetensorsHeader {
  const fd = openRegularFile(file);
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

export function readFully(fd: number, target: Uint8Array, position: number, file: string): void {
  let done = 0;
  while (done < target.length) {
    const n = fs.readSync(fd, target, done, Math.min(MAX_READ, target.length - done), position + done);
    if (n === 0) throw new LensError(file, `unexpected end of file at byte ${position + done}`);
    done += n;
  }
}
