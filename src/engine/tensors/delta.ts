/**
 * LoRA deltas in the base tensor's layout, one row block at a time: `s * B @ A`, transposed where the
 * base stores the weight [in, out] (Conv1D, embeddings). DoRA modules are handled whole (their norms
 * span the whole tensor).
 */
import { LoraModule } from '../checkpoint/adapter';
import { Checkpoint } from '../checkpoint/checkpoint';
import { LensError } from '../errors';
import { Kernels, MergeDtype, MergeRule } from '../kernels/kernels';
import { bytesToF32, Scratch } from '../safetensors/reader';
import { TensorInfo } from '../../shared/safetensors/header';
import { Block } from './stream';

/** Reads small adapter tensors (factors, magnitudes) as fp32, keeping only the current module's. */
export class Factors {
  private module: LoraModule | undefined;
  private A: Float32Array = new Float32Array(0);
  private B: Float32Array = new Float32Array(0);
  private M: Float32Array | undefined;

  /** `shared`: factors in SharedArrayBuffers, for the CPU backend's worker threads. */
  constructor(
    private readonly adapter: Checkpoint,
    private readonly shared = false,
  ) {}

  get(m: LoraModule): { A: Float32Array; B: Float32Array; magnitude?: Float32Array } {
    if (this.module !== m) {
      this.A = this.read(m.A);
      this.B = this.read(m.B);
      this.M = m.magnitude ? this.read(m.magnitude) : undefined;
      this.module = m;
    }
    return { A: this.A, B: this.B, magnitude: this.M };
  }

  read(t: TensorInfo): Float32Array {
    const alloc = (n: number): ArrayBuffer | SharedArrayBuffer => (this.shared ? new SharedArrayBuffer(n) : new ArrayBuffer(n));
    const raw = this.adapter.handles.readBytesSync(t, new Uint8Array(alloc(t.byteLength)));
    return bytesToF32(t, raw, new Float32Array(alloc(t.numel * 4)));
  }
}

/** The delta rows of base block `b` (rows of the base tensor as stored), into `out`. */
export async function deltaBlock(kernels: Kernels, factors: Factors, m: LoraModule, b: Block, out: Float32Array, scratch: Scratch): Promise<Float32Array> {
  const { A, B } = factors.get(m);
  const rank = m.A.shape[0];
  const rows = b.row1 - b.row0;
  if (!m.transpose) {
    return kernels.loraDelta({ A, B: B.subarray(b.row0 * rank, b.row1 * rank), r: rank, out: rows, in: m.in, scale: m.scale, transpose: false }, out);
  }
  // Stored [in, out]: base rows are columns of B @ A, so take those columns of A.
  const sub = scratch.f32('delta-A-columns', rank * rows);
  for (let k = 0; k < rank; k++) sub.set(A.subarray(k * m.in + b.row0, k * m.in + b.row1), k * rows);
  return kernels.loraDelta({ A: sub, B, r: rank, out: m.out, in: rows, scale: m.scale, transpose: true }, out);
}

/** DoRA's per-feature scale of a module, and the geometry its kernels need. */
export interface DoraScale {
  /** f(magnitude / f(||W + dW||)) per output feature. */
  factor: Float32Array;
  cols: number;
  /** Output features are the columns (Conv1D and embedding weights, stored [in, out]). */
  featureIsColumn: boolean;
}

/**
 * DoRA's scale `m / ||W + dW||` per output feature (norms in float64, as `dtype` and `rule` form W + dW),
 * `w` and `d` the whole base tensor and delta: what merge and UNMERGE's DoRA task vectors both use.
 */
export async function doraScale(kernels: Kernels, m: LoraModule, magnitude: Float32Array | undefined, w: Float32Array, d: Float32Array, dtype: MergeDtype, rule: MergeRule): Promise<DoraScale> {
  const [rows, cols] = m.base!.shape;
  const featureIsColumn = m.transpose;
  const norms = await kernels.doraNorms(w, d, rows, cols, featureIsColumn, dtype, rule);
  if (!magnitude || magnitude.length !== norms.length) {
    throw new LensError(m.magnitude?.file ?? m.A.file, `DoRA magnitude has ${magnitude?.length ?? 0} values, the weight has ${norms.length} output features`, m.magnitude?.name ?? m.A.name);
  }
  const factor = new Float32Array(norms.length);
  for (let i = 0; i < factor.length; i++) factor[i] = magnitude[i] / Math.fround(norms[i]);
  return { factor, cols, featureIsColumn };
}

/**
 * The DoRA-merged tensor `m / ||W + dW|| * (W + dW)` encoded at `dtype` into `out`; `w` and `d` are
 * the whole base tensor and delta.
 */
export async function mergeDora(kernels: Kernels, factors: Factors, m: LoraModule, w: Float32Array, d: Float32Array, dtype: MergeDtype, rule: MergeRule, out: Uint8Array): Promise<Uint8Array> {
  const g = await doraScale(kernels, m, factors.get(m).magnitude, w, d, dtype, rule);
  return kernels.mergeDora(w, d, g.factor, g.cols, g.featureIsColumn, dtype, rule, out);
}
