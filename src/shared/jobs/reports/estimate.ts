/** The report of `estimate` (its --json), as the engine writes it and the extension's panels read it. */
import { fields, listOf, number, Present, readReport, string } from './read';

export interface EstimateModule {
  /** Module path (the base tensor without `.weight`). */
  name: string;
  in: number;
  out: number;
  r: number;
  alpha: number;
  /** `r * (in + out)`, plus `out` with DoRA. */
  params: number;
}

export interface EstimateReport {
  model: string;
  /** Where the shapes came from: the checkpoint's headers, or config.json through modelLayout. */
  shapesFrom: 'weights' | 'config';
  modelType: string | null;
  r: number;
  alpha: number;
  targets: string[] | string;
  useDora: boolean;
  /** Every trainable element: LoRA factors, DoRA magnitudes, modules_to_save copies. */
  trainableParams: number;
  loraParams: number;
  doraParams: number;
  savedParams: number;
  /** Elements of the base model. */
  baseParams: number;
  /** 100 * trainableParams / baseParams. */
  percent: number;
  modules: EstimateModule[];
  modulesToSave: Array<{ name: string; params: number }>;
  /** With --adapter: the elements its adapter_model.safetensors really holds (null without weights). */
  adapterFileParams: number | null;
  warnings: string[];
}

/** An estimate report as the extension reads it (read.ts). */
export const ESTIMATE_REPORT = fields<EstimateReport>()({ trainableParams: number, baseParams: number, percent: number, warnings: listOf(string) });
export type EstimateView = Present<typeof ESTIMATE_REPORT>;

export function readEstimateReport(x: unknown): EstimateView {
  return readReport(ESTIMATE_REPORT, x);
}
