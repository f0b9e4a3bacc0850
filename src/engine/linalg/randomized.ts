/**
 * Truncated SVD of a large matrix seen only through products (Halko, Martinsson & Tropp 2011, alg. 4.4
 * and 5.1): a Gaussian sketch Y = MΩ with oversampling, q power iterations re-orthonormalised after
 * every product (so that the small singular values are not lost to rounding), then the SVD of the
 * small projection QᵀM. With l = k + p columns the error of the rank-k result is close to the optimum
 * when the spectrum decays; with l = min(m, n) it is the exact SVD.
 */
import { Mat, matmul, transpose, zeros } from './dense';
import { householderQR } from './qr';
import { svd } from './svd';

/** A matrix rows × cols known by its products with tall matrices. */
export interface LinearOperator {
  rows: number;
  cols: number;
  /** M·X, X cols × l. */
  times(X: Mat): Mat;
  /** Mᵀ·Y, Y rows × l. */
  timesT(Y: Mat): Mat;
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
export function randomizedSVD(op: LinearOperator, rank: number, opts: RandomizedOptions = RANDOMIZED_DEFAULTS): TruncatedSVD {
  const l = Math.min(rank + opts.oversample, op.rows, op.cols);
  let Q = householderQR(op.times(gaussian(op.cols, l, opts.seed))).Q;
  for (let i = 0; i < opts.powerIterations; i++) {
    const Z = householderQR(op.timesT(Q)).Q;
    Q = householderQR(op.times(Z)).Q;
  }
  // M ≈ Q Qᵀ M = Q Zᵀ with Z = MᵀQ = Q_Z R_Z, so M ≈ Q R_Zᵀ Q_Zᵀ and the SVD of the l × l R_Zᵀ finishes it.
  const z = householderQR(op.timesT(Q));
  const small = svd(transpose(z.R));
  return { U: matmul(Q, small.U), s: small.s, V: matmul(z.Q, small.V) };
}

/**
 * A dense fp32 matrix (row-major) as an operator; products accumulate in float64. Four rows of M are
 * taken together so each value of the thin matrix loaded serves four of them.
 */
export function denseOperator(m: Float32Array, rows: number, cols: number): LinearOperator {
  return {
    rows,
    cols,
    times(X: Mat): Mat {
      const l = X.cols;
      const Y = zeros(rows, l);
      const x = X.data;
      const y = Y.data;
      let i = 0;
      for (; i + 3 < rows; i += 4) {
        const r0 = i * cols;
        const y0 = i * l;
        for (let j = 0; j < cols; j++) {
          const t0 = m[r0 + j];
          const t1 = m[r0 + cols + j];
          const t2 = m[r0 + 2 * cols + j];
          const t3 = m[r0 + 3 * cols + j];
          const xj = j * l;
          for (let c = 0; c < l; c++) {
            const v = x[xj + c];
            y[y0 + c] += t0 * v;
            y[y0 + l + c] += t1 * v;
            y[y0 + 2 * l + c] += t2 * v;
            y[y0 + 3 * l + c] += t3 * v;
          }
        }
      }
      for (; i < rows; i++) {
        for (let j = 0; j < cols; j++) {
          const t = m[i * cols + j];
          for (let c = 0; c < l; c++) y[i * l + c] += t * x[j * l + c];
        }
      }
      return Y;
    },
    timesT(Y: Mat): Mat {
      const l = Y.cols;
      const Z = zeros(cols, l);
      const y = Y.data;
      const z = Z.data;
      let i = 0;
      for (; i + 3 < rows; i += 4) {
        const r0 = i * cols;
        const y0 = i * l;
        for (let j = 0; j < cols; j++) {
          const t0 = m[r0 + j];
          const t1 = m[r0 + cols + j];
          const t2 = m[r0 + 2 * cols + j];
          const t3 = m[r0 + 3 * cols + j];
          const zj = j * l;
          for (let c = 0; c < l; c++) z[zj + c] += t0 * y[y0 + c] + t1 * y[y0 + l + c] + t2 * y[y0 + 2 * l + c] + t3 * y[y0 + 3 * l + c];
        }
      }
      for (; i < rows; i++) {
        for (let j = 0; j < cols; j++) {
          const t = m[i * cols + j];
          for (let c = 0; c < l; c++) z[j * l + c] += t * y[i * l + c];
        }
      }
      return Z;
    },
  };
}
