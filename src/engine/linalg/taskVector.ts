/**
 * The per-element work of extract-lora's read pass, as JavaScript references: the task vector τ = f − w
 * with its squared norm, and the exponent histogram of a half-precision model (its rounding noise).
 * kernels/wasm/linalg.wat's taskvec and hist16 compute the same (test/unit/wasm-linalg.test.ts).
 */

/** out[i] = fp32(f[i] − w[i]) and acc.normSq += out[i]² in ascending i; the index of the first NaN or infinite difference (the sum then stands before it), or -1. */
export function taskVectorRef(w: Float32Array, f: Float32Array, out: Float32Array, acc: { normSq: number }): number {
  let normSq = acc.normSq;
  for (let i = 0; i < out.length; i++) {
    const d = Math.fround(f[i] - w[i]);
    if (!Number.isFinite(d)) {
      acc.normSq = normSq;
      return i;
    }
    out[i] = d;
    normSq += d * d;
  }
  acc.normSq = normSq;
  return -1;
}

/** Counts half-precision values by biased exponent (their ulp), into `hist`. */
export function countExponents(dtype: 'F16' | 'BF16', raw: Uint8Array, hist: Float64Array): void {
  const h = new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2);
  if (dtype === 'BF16') for (let i = 0; i < h.length; i++) hist[(h[i] >> 7) & 0xff]++;
  else for (let i = 0; i < h.length; i++) hist[(h[i] >> 10) & 0x1f]++;
}

/** Σ ulp² / 12 over the counted values: the expected energy of rounding each of them once. */
export function histogramEnergy(dtype: 'F16' | 'BF16', hist: Float64Array): number {
  const [bias, mantissa] = dtype === 'BF16' ? [127, 7] : [15, 10];
  let e = 0;
  hist.forEach((count, exp) => {
    const ulp = Math.pow(2, Math.max(exp, 1) - bias - mantissa);
    e += (count * ulp * ulp) / 12;
  });
  return e;
}
