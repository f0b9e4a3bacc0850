/**
 * The float64 products of the low-rank toolbox, as references: each function fixes the order of its
 * float64 operations, and the WebAssembly kernels (kernels/wasm/linalg.wat) follow it exactly, so the
 * two give the same bits (test/unit/wasm-linalg.test.ts) and a result does not depend on how many
 * threads share the rows. fp32 inputs are widened to float64 exactly; products of two of them are exact.
 */

/** The Gram kernel's panel length (a multiple of 2): the panel stays in the cache while every block of it is summed. */
export const GRAM_PANEL = 256;

/**
 * G = XXᵀ (c × c, row-major) of the c × count matrix X[k][t] = src[k·sk + t·st] (so B (rows × r,
 * row-major) gives BᵀB with sk = 1, st = r; A (r × n) gives AAᵀ with sk = n, st = 1). Summed in panels
 * of GRAM_PANEL values of t; within one, the even and the odd t in two sums, each ascending from +0;
 * G[k][l] += even + odd per panel, for k ≤ l, mirrored below the diagonal.
 */
export function gramRef(src: Float32Array, c: number, count: number, sk: number, st: number): Float64Array {
  const G = new Float64Array(c * c);
  for (let t0 = 0; t0 < count; t0 += GRAM_PANEL) {
    const t1 = Math.min(count, t0 + GRAM_PANEL);
    for (let k = 0; k < c; k++) {
      for (let l = k; l < c; l++) {
        let even = 0;
        let odd = 0;
        for (let t = t0; t < t1; t += 2) {
          even += src[k * sk + t * st] * src[l * sk + t * st];
          if (t + 1 < t1) odd += src[k * sk + (t + 1) * st] * src[l * sk + (t + 1) * st];
        }
        G[k * c + l] += even + odd;
      }
    }
  }
  for (let k = 0; k < c; k++) for (let l = 0; l < k; l++) G[k * c + l] = G[l * c + k];
  return G;
}

/**
 * Y = M·X for M rows × K in fp32 with M[i][k] = m[i·sr + k·sk] (a row-major matrix or its transpose),
 * X K × l float64 (row-major, row stride lx), Y rows × l (row stride ly): each Y[i][c] summed over k in
 * ascending order from +0.
 */
export function gemmRef(
  m: Float32Array,
  sr: number,
  sk: number,
  rows: number,
  K: number,
  x: Float64Array,
  l: number,
  lx: number,
  y: Float64Array,
  ly: number,
): void {
  const acc = new Float64Array(l);
  for (let i = 0; i < rows; i++) {
    acc.fill(0);
    for (let k = 0; k < K; k++) {
      const v = m[i * sr + k * sk];
      const xr = k * lx;
      for (let c = 0; c < l; c++) acc[c] += v * x[xr + c];
    }
    y.set(acc, i * ly);
  }
}

/**
 * out[i] = ‖tau_i − (P·Qt)_i‖² for rows i < rows (tau rows × n, P rows × k, Qt k × n, fp32 row-major):
 * each element of P·Qt summed over c ascending from +0; the squares in two sums (even and odd j, each
 * ascending, the last column of an odd n apart), then even + odd (+ that column's square).
 */
export function residualRowsRef(tau: Float32Array, P: Float32Array, Qt: Float32Array, rows: number, k: number, n: number, out: Float64Array): void {
  const pairs = n - (n % 2);
  for (let i = 0; i < rows; i++) {
    const d = (j: number): number => {
      let x = 0;
      for (let c = 0; c < k; c++) x += P[i * k + c] * Qt[c * n + j];
      return tau[i * n + j] - x;
    };
    let even = 0;
    let odd = 0;
    for (let j = 0; j < pairs; j += 2) {
      const a = d(j);
      const b = d(j + 1);
      even += a * a;
      odd += b * b;
    }
    let sum = even + odd;
    if (pairs < n) {
      const a = d(n - 1);
      sum += a * a;
    }
    out[i] = sum;
  }
}

/** ‖tau − P·Qt‖²_F: Σ_i of residualRowsRef's row sums, in row order. */
export function residualSqRef(tau: Float32Array, P: Float32Array, Qt: Float32Array, m: number, k: number, n: number): number {
  const rows = new Float64Array(m);
  residualRowsRef(tau, P, Qt, m, k, n, rows);
  let sum = 0;
  for (const x of rows) sum += x;
  return sum;
}
