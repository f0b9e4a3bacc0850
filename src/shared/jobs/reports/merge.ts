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
  /** Merged tensors holding NaN or Inf (from the base, the adapter, or an overflow), with element counts. */
  nonFinite: NonFinite[];
  warnings: string[];
}

/** A tensor where NaN or Inf were met, and how many of its elements. */
export interface NonFinite {
  name: string;
  elements: number;
}
