/** The report of `merge` (its --json), as the engine writes it and the extension's panels read it. */
import { CliDtype } from '../../safetensors/dtypes';
import { MergeRule } from '../choices';

export interface MergeReport {
  base: string;
  adapter: string;
  out: string;
  dtype: CliDtype;
  rule: MergeRule;
  device: string;
  files: string[];
  tensors: number;
  /** Tensors that took a LoRA delta (of which DoRA), were replaced, added, re-encoded, or copied byte for byte. */
  loraTensors: number;
  doraTensors: number;
  replacedTensors: number;
  addedTensors: number;
  castTensors: number;
  copiedTensors: number;
  bytesRead: number;
  bytesWritten: number;
  seconds: number;
  warnings: string[];
}
