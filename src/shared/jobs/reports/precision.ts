/** The report of `precision` (its --json), as the engine writes it and the extension's panels read it. */
import { MERGE_RULES, MergeRule } from '../choices';
import { boolean, fields, listOf, number, oneOf, Present, readReport, recordOf, string } from './read';

export type HalfCliDtype = 'fp16' | 'bf16';

/** The report fields, per dtype and rule, and per tensor. */
export interface PrecisionFigures {
  nonzeroTensors: number;
  castArtifactTensors: number;
  castArtifactNorm: number;
  /** Delta elements swallowed / non-zero delta elements, over adapted tensors (null: no delta). */
  deltaLostFraction: number | null;
  /** ||recovered - delta|| / ||delta|| over adapted tensors (null: no delta). */
  recoveredRelErr: number | null;
  adaptedTensors: number;
  deltaElements: number;
  lostElements: number;
  changedElements: number;
  /** Sums of squares of the delta and of the recovered delta's error, kept so that totals can be rebuilt. */
  deltaSq: number;
  recoveredErrSq: number;
  /**
   * Tensors with, and elements that are, NaN or infinite in the base, the delta, or the merge (an fp32
   * value past the half dtype's range): left out of every other figure.
   */
  nonFiniteTensors: number;
  nonFiniteElements: number;
}

export interface PrecisionTensor extends PrecisionFigures {
  name: string;
  dtype: HalfCliDtype;
  rule: MergeRule;
  loraTarget: boolean;
  replaced: boolean;
}

export interface PrecisionDtype extends PrecisionFigures {
  /** The rule these top-level figures are for; `rules` has every rule computed. */
  rule: MergeRule;
  rules: Partial<Record<MergeRule, PrecisionFigures>>;
}

export interface PrecisionReport {
  base: string;
  adapter: string;
  device: string;
  defaultRule: MergeRule;
  rules: MergeRule[];
  dtypes: Partial<Record<HalfCliDtype, PrecisionDtype>>;
  tensors: PrecisionTensor[];
  /** Tensors holding NaN or Inf (base, delta or merge; the worst dtype and rule), with element counts. */
  nonFinite: { name: string; elements: number }[];
  warnings: string[];
  seconds: number;
}

const FIGURES = {
  nonzeroTensors: number,
  castArtifactTensors: number,
  castArtifactNorm: number,
  deltaLostFraction: number,
  recoveredRelErr: number,
  adaptedTensors: number,
  deltaElements: number,
  lostElements: number,
  changedElements: number,
  deltaSq: number,
  recoveredErrSq: number,
  nonFiniteTensors: number,
  nonFiniteElements: number,
} as const;
const RULE = oneOf(MERGE_RULES);

export const PRECISION_FIGURES = fields<PrecisionFigures>()(FIGURES);

/** A precision report as the panels and the extension read it (read.ts). */
export const PRECISION_REPORT = fields<PrecisionReport>()({
  base: string,
  adapter: string,
  device: string,
  defaultRule: RULE,
  rules: listOf(RULE),
  // Each dtype's and tensor's rule and dtype are read as any string: the panel groups by them, so a
  // report of another engine version still draws.
  dtypes: recordOf(fields<PrecisionDtype>()({ ...FIGURES, rule: string, rules: recordOf(PRECISION_FIGURES) })),
  tensors: listOf(fields<PrecisionTensor>()({ ...FIGURES, name: string, dtype: string, rule: string, loraTarget: boolean, replaced: boolean })),
  nonFinite: listOf(fields<PrecisionReport['nonFinite'][number]>()({ name: string, elements: number })),
  warnings: listOf(string),
  seconds: number,
});
export type PrecisionView = Present<typeof PRECISION_REPORT>;

export function readPrecisionReport(x: unknown): PrecisionView {
  return readReport(PRECISION_REPORT, x);
}
