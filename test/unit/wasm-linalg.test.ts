/**
 * The low-rank toolbox's WebAssembly kernels (kernels/wasm/linalg.wat) against their JavaScript
 * references (linalg/products.ts, linalg/taskVector.ts): bit for bit, on the calling thread and through
 * the worker pool, at every shape class each kernel treats apart (row blocks of 3 with 1 or 2 rows left
 * over, contraction tiles, padded columns, odd panel and row lengths, Gram columns not a multiple of 4,
 * Jacobi columns of odd length), on values whose sums depend on their order. Then the jobs' own entry
 * points: spectrum's module op, extract's module op and read pass.
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { LinalgPool } from '../../src/engine/kernels/linalgPool';
import { Arena, GEMM_COLUMNS, LinalgWasm, linalgModule } from '../../src/engine/kernels/wasmLinalg';
import { fromRows, transpose } from '../../src/engine/linalg/dense';
import { productSingularValues } from '../../src/engine/linalg/lowrank';
import { jacobiSweeps, svd } from '../../src/engine/linalg/svd';
import { householderQR } from '../../src/engine/linalg/qr';
import { gemmRef, GRAM_PANEL, gramRef, residualRowsRef, residualSqRef } from '../../src/engine/linalg/products';
import { factorModule, ModuleSpec } from '../../src/engine/linalg/moduleFactors';
import { denseOperator } from '../../src/engine/linalg/randomized';
import { randomF32 } from './helpers/builders';
import { countExponents, taskVectorRef } from '../../src/engine/linalg/taskVector';
import { bytesToF32 } from '../../src/engine/safetensors/reader';
import { encodeBf16, encodeF16 } from '../../src/shared/safetensors/half';
import { FloatDtype } from '../../src/shared/safetensors/dtypes';
import { TensorInfo } from '../../src/shared/safetensors/header';

const compiled = linalgModule();

/** Values of many magnitudes, with exact cancellations, zeros and signed zeros: sums that change with their order. */
function values(n: number, seed: number): Float32Array {
  const x = randomF32(n, seed, 1);
  for (let i = 0; i < n; i++) {
    if (i % 7 === 3) x[i] *= 2 ** 40;
    if (i % 11 === 5) x[i] *= 2 ** -40;
    if (i % 13 === 0) x[i] = 0;
    if (i % 17 === 1) x[i] = -0;
  }
  return x;
}

function assertSameBits(got: Float64Array, want: Float64Array, label: string): void {
  assert.equal(got.length, want.length, label);
  const g = new BigUint64Array(got.buffer, got.byteOffset, got.length);
  const w = new BigUint64Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < w.length; i++) if (g[i] !== w[i]) assert.fail(`${label}: element ${i}: ${got[i]} vs ${want[i]}`);
}

function placed(arena: Arena, x: Float32Array): number {
  const at = arena.alloc(x.length * 4)!;
  arena.f32(at, x.length).set(x);
  return at;
}

test('the low-rank WebAssembly module is built and loads', () => {
  assert.ok(compiled, 'dist/linalg.wasm is missing: run npm run build');
});

test('wasm Gram: bit-identical to gramRef (rows of B and of A, ragged panels and columns)', () => {
  const arena = new Arena();
  const w = new LinalgWasm(arena.memory, compiled!);
  for (const [c, count] of [
    [1, 1],
    [3, 7],
    [5, GRAM_PANEL + 3],
    [8, 2 * GRAM_PANEL],
    [13, 3 * GRAM_PANEL + 1],
    [64, 700],
  ]) {
    const x = values(c * count, c + count);
    const at = placed(arena, x);
    const scratch = arena.alloc(LinalgWasm.gramScratch(c))!;
    // As BᵀB of count × c rows, then as AAᵀ of c × count rows.
    assertSameBits(w.gram(at, c, count, 1, c, scratch), gramRef(x, c, count, 1, c), `BᵀB ${count}x${c}`);
    assertSameBits(w.gram(at, c, count, count, 1, scratch), gramRef(x, c, count, count, 1), `AAᵀ ${c}x${count}`);
    arena.free(at);
    arena.free(scratch);
  }
});

test('wasm gemm: bit-identical to gemmRef, M and its transpose, every row remainder and several tiles', () => {
  const arena = new Arena();
  const w = new LinalgWasm(arena.memory, compiled!);
  for (const [m, n, l] of [
    [1, 1, 1],
    [2, 5, 6],
    [3, 300, 7],
    [10, 257, 24],
    [31, 600, 13],
  ]) {
    const M = values(m * n, m * n);
    const at = placed(arena, M);
    for (const [rows, K, sr, sk] of [
      [m, n, n, 1],
      [n, m, 1, n],
    ]) {
      const lp = Math.ceil(l / GEMM_COLUMNS) * GEMM_COLUMNS;
      const X = Float64Array.from(values(K * lp, K + l));
      for (let k = 0; k < K; k++) X.fill(0, k * lp + l, (k + 1) * lp);
      const xb = arena.alloc(X.byteLength)!;
      arena.f64(xb, X.length).set(X);
      const yb = arena.alloc(rows * lp * 8)!;
      w.gemm(at, sr, sk, rows, K, xb, lp, yb);
      const want = new Float64Array(rows * lp);
      gemmRef(M, sr, sk, rows, K, X, lp, lp, want, lp);
      assertSameBits(arena.f64(yb, rows * lp).slice(), want, `${rows}x${K} · ${K}x${l}`);
      arena.free(xb);
      arena.free(yb);
    }
    arena.free(at);
  }
});

test('wasm residual rows: bit-identical to residualRowsRef (8-column blocks, pairs, an odd last column)', () => {
  const arena = new Arena();
  const w = new LinalgWasm(arena.memory, compiled!);
  for (const [m, n, k] of [
    [1, 1, 1],
    [3, 9, 2],
    [5, 19, 4],
    [4, 64, 16],
  ]) {
    const tau = values(m * n, 1 + n);
    const P = values(m * k, 2 + n);
    const Qt = values(k * n, 3 + n);
    const out = arena.alloc(m * 8)!;
    const wide = (x: Float32Array): number => {
      const at = arena.alloc(x.length * 8)!;
      arena.f64(at, x.length).set(x);
      return at;
    };
    w.residual(placed(arena, tau), wide(P), wide(Qt), m, k, n, out);
    const want = new Float64Array(m);
    residualRowsRef(tau, P, Qt, m, k, n, want);
    assertSameBits(arena.f64(out, m).slice(), want, `${m}x${n} rank ${k}`);
  }
});

test('wasm Jacobi sweeps: bit-identical to jacobiSweeps (odd and even rows, wide and rank-deficient cores)', () => {
  const arena = new Arena();
  const w = new LinalgWasm(arena.memory, compiled!);
  for (const [m, n] of [
    [1, 1],
    [2, 2],
    [7, 5],
    [16, 16],
    [33, 20],
    [64, 64],
  ]) {
    const M = fromRows(m, n, values(m * n, m + 7 * n));
    if (n > 2) M.data.copyWithin(0, n, 2 * n); // two equal rows
    const scratch = arena.alloc(LinalgWasm.gramScratch(Math.max(m, n)))!;
    const ld = m + (m % 2);
    const u = new Float64Array(ld * n);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) u[j * ld + i] = M.data[i * n + j];
    const want = u.slice();
    jacobiSweeps(want, ld, m, n);
    w.sweeps(scratch)(u, ld, m, n);
    assertSameBits(u, want, `${m}x${n}`);
    assertSameBits(svd(M, false, w.sweeps(scratch)).s, svd(M, false).s, `σ ${m}x${n}`);
    arena.free(scratch);
  }
});

test('wasm Householder QR: bit-identical to householderColumns (tall, wide, square, every length mod 4, a zero and a repeated column)', () => {
  const arena = new Arena();
  const w = new LinalgWasm(arena.memory, compiled!);
  for (const [m, n] of [
    [1, 1],
    [2, 3],
    [5, 2],
    [7, 7],
    [33, 6],
    [300, 24],
    [301, 25],
    [302, 13],
    [12, 40],
  ]) {
    const X = fromRows(m, n, values(m * n, m + 3 * n));
    if (n > 3) for (let i = 0; i < m; i++) X.data[i * n + 1] = 0;
    if (n > 4) for (let i = 0; i < m; i++) X.data[i * n + 4] = X.data[i * n + 2];
    const ws = arena.alloc(LinalgWasm.workspaceBytes(m, n, n))!;
    const got = householderQR(X, w.householderColumns(ws));
    const want = householderQR(X);
    assertSameBits(got.Q.data, want.Q.data, `Q ${m}x${n}`);
    assertSameBits(got.R.data, want.R.data, `R ${m}x${n}`);
    arena.free(ws);
  }
});

test('LinalgPool.factorModule on workers, two modules at once: the same bits as the JavaScript references (rank and energy, Linear and Conv1D)', async () => {
  const pool = new LinalgPool(2);
  try {
    const [m, n] = [301, 97];
    const src = values(m * n, 5);
    const base = { m, n, oversample: 8, powerIterations: 2, seed: 3, transposed: false, normSq: src.reduce((a, x) => a + x * x, 0) };
    const specs: ModuleSpec[] = [
      { ...base, rank: 7 },
      { ...base, rank: 13, transposed: true },
      { ...base, energy: 0.999 },
    ];
    const taus = specs.map(() => pool.floats(m * n).fill(0));
    taus.forEach((t) => t.set(src));
    const got = await Promise.all(specs.map((spec, i) => pool.factorModule(taus[i], spec)));
    for (const [i, spec] of specs.entries()) {
      const want = await factorModule(denseOperator(src, m, n), (P, Qt, k) => residualSqRef(src, P, Qt, m, k, n), spec);
      const label = JSON.stringify({ rank: spec.rank, energy: spec.energy, transposed: spec.transposed });
      assert.equal(got[i].k, want.k, label);
      assertSameBits(got[i].s, want.s, `σ ${label}`);
      assertSameBits(Float64Array.from(got[i].A), Float64Array.from(want.A), `A ${label}`);
      assertSameBits(Float64Array.from(got[i].B), Float64Array.from(want.B), `B ${label}`);
      assert.equal(got[i].residualSq, want.residualSq, label);
      pool.release(taus[i]);
    }
  } finally {
    await pool.dispose();
  }
});

test('LinalgPool spectrum of factors: equals the Householder product spectrum to 1e-13, and handles a wide B and a rank-deficient A', async () => {
  const pool = new LinalgPool(2);
  try {
    for (const [out, inn, r] of [
      [40, 33, 6],
      [4, 50, 6], // fewer output rows than the rank: B's R factor by Householder
      [700, 300, 16],
    ]) {
      const A = pool.floats(r * inn);
      const B = pool.floats(out * r);
      A.set(randomF32(r * inn, out, 0.1));
      B.set(randomF32(out * r, inn, 0.1));
      if (out === 40) A.set(A.subarray(0, inn), inn); // two equal rows: AAᵀ singular, Cholesky refuses it
      const got = await pool.factorSingularValues(A, B, r, inn, out);
      const want = productSingularValues(fromRows(out, r, B), transpose(fromRows(r, inn, A)));
      assert.equal(got.length, want.length);
      for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) <= 1e-13 * want[0], `${out}x${inn} r${r} σ${i}: ${got[i]} vs ${want[i]}`);
      pool.release(A);
      pool.release(B);
    }
  } finally {
    await pool.dispose();
  }
});

/** x stored as `dtype`'s raw bytes. */
function raw(dtype: 'F32' | 'BF16' | 'F16', x: Float32Array): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(x.slice().buffer);
  const h = new Uint16Array(x.length);
  (dtype === 'BF16' ? encodeBf16 : encodeF16)(x, h);
  return new Uint8Array(h.buffer);
}

test('task vector blocks: the same bits as taskVectorRef for fp32, bf16 (WebAssembly) and fp16 on either side, remainders, and a stop at the first NaN or Inf', () => {
  const pool = new LinalgPool(1);
  const dtypes = ['F32', 'BF16', 'F16'] as const;
  for (const n of [1, 3, 4, 7, 1000, 4099])
    for (const wt of dtypes)
      for (const ft of dtypes)
        for (const bad of [-1, 0, n - 1, Math.floor(n / 2)]) {
          const w = values(n, n + 1);
          const f = values(n, n + 2);
          for (let i = 0; i < n; i += 5) f[i] = w[i]; // exact zeros
          if (bad >= 0) (bad % 2 ? w : f)[bad] = bad % 3 ? NaN : -Infinity;
          const [rw, rf] = [raw(wt, w), raw(ft, f)];
          const sw = pool.staging('base', rw.byteLength);
          const sf = pool.staging('ft', rf.byteLength);
          sw.set(rw);
          sf.set(rf);
          const out = pool.floats(n, false);
          const acc = { normSq: 0.5 };
          const got = pool.taskVectorBlock(wt, sw, ft, sf, n, out, acc);
          const decode = (d: FloatDtype, r: Uint8Array): Float32Array => bytesToF32({ dtype: d, numel: n } as TensorInfo, r, new Float32Array(n));
          const want = new Float32Array(n);
          const wantAcc = { normSq: 0.5 };
          const label = `${wt}−${ft} n=${n} bad=${bad}`;
          assert.equal(got, taskVectorRef(decode(wt, rw), decode(ft, rf), want, wantAcc), label);
          assert.equal(acc.normSq, wantAcc.normSq, label);
          const upTo = got < 0 ? n : got;
          assertSameBits(Float64Array.from(out.subarray(0, upTo)), Float64Array.from(want.subarray(0, upTo)), label);
          pool.release(out);
        }
});

test('exponent histograms: WebAssembly equals countExponents, bf16 and fp16, remainders', () => {
  const pool = new LinalgPool(1);
  for (const dtype of ['BF16', 'F16'] as const)
    for (const n of [1, 5, 8, 1003]) {
      const r = raw(dtype, values(n, n));
      const staged = pool.staging('ft', r.byteLength);
      staged.set(r);
      const got = new Float64Array(256).fill(2);
      pool.countExponents(dtype, staged, got);
      pool.countExponents(dtype, staged, got);
      const want = new Float64Array(256).fill(2);
      countExponents(dtype, r, want);
      countExponents(dtype, r, want);
      assert.deepEqual(got, want, `${dtype} n=${n}`);
    }
});
