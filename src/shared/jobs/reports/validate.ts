/** The report of `validate` (its --json), as the engine writes it and the extension's panels read it. */
import { CliDtype } from '../../safetensors/dtypes';
import { MergeRule } from '../choices';
import { ExtractReport } from './extract';
import { CompareSummary } from './compare';
import { PrecisionFigures } from './precision';

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
