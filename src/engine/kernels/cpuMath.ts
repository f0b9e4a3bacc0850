/**
 * The CPU kernels as plain synchronous functions on typed arrays: the reference every backend is
 * checked against, and what the CPU backend's workers run on their slice of a tensor.
 */
import { encodeBf16, encodeF16, f16BitsToF32, f32BitsToBf16, f32BitsToF16, roundTripInPlace } from '../../shared/safetensors/half';
import { FloatDtype } from '../../shared/safetensors/dtypes';
import { DoraOperand, HalfDtype, LoraFactors, MergeDtype, PairStats, PrecisionStats } from './kernels';
import { MergeRule } from '../../shared/jobs/choices';

/**
 * Rows [row0, row1) of delta = f(f(B @ A) * f(scale)) into `out` (full size): B @ A summed in float64 and
 * rounded once to fp32, then times the fp32 scale, rounded again. That is PyTorch's (and so PEFT's)
 * `(B @ A) * scaling`: an fp32 tensor times a Python float multiplies by the float rounded to fp32, and
 * B @ A is the fp32 matrix (exactly so wherever torch's fp32 sum is exact; see test/unit/torch-scale).
 * The product of two fp32 values is exact in float64, so the Float32Array store is the fp32 multiply.
 */
export function loraDeltaRows(f: LoraFactors, row0: number, row1: number, out: Float32Array): void {
  const { A, B, r, in: n, out: m, transpose } = f;
  const scale = Math.fround(f.scale);
  const acc = new Float64Array(n);
  const ks = new Int32Array(r);
  for (let i = row0; i < row1; i++) {
    // A zero factor adds nothing (acc starts at +0 and never becomes -0): skip it, as a sparse B needs.
    let nk = 0;
    for (let k = 0; k < r; k++) if (B[i * r + k] !== 0) ks[nk++] = k;
    acc.fill(0);
    // Four terms per pass, added left to right as one at a time would: the same float64 sums, a quarter of the passes over acc.
    let g = 0;
    for (; g + 4 <= nk; g += 4) {
      const k0 = ks[g], k1 = ks[g + 1], k2 = ks[g + 2], k3 = ks[g + 3];
      const b0 = B[i * r + k0], b1 = B[i * r + k1], b2 = B[i * r + k2], b3 = B[i * r + k3];
      const a0 = k0 * n, a1 = k1 * n, a2 = k2 * n, a3 = k3 * n;
      for (let j = 0; j < n; j++) acc[j] = acc[j] + b0 * A[a0 + j] + b1 * A[a1 + j] + b2 * A[a2 + j] + b3 * A[a3 + j];
    }
    for (; g < nk; g++) {
      const b = B[i * r + ks[g]];
      const a = ks[g] * n;
      for (let j = 0; j < n; j++) acc[j] += b * A[a + j];
    }
    if (transpose) for (let j = 0; j < n; j++) out[j * m + i] = Math.fround(acc[j]) * scale;
    else {
      const o = i * n;
      for (let j = 0; j < n; j++) out[o + j] = Math.fround(acc[j]) * scale;
    }
  }
}

const f32tmp = new Float32Array(1);
const u32tmp = new Uint32Array(f32tmp.buffer);

/** Bits of x rounded to the half dtype. */
function half(dtype: HalfDtype, x: number): number {
  f32tmp[0] = x;
  return dtype === 'F16' ? f32BitsToF16(u32tmp[0]) : f32BitsToBf16(u32tmp[0]);
}

/** Value of half bits as fp32. */
function unhalf(dtype: HalfDtype, h: number): number {
  if (dtype === 'F16') return f16BitsToF32(h);
  u32tmp[0] = h << 16;
  return f32tmp[0];
}

/** x rounded to the half dtype and back. */
export function roundHalf(dtype: HalfDtype, x: number): number {
  return unhalf(dtype, half(dtype, x));
}

/** The merged value of one element under a rule, as half bits. */
export function mergeHalfElement(dtype: HalfDtype, rule: MergeRule, w: number, d: number): number {
  switch (rule) {
    case 'peft':
      return half(dtype, Math.fround(roundHalf(dtype, w) + d));
    case 'peft-safe':
      return half(dtype, Math.fround(roundHalf(dtype, w) + roundHalf(dtype, d)));
    case 'fp32-cast':
      return half(dtype, Math.fround(w + d));
  }
}

/** Elements per pass of the chunked merge: its operands stay in the L1 cache between passes. */
const MERGE_CHUNK = 2048;

/** Elements [i0, i1) of the merged tensor, written into `out` (bytes of the whole tensor at `dtype`). */
export function mergeRange(w: Float32Array, d: Float32Array | null, dtype: MergeDtype, rule: MergeRule, out: Uint8Array, i0: number, i1: number): void {
  if (dtype === 'F32') {
    const o = new Float32Array(out.buffer, out.byteOffset, w.length);
    if (d === null) o.set(w.subarray(i0, i1), i0);
    else for (let i = i0; i < i1; i++) o[i] = w[i] + d[i];
    return;
  }
  const o = new Uint16Array(out.buffer, out.byteOffset, w.length);
  const encode = dtype === 'F16' ? encodeF16 : encodeBf16;
  if (d === null) {
    encode(w.subarray(i0, i1), o.subarray(i0, i1));
    return;
  }
  // mergeHalfElement over typed arrays, a chunk at a time: t = W or r(W), then t = f(t + d or r(d)) (a
  // Float32Array store rounds like Math.fround), then r(t).
  const t = new Float32Array(MERGE_CHUNK);
  const u = rule === 'peft-safe' ? new Float32Array(MERGE_CHUNK) : undefined;
  for (let c = i0; c < i1; c += MERGE_CHUNK) {
    const len = Math.min(MERGE_CHUNK, i1 - c);
    const tc = len === MERGE_CHUNK ? t : t.subarray(0, len);
    tc.set(w.subarray(c, c + len));
    if (rule !== 'fp32-cast') roundTripInPlace(dtype, tc);
    if (u) {
      const uc = len === MERGE_CHUNK ? u : u.subarray(0, len);
      uc.set(d.subarray(c, c + len));
      roundTripInPlace(dtype, uc);
      for (let k = 0; k < len; k++) tc[k] = tc[k] + uc[k];
    } else for (let k = 0; k < len; k++) tc[k] = tc[k] + d[c + k];
    encode(tc, o.subarray(c, c + len));
  }
}

/**
 * The fp32 value `v = W + d` that DoRA normalises and scales: f(W + d) at F32 and under `fp32-cast`,
 * else f(r(W) + d). `peft-safe` keeps d in fp32 here because PEFT's safe DoRA merge does.
 */
export function mergeOperand(dtype: MergeDtype, rule: MergeRule, w: number, d: number): number {
  if (dtype === 'F32' || rule === 'fp32-cast') return Math.fround(w + d);
  return Math.fround(roundHalf(dtype, w) + d);
}

/** Adds the squares of `v` (see mergeOperand) for rows [row0, row1) into `acc`, per row or per column (float64). */
export function doraNormsRange(v: DoraOperand, acc: Float64Array, row0: number, row1: number): void {
  const { w, d, cols, featureIsColumn, dtype, rule } = v;
  for (let i = row0; i < row1; i++) {
    const o = i * cols;
    let rowSq = 0;
    for (let j = 0; j < cols; j++) {
      const x = mergeOperand(dtype, rule, w[o + j], d[o + j]);
      if (featureIsColumn) acc[j] += x * x;
      else rowSq += x * x;
    }
    if (!featureIsColumn) acc[i] += rowSq;
  }
}

/** Rows [row0, row1) of the DoRA-merged tensor, `f(factor * v)` encoded at `dtype` into `out` (the whole tensor). */
export function mergeDoraRange(v: DoraOperand, factor: Float32Array, out: Uint8Array, row0: number, row1: number): void {
  const { w, d, cols, featureIsColumn, dtype, rule } = v;
  const f32 = dtype === 'F32' ? new Float32Array(out.buffer, out.byteOffset, w.length) : undefined;
  const h = dtype === 'F32' ? undefined : new Uint16Array(out.buffer, out.byteOffset, w.length);
  for (let i = row0; i < row1; i++) {
    const o = i * cols;
    for (let j = 0; j < cols; j++) {
      const x = Math.fround(factor[featureIsColumn ? j : i] * mergeOperand(dtype, rule, w[o + j], d[o + j]));
      if (f32) f32[o + j] = x;
      else h![o + j] = half(dtype as HalfDtype, x);
    }
  }
}

/** Per 32-bit word: the exponent field of each lane, the bias that carries an all-ones field into the lane's top bit, and those top bits. */
const NON_FINITE_LANES = {
  BF16: [0x7f807f80, 0x00800080, 0x80008000],
  F16: [0x7c007c00, 0x04000400, 0x80008000],
  F32: [0x7f800000, 0x00800000, 0x80000000],
} as const;

/**
 * Whether raw float bytes (F64, F32, F16, BF16) hold only finite values, from the exponent bits alone
 * (no decode): a lane is NaN or infinite exactly when its exponent field is all ones.
 */
export function allFinite(dtype: FloatDtype, raw: Uint8Array): boolean {
  if (raw.byteOffset % 4 !== 0) return false;
  const words = new Uint32Array(raw.buffer, raw.byteOffset, raw.byteLength >>> 2);
  if (dtype === 'F64') {
    for (let i = 1; i < words.length; i += 2) if ((words[i] & 0x7ff00000) === 0x7ff00000) return false;
    return true;
  }
  const [mask, bias, top] = NON_FINITE_LANES[dtype];
  let seen = 0;
  for (let i = 0; i < words.length; i++) seen |= (words[i] & mask) + bias;
  // An odd count of 16-bit values leaves one in the low half of a last, partial word.
  if (raw.byteLength % 4 === 2) seen |= ((raw[raw.byteLength - 2] | (raw[raw.byteLength - 1] << 8)) & mask) + bias;
  return (seen & top) === 0;
}

/** Whether every byte is zero (for float data: every value is +0). */
export function allZeroBytes(raw: Uint8Array): boolean {
  const head = raw.byteOffset % 4 === 0 ? raw.byteLength >>> 2 : 0;
  const words = new Uint32Array(raw.buffer, raw.byteOffset, head);
  let seen = 0;
  for (let i = 0; i < words.length; i++) seen |= words[i];
  for (let i = head * 4; i < raw.byteLength; i++) seen |= raw[i];
  return seen === 0;
}

export function emptyPairStats(): PairStats {
  return { n: 0, dot: 0, aSq: 0, bSq: 0, diffSq: 0, maxAbsDiff: 0, aNonzero: 0, bNonzero: 0, diffNonzero: 0, maxAbsA: 0, maxAbsB: 0, nonFinite: 0 };
}

export function pairStatsRange(a: Float32Array, b: Float32Array | null, i0: number, i1: number): PairStats {
  if (b === null) return againstZeros(a, i0, i1);
  let dot = 0, aSq = 0, bSq = 0, diffSq = 0, maxAbsDiff = 0, aNz = 0, bNz = 0, dNz = 0, maxA = 0, maxB = 0, bad = 0;
  for (let i = i0; i < i1; i++) {
    const x = a[i];
    const y = b[i];
    // x - x is NaN exactly when x is NaN or infinite.
    if (x - x + (y - y) !== 0) {
      bad++;
      continue;
    }
    const diff = x - y;
    dot += x * y;
    aSq += x * x;
    bSq += y * y;
    diffSq += diff * diff;
    const ad = Math.abs(diff);
    if (ad > maxAbsDiff) maxAbsDiff = ad;
    if (x !== 0) aNz++;
    if (y !== 0) bNz++;
    if (diff !== 0) dNz++;
    const ax = Math.abs(x);
    const ay = Math.abs(y);
    if (ax > maxA) maxA = ax;
    if (ay > maxB) maxB = ay;
  }
  return {
    n: i1 - i0,
    dot,
    aSq,
    bSq,
    diffSq,
    maxAbsDiff,
    aNonzero: aNz + bad,
    bNonzero: bNz,
    diffNonzero: dNz + bad,
    maxAbsA: maxA,
    maxAbsB: maxB,
    nonFinite: bad,
  };
}

/**
 * pairStatsRange(a, zeros): with y = 0 every sum of b is +0 (a float64 sum that starts at +0 and adds
 * only zeros), diff = x - 0 = x, so the difference's figures are those of a.
 */
function againstZeros(a: Float32Array, i0: number, i1: number): PairStats {
  let aSq = 0, aNz = 0, maxA = 0, bad = 0;
  for (let i = i0; i < i1; i++) {
    const x = a[i];
    if (x - x !== 0) {
      bad++;
      continue;
    }
    aSq += x * x;
    if (x !== 0) aNz++;
    const ax = Math.abs(x);
    if (ax > maxA) maxA = ax;
  }
  return {
    n: i1 - i0,
    dot: 0,
    aSq,
    bSq: 0,
    diffSq: aSq,
    maxAbsDiff: maxA,
    aNonzero: aNz + bad,
    bNonzero: 0,
    diffNonzero: aNz + bad,
    maxAbsA: maxA,
    maxAbsB: 0,
    nonFinite: bad,
  };
}

export function addPairStats(s: PairStats, t: PairStats): PairStats {
  return {
    n: s.n + t.n,
    dot: s.dot + t.dot,
    aSq: s.aSq + t.aSq,
    bSq: s.bSq + t.bSq,
    diffSq: s.diffSq + t.diffSq,
    maxAbsDiff: Math.max(s.maxAbsDiff, t.maxAbsDiff),
    aNonzero: s.aNonzero + t.aNonzero,
    bNonzero: s.bNonzero + t.bNonzero,
    diffNonzero: s.diffNonzero + t.diffNonzero,
    maxAbsA: Math.max(s.maxAbsA, t.maxAbsA),
    maxAbsB: Math.max(s.maxAbsB, t.maxAbsB),
    nonFinite: s.nonFinite + t.nonFinite,
  };
}

export function emptyPrecisionStats(): PrecisionStats {
  return { n: 0, deltaNonzero: 0, lost: 0, deltaSq: 0, recoveredErrSq: 0, changed: 0, changedSq: 0, castChanged: 0, castSq: 0, nonFinite: 0 };
}

export function precisionRange(w: Float32Array, d: Float32Array | null, dtype: HalfDtype, rule: MergeRule, i0: number, i1: number): PrecisionStats {
  const s = emptyPrecisionStats();
  s.n = i1 - i0;
  for (let i = i0; i < i1; i++) {
    const x = w[i];
    const cast = roundHalf(dtype, x);
    const dd = d === null ? 0 : d[i];
    // With d = 0 every rule gives r(W).
    const merged = dd === 0 ? cast : unhalf(dtype, mergeHalfElement(dtype, rule, x, dd));
    // v - v is NaN exactly when v is NaN or infinite: such an element has no cast error or loss to measure.
    if (x - x + (dd - dd) + (cast - cast) + (merged - merged) !== 0) {
      s.nonFinite++;
      continue;
    }
    const castErr = cast - x;
    if (castErr !== 0) {
      s.castChanged++;
      s.castSq += castErr * castErr;
    }
    const change = merged - x;
    if (change !== 0) {
      s.changed++;
      s.changedSq += change * change;
    }
    if (dd !== 0) {
      s.deltaNonzero++;
      s.deltaSq += dd * dd;
      const recovered = Math.fround(merged - cast);
      if (recovered === 0) s.lost++;
      const e = recovered - dd;
      s.recoveredErrSq += e * e;
    }
  }
  return s;
}

export function addPrecisionStats(s: PrecisionStats, t: PrecisionStats): PrecisionStats {
  const r = { ...s };
  for (const k of Object.keys(t) as (keyof PrecisionStats)[]) r[k] += t[k];
  return r;
}

export function subtractRange(a: Float32Array, b: Float32Array, out: Float32Array, i0: number, i1: number): void {
  for (let i = i0; i < i1; i++) out[i] = a[i] - b[i];
}

export function maxAbsRange(acc: Float32Array, x: Float32Array, i0: number, i1: number): void {
  for (let i = i0; i < i1; i++) {
    const v = Math.abs(x[i]);
    if (v > acc[i]) acc[i] = v;
  }
}
