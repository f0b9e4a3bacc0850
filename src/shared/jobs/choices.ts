/** The values a job's options take, named once for the engine, the CLI and the extension's pickers. */

/** `--device`: `auto` takes a working hardware GPU, else the CPU. */
export type DeviceChoice = 'auto' | 'cpu' | 'gpu';
export const DEVICE_CHOICES: readonly DeviceChoice[] = ['auto', 'cpu', 'gpu'];

/**
 * fp16/bf16 merge rules, `W` the stored base weight, `d` the fp32 delta, `r` rounding to the dtype
 * (round-to-nearest-even), `f` rounding to fp32:
 * - `peft`      = r(f(r(W) + d))        what PEFT's merge_and_unload() gives with its defaults
 * - `peft-safe` = r(f(r(W) + r(d)))     both operands cast first, added as PyTorch adds halves
 * - `fp32-cast` = r(f(W + d))           the most accurate
 * At F32 every rule is f(W + d).
 */
export type MergeRule = 'peft' | 'peft-safe' | 'fp32-cast';
export const MERGE_RULES: readonly MergeRule[] = ['peft', 'peft-safe', 'fp32-cast'];
export const DEFAULT_RULE: MergeRule = 'peft';

/** Largest max-abs difference per tensor for a LoRA delta and a task vector to count as equivalent. */
export const DEFAULT_TOLERANCE = 1e-5;

export type DecomposeMethod = 'nnls' | 'omp' | 'lasso';
export const DECOMPOSE_METHODS: readonly DecomposeMethod[] = ['nnls', 'omp', 'lasso'];

/** The CLI's defaults of the numeric options (what --tol, --support-threshold, --min-t, --lambda, --max-residual default to). */
export const DECOMPOSE_DEFAULTS = { tol: 1e-6, supportThreshold: 1e-3, minT: 5, lambda: 1e-3, maxResidual: 0.1 } as const;

/** What a task vector of UNMERGE comes from: an adapter's deltas, or a fine-tuned model minus the base. */
export type SourceKind = 'adapter' | 'finetuned';

/** What a path on disk is, as the engine opens it. */
export type CheckpointKind = 'model' | 'sharded-model' | 'adapter' | 'task-vector' | 'file' | 'diffusers';
