/**
 * SVD of small matrices by one-sided Jacobi (Hestenes): plane rotations orthogonalise the columns until
 * every pair is orthogonal to working precision; the column norms are then the singular values. Simple,
 * and accurate to a few ulps of the largest singular value (often better, relative to each one).
 */
import { Mat, transpose, zeros } from './dense';

export interface SVD {
  /** m × p, orthonormal columns (a column for a zero singular value is zero). p = min(m, n). */
  U: Mat;
  /** p values, descending. */
  s: Float64Array;
  /** n × p, orthonormal columns. */
  V: Mat;
}

export const EPS = 2.220446049250313e-16;
const MAX_SWEEPS = 80;

/**
 * One-sided Jacobi sweeps on u: n columns of `ld` values each (ld even; the values past m zero), rotated
 * in place until every pair is orthogonal to working precision (or MAX_SWEEPS); v (n × n, columns)
 * takes the same rotations. Each column dot product is summed in two parts, the even and the odd rows,
 * then even + odd: the order the WebAssembly version (kernels/wasm/linalg.wat's jacobi) keeps.
 */
export function jacobiSweeps(u: Float64Array, ld: number, m: number, n: number, v?: Float64Array): void {
  const tol = EPS * m;
  for (let sweep = 0; sweep < MAX_SWEEPS; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      const cp = p * ld;
      for (let q = p + 1; q < n; q++) {
        const cq = q * ld;
        let a0 = 0, a1 = 0, b0 = 0, b1 = 0, g0 = 0, g1 = 0;
        for (let i = 0; i < ld; i += 2) {
          const a = u[cp + i];
          const b = u[cq + i];
          const c = u[cp + i + 1];
          const d = u[cq + i + 1];
          a0 += a * a;
          a1 += c * c;
          b0 += b * b;
          b1 += d * d;
          g0 += a * b;
          g1 += c * d;
        }
        const alpha = a0 + a1;
        const beta = b0 + b1;
        const gamma = g0 + g1;
        if (alpha === 0 || beta === 0 || Math.abs(gamma) <= tol * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        for (let i = 0; i < ld; i++) {
          const a = u[cp + i];
          const b = u[cq + i];
          u[cp + i] = c * a - s * b;
          u[cq + i] = s * a + c * b;
        }
        if (v) {
          const vp = p * n;
          const vq = q * n;
          for (let i = 0; i < n; i++) {
            const a = v[vp + i];
            const b = v[vq + i];
            v[vp + i] = c * a - s * b;
            v[vq + i] = s * a + c * b;
          }
        }
      }
    }
    if (!rotated) break;
  }
}

/** jacobiSweeps without v, or a version of it that gives the same bits (the WebAssembly one). */
export type Sweeps = (u: Float64Array, ld: number, m: number, n: number) => void;

/** M = U diag(s) Vᵀ. `vectors: false` skips U and V (their matrices come back empty), and may run its sweeps elsewhere. */
export function svd(M: Mat, vectors = true, sweeps: Sweeps = jacobiSweeps): SVD {
  if (M.rows < M.cols) {
    const t = svd(transpose(M), vectors, sweeps);
    return { U: t.V, s: t.s, V: t.U };
  }
  const m = M.rows;
  const n = M.cols;
  // Columns of M (column-major, each padded to an even length with a zero), rotated in place; V accumulates the same rotations.
  const ld = m + (m % 2);
  const u = new Float64Array(ld * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) u[j * ld + i] = M.data[i * n + j];
  const v = vectors ? new Float64Array(n * n) : undefined;
  if (v) {
    for (let j = 0; j < n; j++) v[j * n + j] = 1;
    jacobiSweeps(u, ld, m, n, v);
  } else sweeps(u, ld, m, n);
  const norms = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let i = 0; i < m; i++) s += u[j * ld + i] * u[j * ld + i];
    norms[j] = Math.sqrt(s);
  }
  const order = Array.from({ length: n }, (_, j) => j).sort((a, b) => norms[b] - norms[a]);
  const s = Float64Array.from(order, (j) => norms[j]);
  if (!vectors) return { U: zeros(m, 0), s, V: zeros(n, 0) };
  const U = zeros(m, n);
  const V = zeros(n, n);
  order.forEach((j, k) => {
    const inv = norms[j] > 0 ? 1 / norms[j] : 0;
    for (let i = 0; i < m; i++) U.data[i * n + k] = u[j * ld + i] * inv;
    for (let i = 0; i < n; i++) V.data[i * n + k] = v![j * n + i];
  });
  return { U, s, V };
}
