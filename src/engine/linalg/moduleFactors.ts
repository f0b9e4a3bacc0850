/**
 * One module of extract-lora, from its task vector τ (m × n, seen through a LinearOperator) to PEFT
 * factors and their exact error. The whole of it runs on one thread (a kernel worker, where there is
 * one): each module's result is then the same bits whichever thread did it, and modules run side by side.
 */
import { LinearOperator, randomizedSVD, TruncatedSVD } from './randomized';

/** What a module's factorization needs besides τ itself. */
export interface ModuleSpec {
  m: number;
  n: number;
  /** Exactly one of rank and energy (a fraction in (0, 1]). */
  rank?: number;
  energy?: number;
  oversample: number;
  powerIterations: number;
  seed: number;
  /** A Conv1D weight, stored [in, out]: the delta is τᵀ. */
  transposed: boolean;
  /** ‖τ‖²_F. */
  normSq: number;
}

export interface ModuleFactors {
  /** Estimated singular values of the sketch, descending. */
  s: Float64Array;
  /** The rank written. */
  k: number;
  /** PEFT's orientation, fp32: A [k, in], B [out, k]. */
  A: Float32Array;
  B: Float32Array;
  /** ‖τ − P·Qt‖²_F of the written factors, in τ's orientation. */
  residualSq: number;
}

/** ‖τ − P·Qt‖²_F for P m × k and Qt k × n (fp32 row-major). */
export type ResidualSq = (P: Float32Array, Qt: Float32Array, k: number) => number | Promise<number>;

/** The largest sketch a module can ask for: rank + oversample, or with --energy a complete one. */
export function sketchColumns(spec: Pick<ModuleSpec, 'm' | 'n' | 'rank' | 'oversample'>): number {
  const full = Math.min(spec.m, spec.n);
  return spec.rank === undefined ? full : Math.min(spec.rank + spec.oversample, full);
}

/** The smallest k whose top-k estimated values hold `energy` of `total`, or undefined when the sketch holds less. */
function energyRankOf(s: Float64Array, total: number, energy: number): number | undefined {
  let acc = 0;
  const goal = energy * total * (1 - 1e-12);
  for (let k = 0; k < s.length; k++) {
    acc += s[k] * s[k];
    if (acc >= goal) return k + 1;
  }
  return undefined;
}

/** The truncated SVD and the rank: --rank as given; --energy by doubling the sketch until it holds the energy (or is complete). */
async function decompose(op: LinearOperator, spec: ModuleSpec): Promise<{ svd: TruncatedSVD; k: number }> {
  const ropts = { oversample: spec.oversample, powerIterations: spec.powerIterations, seed: spec.seed };
  if (spec.rank !== undefined) return { svd: await randomizedSVD(op, spec.rank, ropts), k: spec.rank };
  const full = Math.min(op.rows, op.cols);
  for (let want = Math.min(16, full); ; want = Math.min(2 * want, full)) {
    const svd = await randomizedSVD(op, want, ropts);
    const k = energyRankOf(svd.s, spec.normSq, spec.energy!);
    if (k !== undefined) return { svd, k };
    if (svd.s.length >= full) return { svd, k: full };
  }
}

/** Factors in PEFT's orientation (A' [k, in], B' [out, k], fp32) from τ's SVD in its stored orientation. */
function peftFactors(svd: TruncatedSVD, k: number, m: number, n: number, transposed: boolean): { A: Float32Array; B: Float32Array } {
  // τ ≈ U_k Σ_k V_kᵀ; the delta is τ (Linear, [out, in]) or τᵀ (Conv1D, stored [in, out]).
  const [left, right, rows, cols] = transposed ? [svd.V, svd.U, n, m] : [svd.U, svd.V, m, n];
  const B = new Float32Array(rows * k);
  const A = new Float32Array(k * cols);
  for (let c = 0; c < k; c++) {
    const root = Math.sqrt(svd.s[c]);
    for (let i = 0; i < rows; i++) B[i * k + c] = left.data[i * left.cols + c] * root;
    for (let j = 0; j < cols; j++) A[c * cols + j] = right.data[j * right.cols + c] * root;
  }
  return { A, B };
}

/** The approximation's factors in τ's orientation: τ ≈ P·Qt with P m × k and Qt k × n. */
function inTauOrientation(A: Float32Array, B: Float32Array, k: number, m: number, n: number, transposed: boolean): { P: Float32Array; Qt: Float32Array } {
  if (!transposed) return { P: B, Qt: A };
  const P = new Float32Array(m * k);
  const Qt = new Float32Array(k * n);
  for (let c = 0; c < k; c++) for (let i = 0; i < m; i++) P[i * k + c] = A[c * m + i];
  for (let j = 0; j < n; j++) for (let c = 0; c < k; c++) Qt[c * n + j] = B[j * k + c];
  return { P, Qt };
}

/** The module's truncated SVD, its PEFT factors and their exact residual. */
export async function factorModule(op: LinearOperator, residualSq: ResidualSq, spec: ModuleSpec): Promise<ModuleFactors> {
  const { svd, k } = await decompose(op, spec);
  const { A, B } = peftFactors(svd, k, spec.m, spec.n, spec.transposed);
  const { P, Qt } = inTauOrientation(A, B, k, spec.m, spec.n, spec.transposed);
  return { s: svd.s, k, A, B, residualSq: await residualSq(P, Qt, k) };
}
