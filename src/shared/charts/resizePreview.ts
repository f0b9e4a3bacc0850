/**
 * What a resize would do, read off a spectrum report before anything is written: per candidate (a rank
 * for every module, or an energy fraction per module), the rank each module gets, the energy it keeps,
 * the relative error of the best approximation at that rank (Eckart–Young: √(Σ_{i>k} σᵢ²) / ‖ΔW‖_F,
 * which resize meets to rounding) and the size of the written fp32 factors. Whatever the source's method,
 * each resized module is an ordinary LoRA of rank k: k·(out + in) parameters, `in` a convolution's in·kh·kw;
 * a LyCORIS `diff_b` is copied as it is, not resized.
 */
import { energyRank } from '../energy';
import { readSpectrumReport } from '../jobs/reports/lowrank';

/** What a preview needs of a spectrum report: each resized module's rank, shape, parameters and singular values, in the report's order. */
export interface ResizeSpectrum {
  modules: Array<{ rank: number; out: number; in: number; params: number; singularValues: number[] }>;
}

/**
 * A spectrum report's modules that resize resizes (not the bias deltas it copies) for a preview; null when
 * one lacks its rank, shape or parameters (not a spectrum report of this engine).
 */
export function resizeSpectrum(report: unknown): ResizeSpectrum | null {
  const modules: ResizeSpectrum['modules'] = [];
  for (const { rank, out, in: n, params, singularValues, biasDiff } of readSpectrumReport(report).modules) {
    if (rank === null || out === null || n === null || params === null) return null;
    if (biasDiff !== true) modules.push({ rank, out, in: n, params, singularValues });
  }
  return { modules };
}

/** A rank for every module, or an energy fraction in (0, 1] per module. */
export type ResizeTarget = { rank: number } | { energy: number };

export interface ResizePreview {
  target: ResizeTarget;
  /** Rank written per resized module, in the report's order. */
  ranks: number[];
  /** The resized modules' parameters in the adapter (its own method's), and after: Σ k·(out + in). */
  fromParams: number;
  params: number;
  /** Bytes of the written factors (fp32), headers aside. */
  bytes: number;
  meanEnergyKept: number;
  maxRelError: number;
  /** Some module's rank goes down (else the resize writes a copy). */
  changes: boolean;
}

/** Rank presets: powers of two up to the largest rank resize takes, the five largest (4 to 64 for a rank-64 adapter). */
export function resizeRanks(max: number): number[] {
  const ranks: number[] = [];
  for (let r = 1; r <= max; r *= 2) ranks.push(r);
  return ranks.slice(-5);
}
export const RESIZE_ENERGIES = [0.9, 0.95, 0.99] as const;

/** The largest --rank resize takes: no module may be asked for more than its singular values. */
export function maxResizeRank(report: ResizeSpectrum): number {
  return Math.min(...report.modules.map((m) => m.singularValues.length));
}

export function resizePreview(report: ResizeSpectrum, target: ResizeTarget): ResizePreview {
  let fromParams = 0;
  let params = 0;
  let kept = 0;
  let maxRelError = 0;
  let changes = false;
  const ranks = report.modules.map((m) => {
    // resize writes at least rank 1, even for a zero delta.
    const k = 'rank' in target ? target.rank : Math.max(1, energyRank(m.singularValues, target.energy));
    const s = m.singularValues;
    let head = 0;
    let tail = 0;
    s.forEach((x, i) => (i < k ? (head += x * x) : (tail += x * x)));
    const total = head + tail;
    kept += total > 0 ? head / total : 1;
    maxRelError = Math.max(maxRelError, total > 0 ? Math.sqrt(tail / total) : 0);
    fromParams += m.params;
    params += k * (m.out + m.in);
    if (k < m.rank) changes = true;
    return k;
  });
  const n = report.modules.length;
  return { target, ranks, fromParams, params, bytes: 4 * params, meanEnergyKept: n ? kept / n : 1, maxRelError, changes };
}

/** The presets worth offering: the rank presets, then the energy presets. */
export function resizePreviews(report: ResizeSpectrum): ResizePreview[] {
  return [
    ...resizeRanks(maxResizeRank(report)).map((rank) => resizePreview(report, { rank })),
    ...RESIZE_ENERGIES.map((energy) => resizePreview(report, { energy })),
  ];
}
