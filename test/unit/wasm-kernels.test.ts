/**
 * The WebAssembly LoRA kernel (the CPU backend's default) against the JavaScript reference in cpuMath.ts:
 * bit for bit on random factors with every special value (subnormals, NaN, infinities, signed zeros,
 * sparse and zero rows of B, sums that overflow fp32 only after the scale), at every shape class the
 * kernel treats apart (16-column blocks, pairs, a last odd column, partial tiles, transposed output).
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { loraDeltaRows, maxAbsRange } from '../../src/engine/kernels/cpuMath';
import { LoraFactors } from '../../src/engine/kernels/kernels';
import { PARALLEL_MIN, WorkerKernels } from '../../src/engine/kernels/poolKernels';
import { foldLoraRows, wasmLora } from '../../src/engine/kernels/wasm';
import { decodeBf16Array } from '../../src/shared/safetensors/half';
import { randomF32 } from './helpers/builders';

const wasm = wasmLora();

/** Factors with specials: NaN and infinities in A, subnormal and huge products, zero and NaN entries of B. */
function factors(out: number, inn: number, r: number, seed: number, transpose = false, scale = 2): LoraFactors {
  const A = randomF32(r * inn, seed, 0.05);
  const B = randomF32(out * r, seed + 1, 0.05);
  for (let i = 0; i < B.length; i += 5) B[i] = 0; // sparse rows: an Inf or NaN of A times a skipped 0 must not appear
  for (let i = 3; i < B.length; i += 97) B[i] = -0;
  if (out > 2) B.fill(0, 2 * r, 3 * r); // an all-zero row: its delta is +0 * scale
  const specialA = [NaN, Infinity, -Infinity, -0, 1e-45, -3e-42, 1.1754942e-38, 3.4e38, -3.4e38, 1e30];
  for (let i = 0; i < specialA.length; i++) A[(i * 7919 + seed) % A.length] = specialA[i];
  const specialB = [1e-40, -1e-44, 3e38, 1e30, NaN];
  for (let i = 0; i < specialB.length; i++) B[(i * 104729 + 17 * seed) % B.length] = specialB[i];
  // Row 1, column 1: 1 + 2^60 - 2^60 + 2 is 2 in ascending order only (3 exactly, 0 summed pairwise, 1
  // in reverse); column 0: 3.0000002 - 3, an exact cancellation.
  if (out > 1 && r >= 4 && inn >= 2) {
    B.fill(0, r, 2 * r);
    B.set([1, 1, 1, 1], r);
    A.set([3.0000002, 1], 0);
    A.set([-3, 2 ** 60], inn);
    A.set([0, -(2 ** 60)], 2 * inn);
    A.set([0, 2], 3 * inn);
  }
  return { A, B, r, out, in: inn, scale, transpose };
}

function bits(x: Float32Array): Uint32Array {
  return new Uint32Array(x.buffer, x.byteOffset, x.length);
}

function assertSameBits(got: Float32Array, want: Float32Array, label: string): void {
  const g = bits(got);
  const w = bits(want);
  for (let i = 0; i < w.length; i++) {
    // Every NaN the kernels produce has its payload from the same x86 instructions; compare exactly.
    if (g[i] !== w[i]) assert.fail(`${label}: element ${i}: ${got[i]} (0x${g[i].toString(16)}) vs ${want[i]} (0x${w[i].toString(16)})`);
  }
}

test('the WebAssembly module is built and loads', () => {
  assert.ok(wasm, 'dist/kernels.wasm is missing: run npm run build');
});

test('wasm loraDelta rows: bit-identical to loraDeltaRows at every shape class', () => {
  // in: 16-column blocks only, + pairs, + an odd last column, wider than one tile (W = 128 at r = 32), partial tiles.
  const shapes: Array<[number, number, number]> = [
    [7, 16, 4], [5, 18, 3], [9, 33, 8], [3, 1, 2], [1, 5, 1], [40, 300, 32], [33, 257, 17], [6, 1000, 64], [4, 70, 0], [2, 12, 130],
  ];
  let seed = 1;
  for (const [out, inn, r] of shapes) {
    for (const transpose of [false, true]) {
      for (const scale of [2, 0.125, 1 / 3, 3e38]) {
        const f = factors(out, inn, r, seed++, transpose, scale);
        const want = new Float32Array(out * inn);
        loraDeltaRows(f, 0, out, want);
        const got = new Float32Array(out * inn).fill(7);
        wasm!.rows([f], 0, out, got, 'write');
        if (out > 1 && r >= 4 && inn >= 2 && !transpose) assert.equal(want[inn + 1], Math.fround(2 * scale), 'the order-sensitive sum');
        assertSameBits(got, want, `${out}x${inn} r=${r} transpose=${transpose} scale=${scale}`);
        // A slice of rows leaves the others alone.
        const part = new Float32Array(out * inn).fill(7);
        const ref = part.slice();
        const r0 = Math.floor(out / 3), r1 = Math.max(r0, out - 1);
        loraDeltaRows(f, r0, r1, ref);
        wasm!.rows([f], r0, r1, part, 'write');
        assertSameBits(part, ref, `rows [${r0}, ${r1}) of ${out}x${inn}`);
      }
    }
  }
});

test('wasm loraDelta rows: neighbouring rows with the same nonzero factors (the two-row block), bit-identical when written and folded', () => {
  let seed = 500;
  for (const [out, inn, r] of [[40, 300, 32], [9, 33, 8], [33, 257, 17], [6, 1000, 64], [2, 12, 130], [7, 9, 4]] as Array<[number, number, number]>) {
    for (const transpose of [false, true]) {
      const f = factors(out, inn, r, seed++, transpose, 1 / 3);
      // The same zero columns in every row; the -0 entries and specials of factors() still set some rows apart.
      const fill = randomF32(out * r, seed, 0.05);
      for (let i = 0; i < f.B.length; i++) if (f.B[i] === 0 && !Object.is(f.B[i], -0)) f.B[i] = fill[i] || 0.01;
      for (let i = 0; i < out; i++) for (let k = 0; k < r; k += 5) f.B[i * r + k] = 0;
      const want = new Float32Array(out * inn);
      loraDeltaRows(f, 0, out, want);
      const got = new Float32Array(out * inn).fill(7);
      wasm!.rows([f], 0, out, got, 'write');
      assertSameBits(got, want, `${out}x${inn} r=${r} transpose=${transpose}`);
      const start = randomF32(out * inn, seed, 0.01).map(Math.abs);
      const folded = start.slice();
      maxAbsRange(folded, want, 0, folded.length);
      const fold = start.slice();
      wasm!.rows([f], 0, out, fold, 'fold');
      assertSameBits(fold, folded, `fold ${out}x${inn} r=${r} transpose=${transpose}`);
    }
  }
});

test('wasm loraDelta rows: blocks of rows larger than one call (many rows, wide rows)', () => {
  const f = factors(300, 3584 / 8, 32, 99);
  const want = new Float32Array(f.out * f.in);
  loraDeltaRows(f, 0, f.out, want);
  const got = new Float32Array(f.out * f.in);
  wasm!.rows([f], 0, f.out, got, 'write');
  assertSameBits(got, want, '300x448');
});

test('wasm fold: max over adapters of |delta| equals loraDeltaRows then maxAbsRange, in any starting aggregate', () => {
  for (const [out, inn, r] of [[37, 91, 16], [12, 300, 32], [5, 3, 2]] as Array<[number, number, number]>) {
    for (const transpose of [false, true]) {
      // Ranks and scales of their own, as adapters of one module have.
      const sets = [0, 1, 2].map((s) => factors(out, inn, r + 3 * s, 50 + s, transpose, s === 2 ? 1e38 : 2 + s));
      const start = randomF32(out * inn, 7, 0.001).map(Math.abs);
      start[1] = -0;
      start[2] = Infinity;
      const want = start.slice();
      const delta = new Float32Array(out * inn);
      for (const f of sets) {
        loraDeltaRows(f, 0, out, delta);
        maxAbsRange(want, delta, 0, want.length);
      }
      const got = start.slice();
      wasm!.rows(sets, 0, out, got, 'fold');
      assertSameBits(got, want, `fold ${out}x${inn} r=${r} transpose=${transpose}`);
      // The JavaScript fold (where the module is missing), on a slice of rows and the rest.
      const js = start.slice();
      const mid = Math.floor(out / 2);
      foldLoraRows(sets, 0, mid, js, null);
      foldLoraRows(sets, mid, out, js, null);
      assertSameBits(js, want, `JavaScript fold ${out}x${inn} r=${r} transpose=${transpose}`);
    }
  }
});

test('the worker backend expands and folds in WebAssembly on its threads, bit-identical to the JavaScript reference', async () => {
  const k = new WorkerKernels(2);
  try {
    assert.match(k.description, /WebAssembly SIMD/);
    for (const transpose of [false, true]) {
      const f = factors(Math.ceil((3 * PARALLEL_MIN) / 517), 517, 24, 5, transpose);
      const want = new Float32Array(f.out * f.in);
      loraDeltaRows(f, 0, f.out, want);
      assertSameBits(await k.loraDelta(f), want, `workers transpose=${transpose}`);

      // maxAbsLoraInto: three adapters folded on the workers (into shared memory or not) and on the main thread.
      const sets = [f, factors(f.out, f.in, 8, 6, transpose, 1e38), factors(f.out, f.in, 33, 7, transpose, 0.5)];
      const fold = new Float32Array(want.length);
      for (const g of sets) {
        loraDeltaRows(g, 0, g.out, want);
        maxAbsRange(fold, want, 0, fold.length);
      }
      const shared = new Float32Array(new SharedArrayBuffer(fold.byteLength));
      assertSameBits(await k.maxAbsLoraInto(shared, sets), fold, `workers fold, shared, transpose=${transpose}`);
      assertSameBits(await k.maxAbsLoraInto(new Float32Array(fold.length), sets), fold, `workers fold, transpose=${transpose}`);
      assertSameBits(await new CpuKernels().maxAbsLoraInto(new Float32Array(fold.length), sets), fold, `main-thread fold, transpose=${transpose}`);
    }
  } finally {
    await k.dispose();
  }
});

test('wasm bf16 widening: bit-identical to decodeBf16Array on every bf16 pattern, at lengths off the block and the vector width', () => {
  const all = Uint16Array.from({ length: 65536 * 3 + 13 }, (_, i) => (i * 40503) & 0xffff);
  for (const n of [0, 1, 7, 8, 9, (1 << 15) + 5, all.length]) {
    const src = all.subarray(all.length - n);
    const want = decodeBf16Array(src, new Float32Array(n));
    const got = wasm!.decodeBf16(src, new Float32Array(n));
    assertSameBits(got, want, `bf16 x ${n}`);
  }
});
