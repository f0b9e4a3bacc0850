/**
 * The numeric kernels behind one interface, implemented on the CPU (typed arrays, worker threads) and
 * on the GPU (WebGPU). Every kernel's result is defined exactly here; backends must agree bit for bit
 * on tensors and within 1e-6 (relative) on float64 statistics.
 *
 * Values are fp32 (`Float32Array`); a half-precision tensor is decoded to fp32 first (exact).
 */
import { MergeRule } from '../../shared/jobs/choices';
import { FloatDtype } from '../../shared/safetensors/dtypes';
import { TensorInfo } from '../../shared/safetensors/header';
import { JobContext } from '../util/job';

export type HalfDtype = 'F16' | 'BF16';
export type MergeDtype = 'F32' | HalfDtype;

/** Statistics of a pair (a, b), accumulated in float64. */
export interface PairStats {
  n: number;
  dot: number;
  /** Sum of squares of a, of b, and of (a - b). */
  aSq: number;
  bSq: number;
  diffSq: number;
  maxAbsDiff: number;
  /** Elements where a != 0, b != 0, a != b. NaN compares unequal. */
  aNonzero: number;
  bNonzero: number;
  diffNonzero: number;
  maxAbsA: number;
  maxAbsB: number;
  /** Elements that are NaN or infinite in a or in b. */
  nonFinite: number;
}

/** What merging one tensor at a half dtype under a rule does to it, against the fp32 base `W`. */
export interface PrecisionStats {
  n: number;
  /** Elements with d != 0. */
  deltaNonzero: number;
  /** Elements with d != 0 whose merged value equals the cast base r(W): the delta was swallowed. */
  lost: number;
  /** Sum of squares of d and of (recovered - d), recovered = merged - r(W) in fp32. */
  deltaSq: number;
  recoveredErrSq: number;
  /** Elements where merged != W, and sum of squares of (merged - W): what a task vector would see. */
  changed: number;
  changedSq: number;
  /** Elements where r(W) != W, and sum of squares of (r(W) - W): the cast alone. */
  castChanged: number;
  castSq: number;
  /**
   * Elements where W, d, r(W) or the merge is NaN or infinite (an fp32 value past the half dtype's range
   * casts to Inf): left out of every other figure, which would otherwise all be NaN.
   */
  nonFinite: number;
}

export interface LoraFactors {
  /** A: [r, in] row-major. */
  A: Float32Array;
  /** B: [out, r] row-major. */
  B: Float32Array;
  r: number;
  out: number;
  in: number;
  scale: number;
  /** Produce the delta as [in, out] (Conv1D, embeddings) instead of [out, in]. */
  transpose: boolean;
}

/**
 * What DoRA's two kernels read: `v = W + d` as a merge at `dtype` under `rule` forms it in fp32:
 * `f(r(W) + d)` for `peft` and `peft-safe` (PEFT's safe DoRA merge keeps the delta in fp32), `f(W + d)`
 * for `fp32-cast` and at F32 (cpuMath.ts mergeOperand).
 */
export interface DoraOperand {
  /** The base weight as stored, decoded to fp32: `rows x cols` row-major. */
  w: Float32Array;
  /** The delta, in w's layout. */
  d: Float32Array;
  rows: number;
  cols: number;
  /** An output feature is a column (Conv1D and embedding weights, stored [in, out]), not a row. */
  featureIsColumn: boolean;
  dtype: MergeDtype;
  rule: MergeRule;
}

export interface Kernels {
  readonly device: 'cpu' | 'gpu';
  /** A human description of where the work runs ("CPU, 2 worker threads", "NVIDIA H100 (Vulkan)"). */
  readonly description: string;
  /** Whether jobs should allocate the buffers they pass in shared memory (the worker backend reads them in place). */
  readonly sharedMemory: boolean;
  /** A raw block as stored, decoded to fp32 exactly (bytesToF32). */
  decode(t: TensorInfo, raw: Uint8Array, out: Float32Array): Promise<Float32Array>;
  /** Whether every value of raw float bytes is finite. */
  allFinite(dtype: FloatDtype, raw: Uint8Array): Promise<boolean>;
  /** delta = f(f(B @ A) * f(scale)): each B @ A element accumulated in float64 and rounded to fp32, then times the fp32 scale (PyTorch's rounding; cpuMath.ts loraDeltaRows). */
  loraDelta(f: LoraFactors, out?: Float32Array): Promise<Float32Array>;
  /** Merged tensor of base `w` (values as stored, decoded to fp32) and delta `d` (null: no delta), encoded at `dtype`. */
  merge(w: Float32Array, d: Float32Array | null, dtype: MergeDtype, rule: MergeRule, out: Uint8Array): Promise<Uint8Array>;
  /** Statistics of a against b (b null: a against zeros). */
  pairStats(a: Float32Array, b: Float32Array | null): Promise<PairStats>;
  /** out = f(a - b). */
  subtract(a: Float32Array, b: Float32Array, out: Float32Array): Promise<Float32Array>;
  /** DoRA, step 1: the L2 norm, in float64, of each output feature of `v`. */
  doraNorms(v: DoraOperand): Promise<Float64Array>;
  /**
   * DoRA, step 2: `merged = enc(f(factor[feature] * v))`, `factor` the fp32 `f(magnitude / f(norm))`
   * per output feature; encoded at `v.dtype` into `out`.
   */
  mergeDora(v: DoraOperand, factor: Float32Array, out: Uint8Array): Promise<Uint8Array>;
  /** What merging at `dtype` under `rule` loses; `d` null for a tensor the adapter does not touch. */
  precision(w: Float32Array, d: Float32Array | null, dtype: HalfDtype, rule: MergeRule): Promise<PrecisionStats>;
  /** acc[i] = max(acc[i], |x[i]|) (the UNMERGE magnitude aggregation). */
  maxAbsInto(acc: Float32Array, x: Float32Array): Promise<Float32Array>;
  /**
   * maxAbsInto(acc, loraDelta(f)) for each factor set `f` (all of one out x in shape and orientation; ranks and scales may differ), without the deltas in
   * memory: the CPU backends fold each block of rows while it is in the cache. Optional: a backend
   * without it is given the deltas one at a time.
   * `float32`: fold instead an approximation whose error certified.ts bounds (B @ A summed in fp32 in any
   * order, then times the fp32 scale), the first pass of the certified mask; exact values qualify too.
   */
  maxAbsLoraInto?(acc: Float32Array, fs: LoraFactors[], float32?: boolean): Promise<Float32Array>;
  dispose(): Promise<void>;
}

/**
 * What a job that computes gets: the job context and the numeric backend the request chose, created on
 * first use (a job checks its inputs first, so bad input fails before a GPU starts).
 */
export interface KernelContext extends JobContext {
  kernels(): Promise<Kernels>;
}

/** `ctx` with the given backend (tests, benchmarks). */
export function withKernels(ctx: JobContext, kernels: Kernels): KernelContext {
  return { ...ctx, kernels: async () => kernels };
}
