/** The report of `mask` (its --json), as the engine writes it and the extension's panels read it. */
import { fields, listOf, number, Present, readReport, recordOf, string } from './read';

export const MASK_FORMAT = 'lora-lens/unmerge-mask';

export interface MaskModule {
  /** The base weight's name (also the mask tensor's). */
  name: string;
  shape: number[];
  numel: number;
  /** Elements kept: min(k, numel). */
  selected: number;
  layer: number | null;
  projection: string;
  /** The smallest kept aggregated magnitude max_a |delta_a|. */
  threshold: number;
  /** Dictionary adapters that target this module. */
  adapters: string[];
}

export interface MaskAdapter {
  name: string;
  path: string;
  /** Modules it targets. */
  modules: number;
  /** Frobenius norm of its delta over all its modules, and of the masked part. */
  norm: number;
  keptNorm: number;
}

export interface MaskJson {
  format: typeof MASK_FORMAT;
  version: 1;
  base: string;
  budget: number;
  /** Number of modules; k = floor(budget / modules). */
  modules: number;
  k: number;
  /** Elements kept in all (sum of min(k, numel) over modules). */
  selected: number;
  /** Elements of the masked modules in all. */
  elements: number;
  perProjection: Record<string, number>;
  perLayer: Record<string, number>;
  /** Per adapter, keptNorm / norm (null for an all-zero adapter). */
  normPreservation: Record<string, number | null>;
  /** Per adapter, (keptNorm / norm)^2: the share of its squared norm (energy) kept. */
  energyPreservation: Record<string, number | null>;
  normPreservationDefinition: string;
  /** Where the numerics ran ("CPU, 2 worker threads", a GPU adapter, or a GPU with its CPU fallback). */
  device?: string;
  adapters: MaskAdapter[];
  order: string;
  perModule: MaskModule[];
}

/**
 * A mask report as its panel reads it (read.ts). The fractions keep a null entry under its adapter's
 * name (an all-zero adapter has no fraction), and so do the counts per projection.
 */
export const MASK_REPORT = fields<MaskJson>()({
  budget: number,
  modules: number,
  k: number,
  selected: number,
  elements: number,
  perProjection: recordOf(number, { keepNull: true }),
  normPreservation: recordOf(number, { keepNull: true }),
  energyPreservation: recordOf(number, { keepNull: true }),
  perModule: listOf(fields<MaskModule>()({ name: string, layer: number, projection: string, selected: number })),
});
export type MaskView = Present<typeof MASK_REPORT>;

export function readMaskReport(x: unknown): MaskView {
  return readReport(MASK_REPORT, x);
}
