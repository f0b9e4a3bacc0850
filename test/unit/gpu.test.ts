/**
 * The GPU backend against the CPU reference on every kernel: tensors bit for bit, statistics within
 * 1e-6 relative. Runs on whatever WebGPU adapter is present; in CI that is lavapipe (scripts/run-tests.mjs
 * sets it up and sets LORA_LENS_GPU_TESTS=required, so a missing driver fails instead of skipping).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { GpuKernels } from '../../src/engine/kernels/gpu/gpuKernels';
import { HalfDtype, LoraFactors, MergeDtype, PairStats, PrecisionStats } from '../../src/engine/kernels/kernels';
import { MERGE_RULES } from '../../src/shared/jobs/choices';
import { ALLOW_SOFTWARE_GPU_ENV } from '../../src/engine/kernels/gpu/dawn';
import { gpuKernels } from '../../src/engine/kernels/select';
import { openGpu } from '../../src/engine/kernels/gpu/dawn';
import { quietContext } from '../../src/engine/util/job';
import { randomF32, rng } from './helpers/builders';

process.env[ALLOW_SOFTWARE_GPU_ENV] ??= '1';
const mode = process.env.LORA_LENS_GPU_TESTS;
const cpu = new CpuKernels();
const ctx = quietContext();
let gpu: GpuKernels | undefined;
let skip: string | false = false;

before(async () => {
  if (mode === 'skip') {
    skip = 'LORA_LENS_GPU_TESTS=skip (scripts/run-tests.mjs runs them in their own step, on lavapipe)';
    console.log(`# gpu tests skipped: ${skip}`);
    return;
  }
  // Small chunks and row blocks, so that every size crosses several of them.
  const k = await gpuKernels(ctx, { chunkElements: 4098, blockBytes: 40 * 1024 });
  if (typeof k === 'string') {
    if (mode === 'required') throw new Error(`GPU tests required but no WebGPU adapter: ${k}`);
    skip = `no WebGPU adapter: ${k}`;
    console.log(`# gpu tests skipped: ${skip}`);
  } else gpu = k;
});
after(async () => gpu?.dispose());

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const fromBits = (b: number): number => ((u32[0] = b), f32[0]);

/** Values that stress the exactness rules: NaN, infinities, signed zeros, subnormals, extremes, fp16 ties. */
function specials(): number[] {
  const v = [
    NaN,
    Infinity,
    -Infinity,
    0,
    -0,
    1e-45,
    -1e-45,
    1e-40,
    2 ** -126,
    2 ** -110,
    3e38,
    -3e38,
    65504,
    65519.99,
    65520,
    1e5,
    2 ** -24,
    2 ** -25,
    1.5 * 2 ** -25,
  ];
  for (let k = 0; k < 64; k++) v.push(fromBits(((0x38800000 + k * 0x1234567) & ~0x1fff & 0x7fffffff) | 0x1000)); // exact fp16 ties
  for (let k = 0; k < 64; k++) v.push(fromBits(((0x3c000000 + k * 0x7654321) & 0x7fff0000) | 0x8000)); // exact bf16 ties
  return v;
}

/** w: weight-like values with the specials spread through; d: small deltas with their own specials. */
function mergeInputs(n: number, seed: number): [Float32Array, Float32Array] {
  const w = randomF32(n, seed, 0.05);
  const d = randomF32(n, seed + 1, 1e-3);
  const r = rng(seed + 2);
  const s = specials();
  for (let i = 0; i < n; i += 37) w[i] = s[Math.floor((r() + 1) * 0.5 * s.length)];
  for (let i = 5; i < n; i += 41) d[i] = s[Math.floor((r() + 1) * 0.5 * s.length)];
  for (let i = 11; i < n; i += 53) d[i] = -w[i]; // exact cancellation to zero
  for (let i = 13; i < n; i += 59) d[i] = 0;
  return [w, d];
}

function assertBytesEqual(got: Uint8Array, want: Uint8Array, what: string): void {
  for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) assert.fail(`${what}: first difference at byte ${i} (${got[i]} vs ${want[i]})`);
}

function close(got: number, want: number, what: string, tol = 1e-6): void {
  if (Number.isNaN(want)) return assert.ok(Number.isNaN(got), `${what}: ${got} vs NaN`);
  const err = Math.abs(got - want) / Math.max(Math.abs(want), 1e-300);
  assert.ok(got === want || err <= tol, `${what}: ${got} vs ${want} (relative ${err.toExponential(2)})`);
}

function assertStatsClose<T extends object>(got: T, want: T, counts: (keyof T)[], what: string): void {
  for (const k of Object.keys(want) as (keyof T)[]) {
    if (counts.includes(k)) assert.equal(got[k], want[k], `${what}: ${String(k)}`);
    else close(got[k] as number, want[k] as number, `${what}: ${String(k)}`);
  }
}

function factors(m: number, n: number, r: number, seed: number, transpose = false, scale = 2): LoraFactors {
  return { A: randomF32(r * n, seed, 0.1), B: randomF32(m * r, seed + 7, 0.1), r, out: m, in: n, scale, transpose };
}

describe('GPU backend agrees with the CPU', () => {
  test('describes its adapter', (t) => {
    if (skip) return t.skip(skip);
    assert.match(gpu!.description, /^GPU: .+/);
    assert.equal(gpu!.device, 'gpu');
  });

  test('rank-r expansion is bit-identical, for ranks 1..64, odd shapes, transposed, several row blocks', async (t) => {
    if (skip) return t.skip(skip);
    const cases: [number, number, number, boolean, number][] = [
      [1, 1, 1, false, 2], [7, 5, 3, false, 0.5], [64, 64, 16, false, 2], [65, 63, 17, true, 1 / Math.sqrt(17)],
      [130, 97, 64, false, 16 / Math.sqrt(64)], [33, 200, 8, true, -1.5], [200, 50, 1, false, 3], [96, 130, 32, true, 0.125], [17, 300, 48, false, 7 / 3],
    ];
    for (const [m, n, r, tr, s] of cases) {
      const f = factors(m, n, r, m * 31 + n, tr, s);
      for (let i = 0; i < m; i += 5) f.B.fill(0, i * r, (i + 1) * r); // zero rows: exact zeros out
      const want = await cpu.loraDelta(f);
      const got = await gpu!.loraDelta(f);
      assertBytesEqual(new Uint8Array(got.buffer), new Uint8Array(want.buffer), `delta ${m}x${n} r=${r} transpose=${tr}`);
    }
  });

  test('rank-r expansion under adversarial cancellation: uncertain elements are recomputed, the result stays exact', async (t) => {
    if (skip) return t.skip(skip);
    const m = 40, n = 70, r = 24;
    const f = factors(m, n, r, 99, false, 1 / Math.sqrt(24));
    // Pairs of factor rows that cancel up to the last bits: sums near zero and near f32 rounding boundaries.
    for (let k = 0; k < r; k += 2) {
      for (let j = 0; j < n; j++) f.A[(k + 1) * n + j] = f.A[k * n + j] * (1 + 2 ** -20 * (j % 3));
      for (let i = 0; i < m; i++) f.B[i * r + k + 1] = -f.B[i * r + k] * (1 + 2 ** -22 * (i % 5));
    }
    const before = gpu!.hostElements + gpu!.hostTensors;
    const want = await cpu.loraDelta(f);
    const got = await gpu!.loraDelta(f);
    assertBytesEqual(new Uint8Array(got.buffer), new Uint8Array(want.buffer), 'adversarial delta');
    assert.ok(gpu!.hostElements + gpu!.hostTensors > before, 'the certificate flagged near-boundary elements');
    // Random factors leave almost every element to the GPU.
    const g = factors(128, 128, 64, 5);
    const b2 = gpu!.hostElements;
    assertBytesEqual(new Uint8Array((await gpu!.loraDelta(g)).buffer), new Uint8Array((await cpu.loraDelta(g)).buffer), 'random delta');
    assert.ok(gpu!.hostElements - b2 < 128 * 128 * 0.01, `few elements on the host (${gpu!.hostElements - b2})`);
  });

  test('non-finite factors fall back to the CPU and say so', async (t) => {
    if (skip) return t.skip(skip);
    const f = factors(9, 11, 4, 3);
    f.A[5] = NaN;
    const n = ctx.warnings.length;
    assertBytesEqual(new Uint8Array((await gpu!.loraDelta(f)).buffer), new Uint8Array((await cpu.loraDelta(f)).buffer), 'NaN delta');
    assert.match(ctx.warnings.slice(n).join('\n'), /computed on the CPU/);
  });

  test('merge is bit-identical under every dtype and rule, with and without a delta', async (t) => {
    if (skip) return t.skip(skip);
    for (const n of [1, 2, 3, 4097, 10001]) {
      const [w, d] = mergeInputs(n, n);
      for (const dtype of ['F32', 'F16', 'BF16'] as MergeDtype[]) {
        for (const rule of MERGE_RULES) {
          for (const delta of [d, null]) {
            const width = dtype === 'F32' ? 4 : 2;
            const want = await cpu.merge(w, delta, dtype, rule, new Uint8Array(n * width));
            const got = await gpu!.merge(w, delta, dtype, rule, new Uint8Array(n * width));
            assertBytesEqual(got, want, `merge n=${n} ${dtype} ${rule} delta=${delta !== null}`);
          }
        }
      }
    }
  });

  test('subtract and maxAbsInto are bit-identical, special values included', async (t) => {
    if (skip) return t.skip(skip);
    const n = 9001;
    const [a, b] = mergeInputs(n, 4);
    const want = await cpu.subtract(a, b, new Float32Array(n));
    const got = await gpu!.subtract(a, b, new Float32Array(n));
    assertBytesEqual(new Uint8Array(got.buffer), new Uint8Array(want.buffer), 'subtract');
    const acc = randomF32(n, 8, 0.01);
    acc[3] = NaN; acc[4] = -0; acc[5] = -1; acc[6] = Infinity;
    b[3] = 5; b[4] = 0; b[5] = 0; b[6] = NaN;
    const ca = await cpu.maxAbsInto(acc.slice(), b);
    const ga = await gpu!.maxAbsInto(acc.slice(), b);
    assertBytesEqual(new Uint8Array(ga.buffer), new Uint8Array(ca.buffer), 'maxAbsInto');
  });

  test('pair statistics match within 1e-6, counts exactly', async (t) => {
    if (skip) return t.skip(skip);
    const counts: (keyof PairStats)[] = ['n', 'aNonzero', 'bNonzero', 'diffNonzero', 'nonFinite'];
    const a = randomF32(20000, 1, 0.02);
    const b = a.map((x, i) => (i % 3 === 0 ? x : x + 1e-4 * Math.sin(i)));
    b[7] = NaN; a[9] = Infinity; a[10] = 0; b[10] = -0; a[11] = 1e-40;
    assertStatsClose(await gpu!.pairStats(a, b), await cpu.pairStats(a, b), counts, 'pair');
    assertStatsClose(await gpu!.pairStats(a, null), await cpu.pairStats(a, null), counts, 'pair vs zeros');
    // Near-orthogonal pair: the dot product cancels, exact products keep it accurate.
    const x = randomF32(30000, 3), y = randomF32(30000, 4);
    assertStatsClose(await gpu!.pairStats(x, y), await cpu.pairStats(x, y), counts, 'orthogonal');
    assertStatsClose(await gpu!.pairStats(new Float32Array(0), null), await cpu.pairStats(new Float32Array(0), null), counts, 'empty');
  });

  test('precision statistics match within 1e-6, counts exactly', async (t) => {
    if (skip) return t.skip(skip);
    const counts: (keyof PrecisionStats)[] = ['n', 'deltaNonzero', 'lost', 'changed', 'castChanged'];
    const [w, d] = mergeInputs(12000, 21);
    const finite = (x: Float32Array): Float32Array => x.map((v) => (Number.isFinite(v) ? v : 0.5));
    for (const dtype of ['F16', 'BF16'] as HalfDtype[]) {
      for (const rule of MERGE_RULES) {
        // Non-finite values make CPU sums NaN/Inf: check the exact counts with them, the sums without.
        const gotS = await gpu!.precision(w, d, dtype, rule);
        const wantS = await cpu.precision(w, d, dtype, rule);
        for (const k of counts) assert.equal(gotS[k], wantS[k], `precision specials ${dtype} ${rule}: ${k}`);
        const fw = finite(w), fd = finite(d);
        assertStatsClose(await gpu!.precision(fw, fd, dtype, rule), await cpu.precision(fw, fd, dtype, rule), counts, `precision ${dtype} ${rule}`);
        assertStatsClose(await gpu!.precision(fw, null, dtype, rule), await cpu.precision(fw, null, dtype, rule), counts, `precision no delta ${dtype} ${rule}`);
      }
    }
  });

  test('a small forced binding limit splits deltas into row blocks and tensors into chunks, results unchanged', async (t) => {
    if (skip) return t.skip(skip);
    const limit = 16 * 1024;
    const small = await gpuKernels(ctx, { maxBindingBytes: limit });
    assert.ok(small instanceof GpuKernels);
    try {
      // A 100 x 130 delta is 52,000 bytes: at least 4 row blocks under a 16 KiB binding (each block's output fits).
      for (const tr of [false, true]) {
        const f = factors(100, 130, 16, 77, tr, 0.75);
        const before = small.dispatches;
        const got = await small.loraDelta(f);
        assertBytesEqual(new Uint8Array(got.buffer), new Uint8Array((await cpu.loraDelta(f)).buffer), `delta under a ${limit}-byte limit, transpose=${tr}`);
        assert.ok(small.dispatches - before >= Math.ceil((100 * 130 * 4) / limit), `split into row blocks (${small.dispatches - before} dispatches)`);
      }
      const [w, d] = mergeInputs(20001, 5);
      for (const dtype of ['F32', 'BF16'] as MergeDtype[]) {
        const width = dtype === 'F32' ? 4 : 2;
        const before = small.dispatches;
        assertBytesEqual(await small.merge(w, d, dtype, 'peft', new Uint8Array(20001 * width)), await cpu.merge(w, d, dtype, 'peft', new Uint8Array(20001 * width)), `merge ${dtype} under the limit`);
        assert.ok(small.dispatches - before >= Math.ceil((20001 * 4) / limit), 'merge split into chunks');
      }
      const a = randomF32(20001, 2, 0.1);
      assertStatsClose(await small.pairStats(a, w.map((x) => (Number.isFinite(x) ? x : 0))), await cpu.pairStats(a, w.map((x) => (Number.isFinite(x) ? x : 0))), ['n', 'aNonzero', 'bNonzero', 'diffNonzero', 'nonFinite'], 'pair stats under the limit');
      // DoRA: rows of one element (a lane per element: the partial sums are twice the input), a single
      // wide row, and columns, each over several chunks.
      for (const [rows, cols, col] of [[5000, 1, false], [1, 1500, false], [1, 1500, true], [300, 40, true]] as const) {
        const [dw, dd] = mergeInputs(rows * cols, 31 + rows);
        const mag = randomF32(col ? cols : rows, 3, 1).map(Math.abs);
        const want = await doraMerge(cpu, dw, dd, mag, rows, cols, col, 'BF16', 'peft');
        const got = await doraMerge(small, dw, dd, mag, rows, cols, col, 'BF16', 'peft');
        assertBytesEqual(got.out, want.out, `DoRA ${rows}x${cols} ${col ? 'columns' : 'rows'} under the limit`);
      }
      assert.equal(small.failure, undefined, 'no binding went over the limit (an over-limit binding fails the kernel over to the CPU)');
    } finally {
      await small.dispose();
    }
  });

  test('a GPU failure mid-job falls back to the CPU, says so once, and the report names it', async (t) => {
    if (skip) return t.skip(skip);
    const opened = await openGpu();
    assert.ok(opened.ok);
    const real = opened.gpu.device;
    // The device as the kernels see it: command encoding fails, as after a device loss.
    const device = new Proxy(real, {
      get(target, key) {
        if (key === 'createCommandEncoder') return () => { throw new Error('simulated device loss'); };
        const v = Reflect.get(target, key, target) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const warnings: string[] = [];
    const broken = new GpuKernels({ ...opened.gpu, device }, (m) => warnings.push(m));
    const [w, d] = mergeInputs(5000, 9);
    const want = await cpu.merge(w, d, 'BF16', 'peft', new Uint8Array(10000));
    assertBytesEqual(await broken.merge(w, d, 'BF16', 'peft', new Uint8Array(10000)), want, 'merge after a GPU failure');
    const f = factors(20, 30, 4, 1);
    assertBytesEqual(new Uint8Array((await broken.loraDelta(f)).buffer), new Uint8Array((await cpu.loraDelta(f)).buffer), 'delta after a GPU failure');
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.match(warnings[0], /GPU failure in merge: simulated device loss; .*CPU/);
    assert.match(broken.description, /^GPU: .*after a GPU failure the rest ran on the CPU \(merge: simulated device loss\)/);
  });

  /** DoRA as the jobs run it (jobs/delta.ts): norms, then factor = f(m / f(norm)), then the merge. */
  async function doraMerge(
    k: CpuKernels | GpuKernels,
    w: Float32Array,
    d: Float32Array,
    mag: Float32Array,
    rows: number,
    cols: number,
    col: boolean,
    dtype: MergeDtype,
    rule: (typeof MERGE_RULES)[number],
  ): Promise<{ norms: Float64Array; factor: Float32Array; out: Uint8Array }> {
    const v = { w, d, rows, cols, featureIsColumn: col, dtype, rule };
    const norms = await k.doraNorms(v);
    const factor = new Float32Array(norms.length);
    for (let i = 0; i < factor.length; i++) factor[i] = mag[i] / Math.fround(norms[i]);
    const out = await k.mergeDora(v, factor, new Uint8Array(w.length * (dtype === 'F32' ? 4 : 2)));
    return { norms, factor, out };
  }

  test('DoRA on the GPU: norms within 1e-6 and f32-identical, merged tensors bit-identical, rows and columns, every dtype and rule', async (t) => {
    if (skip) return t.skip(skip);
    // 37 x 300: 13 rows per 4098-element chunk, rows straddle chunks; 300 x 37 for columns; 3 x 5000: a row larger than a chunk.
    for (const [rows, cols] of [[37, 300], [300, 37], [3, 5000], [1, 1]]) {
      const [w, d] = mergeInputs(rows * cols, rows + cols);
      for (const col of [false, true]) {
        const mag = randomF32(col ? cols : rows, 3, 1).map(Math.abs);
        for (const dtype of ['F32', 'F16', 'BF16'] as MergeDtype[]) {
          for (const rule of dtype === 'F32' ? (['peft'] as const) : MERGE_RULES) {
            const what = `DoRA ${rows}x${cols} ${col ? 'columns' : 'rows'} ${dtype} ${rule}`;
            const want = await doraMerge(cpu, w, d, mag, rows, cols, col, dtype, rule);
            const got = await doraMerge(gpu!, w, d, mag, rows, cols, col, dtype, rule);
            for (let i = 0; i < want.norms.length; i++) close(got.norms[i], want.norms[i], `${what}: norm ${i}`);
            assertBytesEqual(new Uint8Array(got.factor.buffer), new Uint8Array(want.factor.buffer), `${what}: factors`);
            assertBytesEqual(got.out, want.out, `${what}: merged`);
          }
        }
      }
    }
    assert.equal(gpu!.failure, undefined);
  });

  test('DoRA norms at an f32 rounding tie are recomputed on the host (the certificate), and stay exact', async (t) => {
    if (skip) return t.skip(skip);
    // Rows whose sum of squares is (1 + 2^-24)^2 (elements 0..3: 1, 2^-12, 2^-12, 2^-24), so that the norm is
    // the midpoint between 1 and 1 + 2^-23, plus twelve squares of 2^-54 at elements 64, 128, ...
    // The CPU adds them one by one to a sum near 1, where each is below half an ulp and is lost: its
    // norm is the midpoint, which rounds to 1. The GPU's lane 0 (elements 0, 64, 128, ...) keeps
    // them: an uncertified GPU norm rounds to 1 + 2^-23 and the merged rows would differ.
    const rows = 16, cols = 1024;
    const w = new Float32Array(rows * cols);
    for (let i = 0; i < rows; i++) {
      w.set([1, 2 ** -12, 2 ** -12, 2 ** -24], i * cols);
      for (let k = 1; k <= 12; k++) w[i * cols + 64 * k] = 2 ** -27 * (i % 2 === 0 ? 1 : -1);
    }
    const d = new Float32Array(rows * cols);
    const before = gpu!.hostElements;
    const mag = new Float32Array(rows).fill(1);
    const want = await doraMerge(cpu, w, d, mag, rows, cols, false, 'F32', 'peft');
    const got = await doraMerge(gpu!, w, d, mag, rows, cols, false, 'F32', 'peft');
    assertBytesEqual(new Uint8Array(got.factor.buffer), new Uint8Array(want.factor.buffer), 'factors at ties');
    assertBytesEqual(got.out, want.out, 'merged at ties');
    assert.ok(gpu!.hostElements - before >= rows * cols, `tie rows recomputed on the host (${gpu!.hostElements - before} elements)`);
    // Ordinary weights leave almost every feature to the GPU.
    const [rw, rd] = [randomF32(256 * 512, 4, 0.05), randomF32(256 * 512, 5, 1e-3)];
    const b2 = gpu!.hostElements;
    const r1 = await doraMerge(gpu!, rw, rd, new Float32Array(256).fill(0.5), 256, 512, false, 'BF16', 'peft');
    const r0 = await doraMerge(cpu, rw, rd, new Float32Array(256).fill(0.5), 256, 512, false, 'BF16', 'peft');
    assertBytesEqual(r1.out, r0.out, 'random DoRA');
    assert.ok(gpu!.hostElements - b2 <= 512 * 4, `few features on the host (${(gpu!.hostElements - b2) / 512})`);
  });
});
