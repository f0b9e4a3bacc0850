/**
 * Low rank exactly (DESIGN.md): a product L·Rᵀ of two tall factors (L m×r, R n×r; for a LoRA module
 * L = s·B and R = Aᵀ) is Q_L (R_L R_Rᵀ) Q_Rᵀ with L = Q_L R_L and R = Q_R R_R; the SVD of the small core
 * R_L R_Rᵀ gives the singular values of the product and, truncated, its best low-rank approximation.
 * No m × n matrix is formed.
 */
import { leftColumns, Mat, matmul, scaleColumns, transpose, zeros } from './dense';
import { cholesky, householderQR } from './qr';
import { svd, SVD, Sweeps } from './svd';

/** XᵀX of X (rows × cols, row-major), in float64; four rows at a time so each G entry is loaded once per four. */
export function gramOfRows(x: ArrayLike<number>, rows: number, cols: number): Mat {
  const G = zeros(cols, cols);
  const g = G.data;
  let i = 0;
  for (; i + 3 < rows; i += 4) {
    const o0 = i * cols;
    const o1 = o0 + cols;
    const o2 = o1 + cols;
    const o3 = o2 + cols;
    for (let j = 0; j < cols; j++) {
      const a0 = x[o0 + j];
      const a1 = x[o1 + j];
      const a2 = x[o2 + j];
      const a3 = x[o3 + j];
      const gj = j * cols;
      for (let k = j; k < cols; k++) g[gj + k] += a0 * x[o0 + k] + a1 * x[o1 + k] + a2 * x[o2 + k] + a3 * x[o3 + k];
    }
  }
  for (; i < rows; i++) {
    const o = i * cols;
    for (let j = 0; j < cols; j++) {
      const a = x[o + j];
      const gj = j * cols;
      for (let k = j; k < cols; k++) g[gj + k] += a * x[o + k];
    }
  }
  for (let j = 0; j < cols; j++) for (let k = 0; k < j; k++) g[j * cols + k] = g[k * cols + j];
  return G;
}

/** The R factor of X = QR: Cholesky of the Gram matrix XᵀX (`gram`, given when X is tall) when well conditioned, else Householder. */
export function rFactorFromGram(gram: Mat | undefined, X: () => Mat): Mat {
  return (gram && cholesky(gram)) ?? householderQR(X()).R;
}

export function rFactor(X: Mat): Mat {
  return rFactorFromGram(X.rows >= X.cols ? gramOfRows(X.data, X.rows, X.cols) : undefined, () => X);
}

/** The singular values of L·Rᵀ (L m × r, R n × r) from the R factors of L and R, descending (min(m, n, r) of them). */
export function coreSingularValues(RL: Mat, RR: Mat, m: number, n: number, sweeps?: Sweeps): Float64Array {
  const s = svd(matmul(RL, transpose(RR)), false, sweeps).s;
  return s.subarray(0, Math.min(m, n, RL.cols));
}

/** Singular values of L·Rᵀ, descending (min(m, n, r) of them). */
export function productSingularValues(L: Mat, R: Mat): Float64Array {
  return coreSingularValues(rFactor(L), rFactor(R), L.rows, R.rows);
}

/** ‖L·Rᵀ‖_F from the factors (Householder, so a tiny norm of a difference is accurate too). */
export function productNorm(L: Mat, R: Mat): number {
  const core = matmul(householderQR(L).R, transpose(householderQR(R).R));
  let s = 0;
  for (const x of core.data) s += x * x;
  return Math.sqrt(s);
}

/** L·Rᵀ in SVD form: Q_L U, Σ, Q_R V. */
export interface ProductSVD {
  core: SVD;
  QL: Mat;
  QR: Mat;
}

export function productSVD(L: Mat, R: Mat): ProductSVD {
  const l = householderQR(L);
  const r = householderQR(R);
  return { core: svd(matmul(l.R, transpose(r.R))), QL: l.Q, QR: r.Q };
}

/**
 * Balanced factors of the best rank-k approximation: left (m × k) = Q_L U_k Σ_k^½ and
 * right (n × k) = Q_R V_k Σ_k^½, so that left·rightᵀ = Q_L U_k Σ_k V_kᵀ Q_Rᵀ.
 */
export function truncatedFactors(p: ProductSVD, k: number): { left: Mat; right: Mat } {
  const root = Array.from(p.core.s.subarray(0, k), (x) => Math.sqrt(x));
  return {
    left: matmul(p.QL, scaleColumns(leftColumns(p.core.U, k), root)),
    right: matmul(p.QR, scaleColumns(leftColumns(p.core.V, k), root)),
  };
}

/** Σ_{i<k} s_i² / Σ s_i² (1 for an all-zero spectrum: nothing was lost). */
export function energyKept(s: ArrayLike<number>, k: number): number {
  let total = 0;
  let kept = 0;
  for (let i = 0; i < s.length; i++) {
    total += s[i] * s[i];
    if (i < k) kept += s[i] * s[i];
  }
  return total === 0 ? 1 : kept / total;
}
