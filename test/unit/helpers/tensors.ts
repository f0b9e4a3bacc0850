import { closeCheckpoint, openCheckpoint } from '../../../src/engine/checkpoint/checkpoint';
import { bytesToF32 } from '../../../src/engine/safetensors/reader';

/** Every tensor of a checkpoint, decoded to fp32 (test checkpoints are tiny). */
export function readAll(dir: string): Map<string, Float32Array> {
  const c = openCheckpoint(dir);
  const m = new Map<string, Float32Array>();
  for (const t of c.tensors) m.set(t.name, bytesToF32(t, c.handles.readBytesSync(t, new Uint8Array(t.byteLength)), new Float32Array(t.numel)).slice());
  closeCheckpoint(c);
  return m;
}

/** The stored bytes of one tensor of a checkpoint, as they are on disk. */
export function storedBytes(dir: string, name: string): Buffer {
  const c = openCheckpoint(dir);
  try {
    const t = c.byName.get(name)!;
    return Buffer.from(c.handles.readBytesSync(t, new Uint8Array(t.byteLength)));
  } finally {
    closeCheckpoint(c);
  }
}

/** a [rows, k] @ b [k, cols], summed in float64 as k runs (the order the engine adds in). */
export function matmul(a: ArrayLike<number>, b: ArrayLike<number>, rows: number, k: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
    let acc = 0;
    for (let t = 0; t < k; t++) acc += a[i * k + t] * b[t * cols + j];
    out[i * cols + j] = acc;
  }
  return out;
}

/** Arrays stacked end to end (row blocks of a fused tensor). */
export function concatF32(parts: ArrayLike<number>[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
