/**
 * Small dense matrices in float64 (row-major), for the low-rank toolbox: factors of a few hundred
 * columns and r×r cores. Nothing here is meant for a whole [out, in] weight.
 */

export interface Mat {
  rows: number;
  cols: number;
  /** rows × cols, row-major. */
  data: Float64Array;
}

export function zeros(rows: number, cols: number): Mat {
  return { rows, cols, data: new Float64Array(rows * cols) };
}

export function fromRows(rows: number, cols: number, data: ArrayLike<number>): Mat {
  if (data.length !== rows * cols) throw new Error(`matrix ${rows}x${cols} from ${data.length} values`);
  return { rows, cols, data: Float64Array.from(data) };
}

export function transpose(a: Mat): Mat {
  const t = zeros(a.cols, a.rows);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.cols; j++) t.data[j * a.rows + i] = a.data[i * a.cols + j];
  return t;
}

/** a · b. */
export function matmul(a: Mat, b: Mat): Mat {
  if (a.cols !== b.rows) throw new Error(`matmul ${a.rows}x${a.cols} · ${b.rows}x${b.cols}`);
  const c = zeros(a.rows, b.cols);
  const n = b.cols;
  for (let i = 0; i < a.rows; i++) {
    const ci = i * n;
    for (let k = 0; k < a.cols; k++) {
      const x = a.data[i * a.cols + k];
      if (x === 0) continue;
      const bk = k * n;
      for (let j = 0; j < n; j++) c.data[ci + j] += x * b.data[bk + j];
    }
  }
  return c;
}

/** Columns [0, k) of `a`. */
export function leftColumns(a: Mat, k: number): Mat {
  const c = zeros(a.rows, k);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < k; j++) c.data[i * k + j] = a.data[i * a.cols + j];
  return c;
}

/** Each column j of `a` times `d[j]`. */
export function scaleColumns(a: Mat, d: ArrayLike<number>): Mat {
  const c = zeros(a.rows, a.cols);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.cols; j++) c.data[i * a.cols + j] = a.data[i * a.cols + j] * d[j];
  return c;
}

/** [a | b]: the columns of a, then those of b (same rows). */
export function hconcat(parts: Mat[]): Mat {
  const rows = parts[0].rows;
  const cols = parts.reduce((s, p) => s + p.cols, 0);
  const c = zeros(rows, cols);
  let at = 0;
  for (const p of parts) {
    if (p.rows !== rows) throw new Error(`hconcat of ${rows} and ${p.rows} rows`);
    for (let i = 0; i < rows; i++) c.data.set(p.data.subarray(i * p.cols, (i + 1) * p.cols), i * cols + at);
    at += p.cols;
  }
  return c;
}

export function frobenius(a: Mat): number {
  let s = 0;
  for (let i = 0; i < a.data.length; i++) s += a.data[i] * a.data[i];
  return Math.sqrt(s);
}
