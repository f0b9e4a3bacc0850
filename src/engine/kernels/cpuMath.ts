/**
 * The CPU kernels as plain synchronous functions on typed arrays: the reference every backend is
 * checked against, and what the CPU backend's workers run on their slice of a tensor.
 */
import { encodeBf16, encodeF16, f16BitsToF32, f32BitsToBf16, f32BitsToF16 } from '../safetensors/half';
import { HalfDtype, LoraFactors, MergeDtype, MergeRule, PairStats, PrecisionStats } from './kernels';

/** Rows [row0, row1) of delta = scale * B @ A in float64, rounded once to fp32, into `out` (full size). */
export function loraDeltaRows(f: LoraFactors, row0: number, row1: number, out: Float32Array): void {
  const { A, B, r, in: n, out: m, scale, transpose } = f;
  const acc = new Float64Array(n);
  for (let i = row0; i < row1; i++) {
    acc.fill(0);
    const bRow = i * r;
    for (let k = 0; k < r; k++) {
      const b = B[bRow + k];
      if (b === 0) continue;
      const aRow = k * n;
      for (let j = 0; j < n; j++) acc[j] += b * A[aRow + j];
    }
    if (transpose) for (let j = 0; j < n; j++) out[j * m + i] = acc[j] * scale;
    else {
      const o = i * n;
      for (let j = 0; j < n; j++) out[o + j] = acc[j] * scale;
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

/** Elements [i0, i1) of the merged tensor, written into `out` (bytes of the whole tensor at `dtype`). */
export function mergeRange(w: Float32Array, d: Float32Array | null, dtype: MergeDtype, rule: MergeRule, out: Uint8Array, i0: number, i1: number): void {
  if (dtype === 'F32') {
    const o = new Float32Array(out.buffer, out.byteOffset, w.length);
    if (d === null) o.set(w.subarray(i0, i1), i0);
    else for (let i = i0; i < i1; i++) o[i] = w[i] + d[i];
    return;
  }
  const o = new Uint16Array(out.buffer, out.byteOffset, w.length);
  if (d === null) {
    (dtype === 'F16' ? encodeF16 : encodeBf16)(w.subarray(i0, i1), o.subarray(i0, i1));
    return;
  }
  for (let i = i0; i < i1; i++) o[i] = mergeHalfElement(dtype, rule, w[i], d[i]);
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
export function doraNormsRange(w: Float32Array, d: Float32Array, cols: number, featureIsColumn: boolean, dtype: MergeDtype, rule: MergeRule, acc: Float64Array, row0: number, row1: number): void {
  for (let i = row0; i < row1; i++) {
    const o = i * cols;
    let rowSq = 0;
    for (let j = 0; j < cols; j++) {
      const v = mergeOperand(dtype, rule, w[o + j], d[o + j]);
      if (featureIsColumn) acc[j] += v * v;
      else rowSq += v * v;
    }
    if (!featureIsColumn) acc[i] += rowSq;
  }
}

/** Rows [row0, row1) of the DoRA-merged tensor, `f(factor * v)` encoded at `dtype` into `out` (the whole tensor). */
export function mergeDoraRange(w: Float32Array, d: Float32Array, factor: Float32Array, cols: number, featureIsColumn: boolean, dtype: MergeDtype, rule: MergeRule, out: Uint8Array, row0: number, row1: number): void {
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

export function emptyPairStats(): PairStats {
  return { n: 0, dot: 0, aSq: 0, bSq: 0, diffSq: 0, maxAbsDiff: 0, aNonzero: 0, bNonzero: 0, diffNonzero: 0, maxAbsA: 0, maxAbsB: 0, nonFinite: 0 };
}

export function pairStatsRange(a: Float32Array, b: Float32Array | null, i0: number, i1: number): PairStats {
  let dot = 0, aSq = 0, bSq = 0, diffSq = 0, maxAbsDiff = 0, aNz = 0, bNz = 0, dNz = 0, maxA = 0, maxB = 0, bad = 0;
  for (let i = i0; i < i1; i++) {
    const x = a[i];
    const y = b === null ? 0 : b[i];
    if (!Number.isFinite(x) || !Number.isFinite(y)) {
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
  return { n: i1 - i0, dot, aSq, bSq, diffSq, maxAbsDiff, aNonzero: aNz + bad, bNonzero: bNz, diffNonzero: dNz + bad, maxAbsA: maxA, maxAbsB: maxB, nonFinite: bad };
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
  return { n: 0, deltaNonzero: 0, lost: 0, deltaSq: 0, recoveredErrSq: 0, changed: 0, changedSq: 0, castChanged: 0, castSq: 0 };
}

export function precisionRange(w: Float32Array, d: Float32Array | null, dtype: HalfDtype, rule: MergeRule, i0: number, i1: number): PrecisionStats {
  const s = emptyPrecisionStats();
  s.n = i1 - i0;
  for (let i = i0; i < i1; i++) {
    const x = w[i];
    const cast = roundHalf(dtype, x);
    const castErr = cast - x;
    if (castErr !== 0) {
      s.castChanged++;
      s.castSq += castErr * castErr;
    }
    const dd = d === null ? 0 : d[i];
    // With d = 0 every rule gives r(W).
    const merged = dd === 0 ? cast : unhalf(dtype, mergeHalfElement(dtype, rule, x, dd));
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
