/** The report of `decompose` (its --json), as the engine writes it and the extension's panels read it. */
import { DecomposeMethod } from '../choices';
import { SourceKind } from '../choices';
import { boolean, fields, listOf, number, Present, readReport, recordOf, string } from './read';

export type Verdict = 'decomposable' | 'partially decomposable' | 'not decomposable';

export interface DecomposeReport {
  method: DecomposeMethod;
  coefficients: Record<string, number>;
  support: string[];
  relativeResidual: number;
  reconstructionError: number;
  /** cos(target, reconstruction); 0 for an empty reconstruction. */
  cosine: number;
  /** Share of the target's squared norm the reconstruction explains: 1 - relativeResidual^2. */
  explainedEnergy: number;
  verdict: Verdict;
  decomposable: boolean;
  explanation: string;
  target: { name: string; path: string; kind: SourceKind; norm: number };
  /** `t`: the coefficient's t-statistic against the residual (null for a zero coefficient, or an exact fit where it is infinite). */
  dictionary: Array<{ name: string; path: string; kind: SourceKind; norm: number; coefficient: number; share: number; t: number | null; inSupport: boolean }>;
  /**
   * The relative residual the target's own storage rounding alone would leave (estimated from its dtype
   * and values: a model merged at bf16 carries several percent); 0 for an adapter target.
   */
  roundingFloor: number;
  mask: { path: string; modules: number; selected: number };
  /** Where the numerics ran, read after the work so that a GPU's fallback to the CPU shows. */
  device: string;
  parameters: Record<string, number | boolean | string>;
  solver: { iterations: number; converged: boolean; stopReason?: string; steps?: Array<{ atom: string; t: number; relativeResidual: number }> };
  warnings: string[];
  truth?: Record<string, number>;
  precision?: number | null;
  recall?: number | null;
  /** ||c - c_true|| / ||c_true|| over the union of names (missing ones count as 0). */
  coefficientError?: number | null;
  coefficientMaxAbsError?: number;
}

/** A decompose report as its panel reads it (read.ts); method and verdict as any string, shown as they are. */
export const DECOMPOSE_REPORT = fields<DecomposeReport>()({
  method: string,
  coefficients: recordOf(number),
  support: listOf(string),
  relativeResidual: number,
  reconstructionError: number,
  cosine: number,
  explainedEnergy: number,
  verdict: string,
  decomposable: boolean,
  explanation: string,
  dictionary: listOf(fields<DecomposeReport['dictionary'][number]>()({ name: string, share: number })),
  warnings: listOf(string),
  truth: recordOf(number),
  precision: number,
  recall: number,
  coefficientError: number,
});
export type DecomposeView = Present<typeof DECOMPOSE_REPORT>;

export function readDecomposeReport(x: unknown): DecomposeView {
  return readReport(DECOMPOSE_REPORT, x);
}
