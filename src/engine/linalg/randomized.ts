/**
 * Truncated SVD of a large matrix seen only through products (Halko, Martinsson & Tropp 2011, alg. 4.4
 * and 5.1): a Gaussian sketch Y = MΩ with oversampling, q power iterations re-orthonormalised after
 * every product (so that the small singular values are not lost to rounding), then the SVD of the
 * small projection QᵀM. With l = k + p columns the error of the rank-k result is close to the optimum
 * when the spectrum decays; with l = min(m, n) it is the exact SVD.
 */
import { Mat, matmul, transpose, zeros } from './dense';
import { gemmRef } from './products';
import { HouseholderColumns, householderQR, QR } from './qr';
import { svd } from './svd';

/** A matrix rows × cols known by its products with tall matrices. */
export interface LinearOperator {
  rows: number;
  cols: number;
  /** M·X, X cols × l. */
  times(X: Mat): Mat | Promise<Mat>;
  /** Mᵀ·Y, Y rows × l. */
  timesT(Y: Mat): Mat | Promise<Mat>;
  /** The QR reflections to use on the operator's thread (its WebAssembly), where not the JavaScript reference. */
  columns?: HouseholderColumns;
}

export interface RandomizedOptions {
  /** Columns of the sketch beyond the rank wanted. */
  oversample: number;
  powerIterations: number;
  seed: number;
}

export const RANDOMIZED_DEFAULTS: RandomizedOptions = { oversample: 8, powerIterations: 2, seed: 1 };

export interface TruncatedSVD {
  /** rows × l, orthonormal columns. */
  U: Mat;
  /** l estimated singular values, descending (each a lower bound of the true one). */
  s: Float64Array;
  /** cols × l, orthonormal columns. */
  V: Mat;
}

/** Standard normal values from a seeded generator (mulberry32 + Box–Muller), reproducible run to run. */
export function gaussian(rows: number, cols: number, seed: number): Mat {
  let a = seed >>> 0;
  const uniform = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const m = zeros(rows, cols);
  for (let i = 0; i < m.data.length; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform()));
    const th = 2 * Math.PI * uniform();
    m.data[i] = r * Math.cos(th);
    if (i + 1 < m.data.length) m.data[i + 1] = r * Math.sin(th);
  }
  return m;
}

/** The top `l` = min(rank + oversample, rows, cols) singular triplets of `op`. */
export async function randomizedSVD(op: LinearOperator, rank: number, opts: RandomizedOptions = RANDOMIZED_DEFAULTS): Promise<TruncatedSVD> {
  const l = Math.min(rank + opts.oversample, op.rows, op.cols);
  const qr = (X: Mat): QR => householderQR(X, op.columns);
  let Q = qr(await op.times(gaussian(op.cols, l, opts.seed))).Q;
  for (let i = 0; i < opts.powerIterations; i++) {
    const Z = qr(await op.timesT(Q)).Q;
    Q = qr(await op.times(Z)).Q;
  }
  // M ≈ Q Qᵀ M = Q Zᵀ with Z = MᵀQ = Q_Z R_Z, so M ≈ Q R_Zᵀ Q_Zᵀ and the SVD of the l × l R_Zᵀ finishes it.
  const z = qr(await op.timesT(Q));
  const small = svd(transpose(z.R));
  return { U: matmul(Q, small.U), s: small.s, V: matmul(z.Q, small.V) };
}

/** A dense fp32 matrix (row-major) as an operator, in JavaScript: the products in gemmRef's order (kernels/linalgPool.ts runs them in WebAssembly). */
export function denseOperator(m: Float32Array, rows: number, cols: number): LinearOperator {
  const product = (r: number, K: number, sr: number, sk: number, X: Mat): Mat => {
    const Y = zeros(r, X.cols);
    gemmRef(m, sr, sk, r, K, X.data, X.cols, X.cols, Y.data, X.cols);
    return Y;
  };
  return { rows, cols, times: (X) => product(rows, cols, cols, 1, X), timesT: (Y) => product(cols, rows, 1, cols, Y) };
}
