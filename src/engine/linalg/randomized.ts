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
 * A dense fp32 matrix (row-major) as an operator; products accumulate in float64. Register-blocked so
 * that each value loaded serves several products: M·X as dot products of two rows of M with four
 * columns of X, Mᵀ·Y as four rows of M scaled into two columns of the result.
 */
export function denseOperator(m: Float32Array, rows: number, cols: number): LinearOperator {
  return {
    rows,
    cols,
    times(X: Mat): Mat {
      const l = X.cols;
      // X's columns contiguous.
      const xc = transpose(X).data;
      const Y = zeros(rows, l);
      const y = Y.data;
      for (let i = 0; i < rows; i += 2) {
        const r0 = i * cols;
        const two = i + 1 < rows;
        const r1 = two ? r0 + cols : r0;
        let c = 0;
        for (; c + 3 < l; c += 4) {
          const x0 = c * cols;
          const x1 = x0 + cols;
          const x2 = x1 + cols;
          const x3 = x2 + cols;
          let a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
          for (let j = 0; j < cols; j++) {
            const t0 = m[r0 + j];
            const t1 = m[r1 + j];
            const v0 = xc[x0 + j];
            const v1 = xc[x1 + j];
            const v2 = xc[x2 + j];
            const v3 = xc[x3 + j];
            a00 += t0 * v0;
            a01 += t0 * v1;
            a02 += t0 * v2;
            a03 += t0 * v3;
            a10 += t1 * v0;
            a11 += t1 * v1;
            a12 += t1 * v2;
            a13 += t1 * v3;
          }
          const y0 = i * l + c;
          y[y0] = a00;
          y[y0 + 1] = a01;
          y[y0 + 2] = a02;
          y[y0 + 3] = a03;
          if (two) {
            y[y0 + l] = a10;
            y[y0 + l + 1] = a11;
            y[y0 + l + 2] = a12;
            y[y0 + l + 3] = a13;
          }
        }
        for (; c < l; c++) {
          const x0 = c * cols;
          let a0 = 0;
          let a1 = 0;
          for (let j = 0; j < cols; j++) {
            a0 += m[r0 + j] * xc[x0 + j];
            a1 += m[r1 + j] * xc[x0 + j];
          }
          y[i * l + c] = a0;
          if (two) y[(i + 1) * l + c] = a1;
        }
      }
      return Y;
    },
    timesT(Y: Mat): Mat {
      const l = Y.cols;
      const y = Y.data;
      // The result's columns contiguous while it accumulates.
      const zc = new Float64Array(l * cols);
      for (let i = 0; i < rows; i += 4) {
        // Rows past the end count with weight 0 (and read row i again, in bounds).
        const r = [0, 1, 2, 3].map((d) => (i + d < rows ? (i + d) * cols : i * cols));
        const w = (d: number, c: number): number => (i + d < rows ? y[(i + d) * l + c] : 0);
        const [r0, r1, r2, r3] = r;
        let c = 0;
        for (; c + 1 < l; c += 2) {
          const y00 = w(0, c), y01 = w(0, c + 1), y10 = w(1, c), y11 = w(1, c + 1);
          const y20 = w(2, c), y21 = w(2, c + 1), y30 = w(3, c), y31 = w(3, c + 1);
          const z0 = c * cols;
          const z1 = z0 + cols;
          for (let j = 0; j < cols; j++) {
            const t0 = m[r0 + j];
            const t1 = m[r1 + j];
            const t2 = m[r2 + j];
            const t3 = m[r3 + j];
            zc[z0 + j] += t0 * y00 + t1 * y10 + t2 * y20 + t3 * y30;
            zc[z1 + j] += t0 * y01 + t1 * y11 + t2 * y21 + t3 * y31;
          }
        }
        for (; c < l; c++) {
          const y0 = w(0, c), y1 = w(1, c), y2 = w(2, c), y3 = w(3, c);
          const z0 = c * cols;
          for (let j = 0; j < cols; j++) zc[z0 + j] += m[r0 + j] * y0 + m[r1 + j] * y1 + m[r2 + j] * y2 + m[r3 + j] * y3;
        }
      }
      return transpose({ rows: l, cols, data: zc });
    },
  };
}
