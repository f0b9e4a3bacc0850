/**
 * Thin QR by Householder reflections (backward stable: what LAPACK's dgeqrf does, unblocked), and the
 * R factor alone from a Gram matrix by Cholesky where that is accurate enough and much cheaper.
 */
import { Mat, zeros } from './dense';

export interface QR {
  /** m × p with orthonormal columns (p = min(m, n)). */
  Q: Mat;
  /** p × n upper triangular (trapezoidal when n > m). */
  R: Mat;
}

/**
 * Σ a[ao + i]·b[bo + i] for i < len in four sums by i mod 4 (a last pair into sums 0 and 1, a last
 * value into sum 0), then (s0 + s2) + (s1 + s3): the order of the WebAssembly kernel's two f64x2 sums.
 */
function dot(a: Float64Array, ao: number, b: Float64Array, bo: number, len: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let i = 0;
  for (; i + 4 <= len; i += 4) {
    s0 += a[ao + i] * b[bo + i];
    s1 += a[ao + i + 1] * b[bo + i + 1];
    s2 += a[ao + i + 2] * b[bo + i + 2];
    s3 += a[ao + i + 3] * b[bo + i + 3];
  }
  if (i + 2 <= len) {
    s0 += a[ao + i] * b[bo + i];
    s1 += a[ao + i + 1] * b[bo + i + 1];
    i += 2;
  }
  if (i < len) s0 += a[ao + i] * b[bo + i];
  return s0 + s2 + (s1 + s3);
}

/**
 * The reflections of a Householder QR on the m × n column-major matrix w, in place (R above the
 * diagonal, the reflectors from it down), with tau and diag (min(m, n) zeros each) filled in; returns
 * Q's min(m, n) columns of m (column-major). The WebAssembly kernel `householder` does the same bits.
 */
export type HouseholderColumns = (w: Float64Array, m: number, n: number, tau: Float64Array, diag: Float64Array) => Float64Array;

export const householderColumns: HouseholderColumns = (w, m, n, tau, diag) => {
  const p = Math.min(m, n);
  for (let k = 0; k < p; k++) {
    const vk = k * m;
    const norm = Math.sqrt(dot(w, vk + k, w, vk + k, m - k));
    if (norm === 0) continue; // H_k = I; R_kk = 0
    const x0 = w[vk + k];
    const alpha = x0 >= 0 ? -norm : norm;
    diag[k] = alpha;
    // v = x - alpha e1 stored in place of x; tau = 2 / (v'v) = 1 / (norm (norm + |x0|)).
    w[vk + k] = x0 - alpha;
    tau[k] = 1 / (norm * (norm + Math.abs(x0)));
    for (let j = k + 1; j < n; j++) {
      const cj = j * m;
      const s = dot(w, vk + k, w, cj + k, m - k) * tau[k];
      if (s !== 0) for (let i = k; i < m; i++) w[cj + i] -= s * w[vk + i];
    }
  }
  // Q = H_0 … H_{p-1} [I_p; 0], accumulated backwards so each reflection touches only columns ≥ k.
  const q = new Float64Array(m * p);
  for (let j = 0; j < p; j++) q[j * m + j] = 1;
  for (let k = p - 1; k >= 0; k--) {
    if (tau[k] === 0) continue;
    const vk = k * m;
    for (let j = k; j < p; j++) {
      const cj = j * m;
      const s = dot(w, vk + k, q, cj + k, m - k) * tau[k];
      if (s !== 0) for (let i = k; i < m; i++) q[cj + i] -= s * w[vk + i];
    }
  }
  return q;
};

/** X = Q R for X m × n, the reflections by `columns` (the JavaScript reference, or a thread's WebAssembly). */
export function householderQR(X: Mat, columns: HouseholderColumns = householderColumns): QR {
  const m = X.rows;
  const n = X.cols;
  const p = Math.min(m, n);
  // Column-major working copy: every reflection runs down contiguous columns.
  const w = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) w[j * m + i] = X.data[i * n + j];
  const tau = new Float64Array(p);
  const diag = new Float64Array(p);
  const q = columns(w, m, n, tau, diag);
  const R = zeros(p, n);
  for (let k = 0; k < p; k++) {
    R.data[k * n + k] = diag[k];
    for (let j = k + 1; j < n; j++) R.data[k * n + j] = w[j * m + k];
  }
  const Q = zeros(m, p);
  for (let i = 0; i < m; i++) for (let j = 0; j < p; j++) Q.data[i * p + j] = q[j * m + i];
  return { Q, R };
}

/**
 * The upper-triangular R with RᵀR = G (G symmetric positive definite, n × n), or undefined when G is
 * singular or so ill-conditioned (a pivot below `relTol` times the largest diagonal) that R from the
 * Gram matrix would lose accuracy; the caller then takes R from a Householder QR instead.
 */
export function cholesky(G: Mat, relTol = 1e-12): Mat | undefined {
  const n = G.rows;
  const R = zeros(n, n);
  let maxDiag = 0;
  for (let i = 0; i < n; i++) maxDiag = Math.max(maxDiag, G.data[i * n + i]);
  if (!(maxDiag > 0)) return undefined;
  for (let k = 0; k < n; k++) {
    let d = G.data[k * n + k];
    for (let i = 0; i < k; i++) d -= R.data[i * n + k] * R.data[i * n + k];
    if (!(d > relTol * maxDiag)) return undefined;
    const rkk = Math.sqrt(d);
    R.data[k * n + k] = rkk;
    for (let j = k + 1; j < n; j++) {
      let s = G.data[k * n + j];
      for (let i = 0; i < k; i++) s -= R.data[i * n + k] * R.data[i * n + j];
      R.data[k * n + j] = s / rkk;
    }
  }
  return R;
}
