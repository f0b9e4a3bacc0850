/** The report of `compare` (its --json), as the engine writes it and the extension's panels read it. */

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
  loraNorm: number;
  taskVectorNorm: number;
  loraNonzero: number;
  taskVectorNonzero: number;
  withinTolerance: boolean;
}

export interface CompareSummary {
  compared: number;
  shared: number;
  perfectMatches: number;
  loraOnly: number;
  taskVectorOnly: number;
  taskVectorOnlyNorm: number;
  meanCosine: number | null;
  minCosine: number | null;
  maxAbsDiff: number | null;
  maxRelFroErr: number | null;
  tolerance: number;
  equivalent: boolean;
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
  warnings: string[];
  seconds: number;
}
