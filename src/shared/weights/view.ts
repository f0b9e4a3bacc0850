/**
 * What the weights viewer (`.safetensors`, PyTorch `.bin` / `.pt` / `.pth`) shows, as plain data the
 * extension sends to the webview: the tensor index without tensor data, or why the file cannot be read.
 */
import { WeightsFormat, WeightsIndex } from './read';

export interface WeightsTensorView {
  name: string;
  dtype: string;
  shape: number[];
  numel: number;
  byteLength: number;
  /** Offset of the first byte: from the start of the data region (safetensors), in the file (PyTorch). */
  begin: number;
}

export interface WeightsView {
  file: string;
  /** The validated index, or null when the file cannot be read (then `error` says why). */
  index: {
    format: WeightsFormat;
    fileSize: number;
    /** The JSON header's length in bytes (safetensors; 0 for PyTorch). */
    headerBytes: number;
    metadata: Record<string, string>;
    tensors: WeightsTensorView[];
  } | null;
  error?: string;
}

export function weightsView(file: string, index: WeightsIndex): WeightsView {
  return {
    file,
    index: {
      format: index.format,
      fileSize: index.fileSize,
      headerBytes: index.format === 'safetensors' ? index.dataStart - 8 : 0,
      metadata: index.metadata,
      tensors: index.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, numel: t.numel, byteLength: t.byteLength, begin: t.offset - index.dataStart })),
    },
  };
}

export function unreadableWeightsView(file: string, error: string): WeightsView {
  return { file, index: null, error };
}

const isNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

function parseTensor(x: unknown): WeightsTensorView | null {
  if (!isObj(x)) return null;
  const { name, dtype, shape, numel, byteLength, begin } = x;
  if (typeof name !== 'string' || typeof dtype !== 'string' || !Array.isArray(shape) || !shape.every(isNum)) return null;
  if (!isNum(numel) || !isNum(byteLength) || !isNum(begin)) return null;
  return { name, dtype, shape, numel, byteLength, begin };
}

/** A view received as `unknown` (a message, a restored state), checked once; null when malformed. */
export function parseWeightsView(raw: unknown): WeightsView | null {
  if (!isObj(raw) || typeof raw.file !== 'string') return null;
  if (raw.index === null) return typeof raw.error === 'string' ? unreadableWeightsView(raw.file, raw.error) : null;
  const i = raw.index;
  if (!isObj(i) || (i.format !== 'safetensors' && i.format !== 'pytorch') || !isNum(i.fileSize) || !isNum(i.headerBytes)) return null;
  if (!isObj(i.metadata) || !Object.values(i.metadata).every((v) => typeof v === 'string') || !Array.isArray(i.tensors)) return null;
  const tensors = i.tensors.map(parseTensor);
  if (tensors.some((t) => t === null)) return null;
  return {
    file: raw.file,
    index: { format: i.format, fileSize: i.fileSize, headerBytes: i.headerBytes, metadata: i.metadata as Record<string, string>, tensors: tensors as WeightsTensorView[] },
  };
}
