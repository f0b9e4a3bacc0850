/**
 * Per-tensor statistics gathered block by block, and the figures reports derive from them (cosine,
 * relative error), with the guarantees users check: a cosine never exceeds 1 in magnitude, and an
 * undefined figure is null, never NaN.
 */
import { addPairStats, emptyPairStats } from '../kernels/cpuMath';
import { PairStats } from '../kernels/kernels';

/** Sums the PairStats of a tensor's blocks. */
export class Accumulator {
  stats: PairStats = emptyPairStats();

  add(s: PairStats): void {
    this.stats = addPairStats(this.stats, s);
  }
}

/** The statistics of n zeros against zeros: what a block whose task vector is zero contributes. */
export function zeroStats(n: number): PairStats {
  return { ...emptyPairStats(), n };
}

/** Cosine of a and b from float64 sums, clamped to [-1, 1]; null when either side is all zeros or not finite. */
export function cosine(s: PairStats): number | null {
  if (s.aSq === 0 || s.bSq === 0 || s.nonFinite > 0) return null;
  const c = s.dot / (Math.sqrt(s.aSq) * Math.sqrt(s.bSq));
  return Math.max(-1, Math.min(1, c));
}

/** ||a - b|| / ||a||, null when a is all zeros. */
export function relFroErr(s: PairStats): number | null {
  if (s.aSq === 0 || s.nonFinite > 0) return null;
  return Math.sqrt(s.diffSq) / Math.sqrt(s.aSq);
}

/** A number for a JSON report: null instead of NaN or an infinity. */
export function finite(x: number): number | null {
  return Number.isFinite(x) ? x : null;
}

/** The statistics of (b, a) from those of (a, b): for a pair whose first side was zeros and computed as (b, zeros). */
export function swapSides(s: PairStats): PairStats {
  return { ...s, aSq: s.bSq, bSq: s.aSq, aNonzero: s.bNonzero, bNonzero: s.aNonzero, maxAbsA: s.maxAbsB, maxAbsB: s.maxAbsA };
}
