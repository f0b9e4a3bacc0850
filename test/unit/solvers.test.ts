import assert from 'node:assert/strict';
import { test } from 'node:test';
import { normalEquations } from '../../src/engine/jobs/decompose';
import { lambdaMax, lasso, nnls, omp, solveOn } from '../../src/engine/unmerge/solvers';
import { randomF32 } from './helpers/builders';

function combo(D: Float32Array[], c: number[], noise = 0, seed = 99): Float32Array {
  const n = D[0].length;
  const e = randomF32(n, seed, noise);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) y[i] = D.reduce((a, d, j) => a + c[j] * d[i], 0) + e[i];
  return y;
}

const dictionary = (m: number, n = 400): Float32Array[] => Array.from({ length: m }, (_, j) => randomF32(n, 11 + j));

test('NNLS and OMP recover a sparse non-negative combination exactly', () => {
  const D = dictionary(6);
  const c = [0.7, 0, 1.3, 0, 0, 0.25];
  const p = normalEquations(D, combo(D, c));
  for (const [name, x] of [
    ['nnls', nnls(p).x],
    ['omp', omp(p, { tol: 1e-6, minCorrelation: 1e-3, minT: 5 }).x],
  ] as const) {
    c.forEach((v, j) => assert.ok(Math.abs(x[j] - v) < 1e-6, `${name} c[${j}] = ${x[j]}, expected ${v}`));
  }
});

test('NNLS keeps coefficients non-negative where least squares would go negative', () => {
  const D = dictionary(4);
  const p = normalEquations(D, combo(D, [1, -0.8, 0.5, 0]));
  const { x, converged } = nnls(p);
  assert.ok(converged);
  assert.ok([...x].every((v) => v >= 0));
  assert.equal(x[1], 0);
  // KKT: every zero coefficient has a non-positive correlation with the residual.
  for (let j = 0; j < 4; j++) {
    if (x[j] > 0) continue;
    let w = p.b[j];
    for (let k = 0; k < 4; k++) w -= p.G[j * 4 + k] * x[k];
    assert.ok(w <= 1e-9, `w[${j}] = ${w}`);
  }
});

test('OMP stops once the fit has converged and does not pick atoms out of noise', () => {
  const D = dictionary(8, 2000);
  const y = combo(D, [0, 2, 0, 0, 0.5, 0, 0, 0], 1e-5);
  const r = omp(normalEquations(D, y), { tol: 1e-9, minCorrelation: 1e-3, minT: 5 });
  assert.deepEqual(r.steps.map((s) => s.atom).sort(), [1, 4]);
  assert.match(r.stopReason, /correlation/);
  assert.equal([...r.x].filter((v) => v !== 0).length, 2);
});

test('OMP skips an atom collinear with the chosen ones', () => {
  const D = dictionary(3);
  D.push(D[0].map((v) => 2 * v));
  const r = omp(normalEquations(D, combo(D, [1, 0.5, 0, 0])), { tol: 1e-9, minCorrelation: 1e-3, minT: 5 });
  assert.ok(Math.abs(r.x[0] + 2 * r.x[3] - 1) < 1e-6);
  assert.ok(Math.abs(r.x[1] - 0.5) < 1e-6);
});

test('LASSO: lambdaMax gives all zeros, a small lambda nearly the least-squares answer, shrunk toward zero', () => {
  const D = dictionary(5);
  const c = [1, 0, 0.5, 0, 0];
  const p = normalEquations(D, combo(D, c));
  const lmax = lambdaMax(p, false);
  assert.ok(lasso(p, { lambda: lmax * 1.0000001, positive: false }).x.every((v) => v === 0));
  const small = lasso(p, { lambda: lmax * 1e-4, positive: true });
  assert.ok(small.converged);
  c.forEach((v, j) => assert.ok(Math.abs(small.x[j] - v) < 1e-3, `c[${j}] = ${small.x[j]}`));
  assert.ok(small.x[0] < 1 && small.x[0] > 0.999);
});

test('solveOn refuses a singular subsystem', () => {
  const D = dictionary(2);
  D.push(D[0].slice());
  const p = normalEquations(D, D[1]);
  assert.equal(solveOn(p, [0, 2]), null);
  assert.ok(solveOn(p, [0, 1]) !== null);
});
