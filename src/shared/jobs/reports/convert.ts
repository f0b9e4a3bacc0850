/** The report of `convert` (its --json), as the engine writes it and the extension reads it. */
import { CheckpointKind } from '../choices';
import { fields, number, Present, readReport, string } from './read';

export interface ConvertReport {
  in: string;
  out: string;
  /** What the input was: a single file, a model folder (one file or shards), or a PEFT adapter folder. */
  kind: CheckpointKind;
  /** Files written (relative to `out` for a folder). */
  files: string[];
  tensors: number;
  bytes: number;
  seconds: number;
}

/** `convert` of an adapter that is not a PEFT folder (mlx-lm, AdaLoRA, VeRA, MergedLinear, kohya / LyCORIS / diffusers) to a PEFT adapter folder. */
export interface AdapterConvertReport {
  in: string;
  out: string;
  /** The input's format (mlx-lm, AdaLoRA, VeRA, MergedLinear, kohya, lycoris, diffusers) and the PEFT method written (LORA, LOHA, LOKR). */
  from: string;
  peftType: string;
  modules: number;
  files: string[];
  tensors: number;
  bytes: number;
  seconds: number;
}

/** A convert report as the extension reads it (read.ts): `peftType` and `modules` are null unless an adapter was converted to PEFT. */
export const CONVERT_REPORT = fields<AdapterConvertReport>()({ tensors: number, peftType: string, modules: number });
export type ConvertView = Present<typeof CONVERT_REPORT>;

export function readConvertReport(x: unknown): ConvertView {
  return readReport(CONVERT_REPORT, x);
}
