/** The report of `compress` (its --json), as the engine writes it and the extension's panels read it. */
import { SourceKind } from '../choices';

export const COMPRESSED_FORMAT = 'lora-lens/compressed-task-vector';

export interface CompressedInputReport {
  name: string;
  kind: SourceKind;
  path: string;
  file: string;
  /** L2 norm of the compressed vector, of the whole task vector over the masked modules, and their ratio. */
  norm: number;
  fullNorm: number;
  normKept: number | null;
  nonzero: number;
  /** Masked modules the input changes at all. */
  modulesTouched: number;
}

export interface CompressReport {
  format: typeof COMPRESSED_FORMAT;
  mask: string;
  base: string;
  modules: string[];
  /** Length of each compressed vector. */
  selected: number;
  order: string;
  /** Where the numerics ran, read after the work so that a GPU's fallback to the CPU shows. */
  device: string;
  inputs: CompressedInputReport[];
}
