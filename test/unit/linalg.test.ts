import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fromRows, Mat, matmul, transpose } from '../../src/engine/linalg/dense';
import { gramOfRows, productNorm, productSingularValues, productSVD, truncatedFactors } from '../../src/engine/linalg/lowrank';
import { energyRank } from '../../src/shared/energy';
import { householderQR } from '../../src/engine/linalg/qr';
import { denseOperator, gaussian, randomizedSVD } from '../../src/engine/linalg/randomized';
import { svd } from '../../src/engine/linalg/svd';
import { findPython } from './helpers/python';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function identityError(Q: Mat): number {
  const g = matmul(transpose(Q), Q);
  let m = 0;
  for (let i = 0; i < g.rows; i++) for (let j = 0; j < g.cols; j++) m = Math.max(m, Math.abs(g.data[i * g.cols + j] - (i === j ? 1 : 0)));
  return m;
}

/** A matrix with the given singular values (random orthonormal factors from QR of Gaussians). */
function withSpectrum(m: number, n: number, s: number[], seed: number): Mat {
  const U = householderQR(gaussian(m, s.length, seed)).Q;
  const V = householderQR(gaussian(n, s.length, seed + 1)).Q;
  for (let i = 0; i < m; i++) for (let j = 0; j < s.length; j++) U.data[i * s.length + j] *= s[j];
  return matmul(U, transpose(V));
}

test('Householder QR: Q orthonormal, QR = X, tall, wide and rank-deficient', () => {
  for (const [m, n] of [
    [30, 7],
    [7, 30],
    [12, 12],
  ]) {
    const X = gaussian(m, n, m * 31 + n);
    if (m === 12) for (let i = 0; i < m; i++) X.data[i * n + 3] = X.data[i * n + 5]; // two equal columns
    const { Q, R } = householderQR(X);
    assert.ok(identityError(Q) < 1e-14, `Q'Q = I (${identityError(Q)})`);
    assert.ok(maxAbsDiff(matmul(Q, R).data, X.data) < 1e-13);
    for (let i = 0; i < R.rows; i++) for (let j = 0; j < Math.min(i, R.cols); j++) assert.equal(R.data[i * R.cols + j], 0);
  }
});

test('Jacobi SVD reconstructs and orders; values-only agrees', () => {
  for (const [m, n] of [
    [9, 6],
    [6, 9],
    [16, 16],
  ]) {
    const M = gaussian(m, n, 5 + m);
    const { U, s, V } = svd(M);
    for (let i = 1; i < s.length; i++) assert.ok(s[i - 1] >= s[i]);
    const US = fromRows(U.rows, U.cols, U.data);
    for (let i = 0; i < US.rows; i++) for (let j = 0; j < US.cols; j++) US.data[i * US.cols + j] *= s[j];
    assert.ok(maxAbsDiff(matmul(US, transpose(V)).data, M.data) < 1e-13);
    assert.ok(identityError(U) < 1e-14 && identityError(V) < 1e-14);
    assert.ok(maxAbsDiff(svd(M, false).s, s) < 1e-14);
  }
});

test('singular values of a product from its factors: exact on a known spectrum, from Cholesky and Householder paths', () => {
  const s = [5, 3, 1, 1e-3, 1e-7, 0];
  const m = 40;
  const n = 33;
  // L Rᵀ with L = U diag(s), R = V: the spectrum is s; a zero column makes L's Gram singular (Householder path).
  const U = householderQR(gaussian(m, 6, 11)).Q;
  const V = householderQR(gaussian(n, 6, 12)).Q;
  const L = fromRows(m, 6, U.data);
  for (let i = 0; i < m; i++) for (let j = 0; j < 6; j++) L.data[i * 6 + j] *= s[j];
  const got = productSingularValues(L, V);
  assert.ok(maxAbsDiff(got, s) < 1e-14 * 5, `${Array.from(got)}`);
  // Well-conditioned factors take the Gram (Cholesky) path.
  const A = gaussian(m, 6, 13);
  const B = gaussian(n, 6, 14);
  const exact = svd(matmul(A, transpose(B)), false).s.subarray(0, 6);
  assert.ok(maxAbsDiff(productSingularValues(A, B), exact) < 1e-13 * exact[0]);
  assert.ok(Math.abs(productNorm(A, B) - Math.hypot(...exact)) < 1e-13 * exact[0]);
  assert.equal(energyRank(s, 0.99), 3);
  assert.equal(energyRank(s, 0.9), 2);
  // σ5² = 1e-14 is below the rounding of the 35-unit total: a fraction of 1 is met without it.
  assert.equal(energyRank(s, 1), 4);
  assert.equal(energyRank([0, 0], 0.99), 0);
});

test('Gram of rows matches XᵀX', () => {
  const X = gaussian(23, 5, 3);
  assert.ok(maxAbsDiff(gramOfRows(X.data, 23, 5).data, matmul(transpose(X), X).data) < 1e-13);
});

test('best rank-k factors of a product reach the Eckart–Young error', () => {
  const A = gaussian(50, 8, 21);
  const B = gaussian(37, 8, 22);
  const p = productSVD(A, B);
  const k = 3;
  const { left, right } = truncatedFactors(p, k);
  const full = matmul(A, transpose(B));
  const approx = matmul(left, transpose(right));
  let err = 0;
  for (let i = 0; i < full.data.length; i++) err += (full.data[i] - approx.data[i]) ** 2;
  const tail = Array.from(p.core.s.subarray(k)).reduce((a, x) => a + x * x, 0);
  assert.ok(Math.abs(Math.sqrt(err) - Math.sqrt(tail)) < 1e-12 * p.core.s[0]);
});

test('randomized SVD: exact with a full sketch, near the optimum on a decaying spectrum', async () => {
  const s = Array.from({ length: 30 }, (_, i) => Math.pow(0.7, i));
  const M = withSpectrum(80, 60, s, 40);
  const f32 = Float32Array.from(M.data);
  const exact = svd(fromRows(80, 60, f32), false).s;
  const full = await randomizedSVD(denseOperator(f32, 80, 60), 60, { oversample: 0, powerIterations: 0, seed: 3 });
  assert.ok(maxAbsDiff(full.s, exact) < 1e-13);
  const k = 8;
  const r = await randomizedSVD(denseOperator(f32, 80, 60), k, { oversample: 8, powerIterations: 2, seed: 3 });
  for (let i = 0; i < k; i++) assert.ok(Math.abs(r.s[i] - exact[i]) < 1e-9 * exact[0], `σ${i}: ${r.s[i]} vs ${exact[i]}`);
});

test('against numpy/LAPACK: SVD, product spectrum, randomized SVD', (t) => {
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  const M = gaussian(24, 17, 77);
  const A = gaussian(300, 12, 78);
  const B = gaussian(41, 12, 79);
  const script = [
    'import json, sys, numpy as np',
    'd = json.load(sys.stdin)',
    'M = np.array(d["M"]).reshape(24, 17)',
    'A = np.array(d["A"]).reshape(300, 12); B = np.array(d["B"]).reshape(41, 12)',
    'print(json.dumps({"M": np.linalg.svd(M, compute_uv=False).tolist(), "P": np.linalg.svd(A @ B.T, compute_uv=False)[:12].tolist()}))',
  ].join('\n');
  const r = spawnSync(py.python, ['-c', script], { input: JSON.stringify({ M: Array.from(M.data), A: Array.from(A.data), B: Array.from(B.data) }), encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const ref = JSON.parse(r.stdout) as { M: number[]; P: number[] };
  assert.ok(maxAbsDiff(svd(M, false).s, ref.M) < 1e-12 * ref.M[0]);
  assert.ok(maxAbsDiff(productSingularValues(A, B), ref.P) < 1e-12 * ref.P[0]);
});

test('dense operator products equal plain float64 products on ragged shapes (row and column remainders)', async () => {
  for (const [m, n, l] of [
    [7, 5, 3],
    [9, 11, 6],
    [4, 8, 4],
    [1, 3, 5],
  ]) {
    const M = Float32Array.from(gaussian(m, n, m + n).data);
    const Mf = fromRows(m, n, M);
    const op = denseOperator(M, m, n);
    const X = gaussian(n, l, 3);
    const Y = gaussian(m, l, 4);
    assert.ok(maxAbsDiff((await op.times(X)).data, matmul(Mf, X).data) < 1e-13);
    assert.ok(maxAbsDiff((await op.timesT(Y)).data, matmul(transpose(Mf), Y).data) < 1e-13);
  }
});
