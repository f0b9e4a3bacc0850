/**
 * The safetensors format's pure core: what a valid header is, as huggingface/safetensors decides
 * (`Metadata::validate`). No file access: the engine and the extension's viewer read the bytes.
 */
import { LensError } from '../errors';
import { byteSize, Dtype, isDtype } from './dtypes';

/** The most header bytes huggingface/safetensors accepts. */
export const MAX_HEADER_BYTES = 100_000_000;

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

export function parseHeader(file: string, raw: Uint8Array, fileSize: number): SafetensorsHeader {
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
