/** The report of `compare` (its --json), as the engine writes it and the extension's panels read it. */
import { boolean, fields, listOf, number, oneOf, Present, readReport, string } from './read';

export interface CompareTensor {
  name: string;
  category: string;
  /** The adapter puts a LoRA delta on this tensor. */
  loraTarget: boolean;
  /** The adapter replaces this tensor outright (modules_to_save, a saved bias). */
  replaced: boolean;
  cosine: number | null;
  maxAbsDiff: number | null;
  relFroErr: number | null;
  /** ||ΔW||_F; null when the adapter's delta holds NaN or Inf (`loraNonFinite`). */
  loraNorm: number | null;
  /** ||τ||_F; null when the task vector holds NaN or Inf (`taskVectorNonFinite`). */
  taskVectorNorm: number | null;
  /** NaN or infinite elements of each side (cosine, maxAbsDiff and relFroErr are null when either is non-zero). */
  loraNonFinite: number;
  taskVectorNonFinite: number;
  loraNonzero: number;
  taskVectorNonzero: number;
  withinTolerance: boolean;
  /**
   * Against a finetuned (merged) model stored in fp16/bf16: every element within the rounding of
   * base + delta to that dtype (plus tolerance); at fp32, `withinTolerance` for adapted tensors; null
   * where not judged (a task vector file, an fp32 tensor changed outside the adapter).
   */
  withinRounding: boolean | null;
}

export interface CompareSummary {
  compared: number;
  shared: number;
  perfectMatches: number;
  loraOnly: number;
  taskVectorOnly: number;
  /** null when a tensor changed outside the adapter holds NaN or Inf. */
  taskVectorOnlyNorm: number | null;
  /** Over the shared tensors that have a cosine (`cosineTensors`; not those holding NaN or Inf). */
  meanCosine: number | null;
  minCosine: number | null;
  cosineTensors: number;
  /** Compared tensors holding NaN or Inf on either side, and their NaN/Inf elements. */
  nonFiniteTensors: number;
  nonFiniteElements: number;
  maxAbsDiff: number | null;
  maxRelFroErr: number | null;
  tolerance: number;
  /** CLI.md: every shared tensor within `tolerance` max-abs (strict: no allowance for a dtype's rounding). */
  equivalent: boolean;
  /** The finetuned model's float dtype (`fp32`, `fp16`, `bf16`, `mixed`); null for a task vector file. */
  mergedDtype: string | null;
  /** Every tensor judged by `withinRounding` passes; equals `equivalent` unless the merged dtype is half. */
  withinRounding: boolean;
  /** Tensors whose `withinRounding` is false. */
  outsideRoundingTensors: number;
  /**
   * The dtype-aware verdict: EQUIVALENT (strictly), EXPECTED-LOSS (differs only by the rounding the
   * merged model's dtype must make, as validate judges a half merge), NOT-EQUIVALENT.
   */
  dtypeVerdict: 'EQUIVALENT' | 'EXPECTED-LOSS' | 'NOT-EQUIVALENT';
  verdict: string;
}

export interface CompareReport {
  base: string;
  adapter: string;
  taskVector: string;
  /** 'task-vector' (a file) or 'finetuned' (computed on the fly). */
  source: 'task-vector' | 'finetuned';
  device: string;
  summary: CompareSummary;
  tensors: CompareTensor[];
  /** Base tensors absent from the task vector side, or with another shape there (compared as zeros / skipped). */
  missingInTaskVector: string[];
  shapeMismatches: string[];
  onlyInTaskVector: string[];
  files: string[];
  /** Adapter modules whose lora_B is all zeros: they change nothing. */
  zeroModules: string[];
  /** Tensors holding NaN or Inf on either side, with their element counts (both sides together). */
  nonFinite: { name: string; elements: number }[];
  warnings: string[];
  seconds: number;
}

export const COMPARE_SUMMARY = fields<CompareSummary>()({
  compared: number,
  shared: number,
  perfectMatches: number,
  loraOnly: number,
  taskVectorOnly: number,
  taskVectorOnlyNorm: number,
  meanCosine: number,
  minCosine: number,
  cosineTensors: number,
  nonFiniteTensors: number,
  nonFiniteElements: number,
  maxAbsDiff: number,
  maxRelFroErr: number,
  tolerance: number,
  equivalent: boolean,
  mergedDtype: string,
  withinRounding: boolean,
  outsideRoundingTensors: number,
  // Read as any string: a verdict of another engine version is shown as it is.
  dtypeVerdict: string,
  verdict: string,
});

/** A compare report as the panels read it (read.ts). */
export const COMPARE_REPORT = fields<CompareReport>()({
  base: string,
  adapter: string,
  taskVector: string,
  source: oneOf(['task-vector', 'finetuned']),
  device: string,
  summary: COMPARE_SUMMARY,
  tensors: listOf(
    fields<CompareTensor>()({
      name: string,
      category: string,
      loraTarget: boolean,
      replaced: boolean,
      cosine: number,
      maxAbsDiff: number,
      relFroErr: number,
      loraNorm: number,
      taskVectorNorm: number,
      loraNonFinite: number,
      taskVectorNonFinite: number,
      loraNonzero: number,
      taskVectorNonzero: number,
      withinTolerance: boolean,
      withinRounding: boolean,
    }),
  ),
  missingInTaskVector: listOf(string),
  shapeMismatches: listOf(string),
  onlyInTaskVector: listOf(string),
  files: listOf(string),
  zeroModules: listOf(string),
  nonFinite: listOf(fields<CompareReport['nonFinite'][number]>()({ name: string, elements: number })),
  warnings: listOf(string),
  seconds: number,
});
export type CompareView = Present<typeof COMPARE_REPORT>;

export function readCompareReport(x: unknown): CompareView {
  return readReport(COMPARE_REPORT, x);
}
