/**
 * Seeded pseudo-random tensor values, streamed in chunks and encoded to the tensor's dtype, so that a
 * synthetic checkpoint of any size is written with bounded memory and the same seed gives the same
 * bytes whatever the sharding.
 */
import { Dtype, elementBytes } from '../../shared/safetensors/dtypes';
import { encodeBf16, encodeF16 } from '../../shared/safetensors/half';

/** Elements generated per chunk (4 MiB of fp32). */
export const CHUNK_ELEMENTS = 1 << 20;

/** FNV-1a of a tensor name: each tensor gets its own stream, independent of order and sharding. */
export function nameHash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** `center + spread * u` with u uniform in [-1, 1): the distribution of one synthetic tensor. */
export interface ValueSpec {
  center: number;
  spread: number;
}

/**
 * Calls `sink` with consecutive chunks of a tensor's bytes at `dtype` (F32, F16 or BF16). The chunk
 * buffers are reused: `sink` must consume each before returning.
 */
export function streamValues(numel: number, dtype: Dtype, seed: number, v: ValueSpec, sink: (bytes: Uint8Array) => void): void {
  if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') throw new Error(`synthetic tensors are F32, F16 or BF16, not ${dtype}`);
  const f32 = new Float32Array(Math.min(numel, CHUNK_ELEMENTS));
  const bits = new Uint32Array(f32.buffer);
  const u16 = dtype === 'F32' ? undefined : new Uint16Array(f32.length);
  // xorshift32 kept in int32 arithmetic; its top 23 bits become the mantissa of a float in [1, 2).
  let s = seed | 0 || 0x2545f491;
  const scale = 2 * v.spread;
  const offset = v.center - 3 * v.spread;
  for (let done = 0; done < numel; ) {
    const n = Math.min(f32.length, numel - done);
    const chunk = f32.subarray(0, n);
    for (let i = 0; i < n; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      bits[i] = 0x3f800000 | (s >>> 9);
    }
    // u in [1, 2) -> center + spread * (2u - 3), uniform in [center - spread, center + spread).
    for (let i = 0; i < n; i++) chunk[i] = offset + scale * chunk[i];
    if (u16 === undefined) sink(new Uint8Array(chunk.buffer, 0, n * 4));
    else {
      const h = u16.subarray(0, n);
      if (dtype === 'F16') encodeF16(chunk, h);
      else encodeBf16(chunk, h);
      sink(new Uint8Array(h.buffer, 0, n * elementBytes(dtype)));
    }
    done += n;
  }
}
