/**
 * fp16 / bf16 <-> fp32 conversion with round-to-nearest-even, bit-exact with PyTorch's CPU casts
 * (c10::Half and c10::BFloat16): NaN becomes the canonical quiet NaN (fp16 keeps the sign, bf16 does
 * not, as in c10), infinities and signed zeros are kept, values past the largest finite round to inf.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** fp32 bit pattern -> fp16 bit pattern, round to nearest even. */
export function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const a = x & 0x7fffffff;
  if (a >= 0x7f800000) return sign | (a > 0x7f800000 ? 0x7e00 : 0x7c00);
  if (a >= 0x477ff000) return sign | 0x7c00; // >= 65520 rounds up to inf
  if (a >= 0x38800000) {
    // Normal fp16: rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits.
    const b = a - 0x38000000;
    return sign | ((b + 0xfff + ((b >>> 13) & 1)) >>> 13);
  }
  if (a <= 0x33000000) return sign; // at most 2^-25: ties to the even zero
  // Subnormal fp16: the value in units of 2^-24, rounded half to even.
  const e = a >>> 23;
  const m = (a & 0x7fffff) | 0x800000;
  const shift = 126 - e;
  const half = 1 << (shift - 1);
  const rem = m & ((1 << shift) - 1);
  let r = m >>> shift;
  if (rem > half || (rem === half && (r & 1) === 1)) r++;
  return sign | r;
}

/** fp32 bit pattern -> bf16 bit pattern, round to nearest even. */
export function f32BitsToBf16(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  return ((x >>> 0) + 0x7fff + ((x >>> 16) & 1)) >>> 16;
}

/** fp16 bit pattern -> fp32 value (exact). */
export function f16BitsToF32(h: number): number {
  return F16_TABLE[h & 0xffff];
}

/** bf16 bit pattern -> fp32 value (exact). */
export function bf16BitsToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0];
}

function decodeF16(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m === 0 ? sign * Infinity : NaN;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

const F16_TABLE = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) t[h] = decodeF16(h);
  // Keep NaN payloads and signs as the hardware conversion does (fp16 -> fp32 is exact in PyTorch).
  const bits = new Uint32Array(t.buffer);
  for (let h = 0; h < 65536; h++) {
    if (((h >>> 10) & 0x1f) === 31 && (h & 0x3ff) !== 0) bits[h] = ((h & 0x8000) << 16) | 0x7f800000 | ((h & 0x3ff) << 13);
  }
  return t;
})();

/** Round every element of `src` to fp16 (bit patterns into `out`). */
export function encodeF16(src: Float32Array, out: Uint16Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToF16(bits[i]);
  return out;
}

/** Round every element of `src` to bf16 (bit patterns into `out`). */
export function encodeBf16(src: Float32Array, out: Uint16Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) {
    const x = bits[i];
    out[i] = (x & 0x7fffffff) > 0x7f800000 ? 0x7fc0 : (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}

export function decodeF16Array(src: Uint16Array, out: Float32Array): Float32Array {
  for (let i = 0; i < src.length; i++) out[i] = F16_TABLE[src[i]];
  return out;
}

export function decodeBf16Array(src: Uint16Array, out: Float32Array): Float32Array {
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return out;
}

/** Round fp32 values to the given half dtype and back, in place: what storing at that dtype keeps. */
export function roundTripInPlace(dtype: 'F16' | 'BF16', x: Float32Array): Float32Array {
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  if (dtype === 'BF16') {
    for (let i = 0; i < bits.length; i++) {
      const b = bits[i];
      bits[i] = (b & 0x7fffffff) > 0x7f800000 ? 0x7fc00000 : (((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) << 16);
    }
  } else {
    for (let i = 0; i < bits.length; i++) x[i] = F16_TABLE[f32BitsToF16(bits[i])];
  }
  return x;
}
