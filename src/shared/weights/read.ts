/**
 * One weights file's tensor index, whatever its format: safetensors, or a PyTorch zip checkpoint read
 * without executing it. Both give TensorInfo byte ranges that every job reads the same way.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LensError } from '../errors';
import { isBarePickle, isZip, PYTORCH_EXTENSIONS, readTorchCheckpoint } from '../pytorch/checkpoint';
import { readHeader } from '../safetensors/file';
import { TensorInfo } from '../safetensors/header';

export type WeightsFormat = 'safetensors' | 'pytorch';

export interface WeightsIndex {
  file: string;
  format: WeightsFormat;
  fileSize: number;
  /** Where the tensor data region starts (8 + header length for safetensors; 0 for a zip, whose entries lie anywhere). */
  dataStart: number;
  metadata: Record<string, string>;
  tensors: TensorInfo[];
}


/** The format of a weights file, from its name and, for other names, its first bytes. */
export function weightsFormat(file: string): WeightsFormat {
  if (PYTORCH_EXTENSIONS.includes(path.extname(file).toLowerCase())) return 'pytorch';
  if (file.endsWith('.safetensors')) return 'safetensors';
  let head = new Uint8Array(0);
  try {
    const fd = fs.openSync(file, 'r');
    try {
      head = new Uint8Array(4);
      head = head.subarray(0, fs.readSync(fd, head, 0, 4, 0));
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    throw new LensError(file, `cannot open: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return isZip(head) || isBarePickle(head) ? 'pytorch' : 'safetensors';
}

/** Reads a weights file's tensor index (never its tensor data). */
export function readWeightsIndex(file: string): WeightsIndex {
  const format = weightsFormat(file);
  if (format === 'pytorch') return { ...readTorchCheckpoint(file), format, dataStart: 0 };
  const h = readHeader(file);
  return { file, format, fileSize: h.fileSize, dataStart: 8 + h.headerBytes, metadata: h.metadata, tensors: h.tensors };
}
