/** The report of `validate` (its --json), as the engine writes it and the extension's panels read it. */
import { CliDtype } from '../../safetensors/dtypes';
import { MergeRule } from '../choices';
import { EXTRACT_SUMMARY, ExtractReport } from './extract';
import { COMPARE_SUMMARY, CompareSummary } from './compare';
import { PRECISION_FIGURES, PrecisionFigures } from './precision';
import { boolean, fields, listOf, number, Present, readReport, string } from './read';

export interface ValidateDtype {
  dtype: CliDtype;
  /** PASS (fp32: equivalent), EXPECTED-LOSS (half: the loss is exactly what precision predicts), or FAIL. */
  status: 'PASS' | 'EXPECTED-LOSS' | 'FAIL';
  verdict: string;
  folder: string;
  merge: { tensors: number; loraTensors: number; files: string[]; seconds: number };
  extract: ExtractReport['summary'];
  compare: CompareSummary;
  precision: PrecisionFigures | null;
}

export interface ValidateReport {
  base: string;
  adapter: string;
  rule: MergeRule;
  device: string;
  tolerance: number;
  dtypes: ValidateDtype[];
  ok: boolean;
  verdict: string;
  /** Whether each dtype's folder still holds `merged/` and `task_vector.safetensors`. */
  keptModels: boolean;
  warnings: string[];
  seconds: number;
}

/** A validate report as the panels and the extension read it (read.ts). */
export const VALIDATE_REPORT = fields<ValidateReport>()({
  base: string,
  adapter: string,
  // Rule and status are read as any string: those of another engine version are shown as they are.
  rule: string,
  device: string,
  tolerance: number,
  dtypes: listOf(
    fields<ValidateDtype>()({
      dtype: string,
      status: string,
      verdict: string,
      folder: string,
      merge: fields<ValidateDtype['merge']>()({ tensors: number, loraTensors: number, files: listOf(string), seconds: number }),
      extract: EXTRACT_SUMMARY,
      compare: COMPARE_SUMMARY,
      precision: PRECISION_FIGURES,
    }),
  ),
  ok: boolean,
  verdict: string,
  keptModels: boolean,
  warnings: listOf(string),
  seconds: number,
});
export type ValidateView = Present<typeof VALIDATE_REPORT>;

export function readValidateReport(x: unknown): ValidateView {
  return readReport(VALIDATE_REPORT, x);
}
