/**
 * The certified two-pass mask (unmerge/certified.ts): the float32 pass stays within its bound of the exact
 * aggregate on every element, and the selection it certifies is the exact one (today's float64 path: the
 * JavaScript reference expansion, |max| fold and topK) bit for bit, on random factors and on crafted ones:
 * ties, values one ulp either side of the k-th, cancellation the float32 sum gets wrong, zero modules.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { maskJob } from '../../src/engine/jobs/mask';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { loraDeltaRows, maxAbsRange } from '../../src/engine/kernels/cpuMath';
import { Kernels, LoraFactors, withKernels } from '../../src/engine/kernels/kernels';
import { WorkerKernels } from '../../src/engine/kernels/poolKernels';
import { foldLoraRows, wasmLora } from '../../src/engine/kernels/wasm';
import { certifiedTopK, exactMaxAbsAt, float32Bound } from '../../src/engine/unmerge/certified';
import { topK } from '../../src/engine/unmerge/topk';
import { quietContext } from '../../src/engine/util/job';
import { peftConfig, randomF32, rng, TestTensor, tmpDir, writeAdapter, writeModel } from './helpers/builders';

/** today's float64 path: each delta by the JavaScript reference, folded by maxAbsRange. */
function exactAggregate(fs: LoraFactors[]): Float32Array {
  const acc = new Float32Array(fs[0].out * fs[0].in);
  const d = new Float32Array(acc.length);
  for (const f of fs) {
    loraDeltaRows(f, 0, f.out, d);
    maxAbsRange(acc, d, 0, acc.length);
  }
  return acc;
}

function float32Aggregate(fs: LoraFactors[]): Float32Array {
  const acc = new Float32Array(fs[0].out * fs[0].in);
  foldLoraRows(fs, 0, fs[0].out, acc, wasmLora(), true);
  return acc;
}

function set(out: number, inn: number, r: number, seed: number, scale = 2, transpose = false, spread = 0.05): LoraFactors {
  return { A: randomF32(r * inn, seed, spread), B: randomF32(out * r, seed + 1, spread), r, out, in: inn, scale, transpose };
}

/** A's columns a few orders of magnitude apart, B's rows likewise, and some exactly cancelling sums. */
function wild(out: number, inn: number, r: number, seed: number, scale = 0.7, transpose = false): LoraFactors {
  const f = set(out, inn, r, seed, scale, transpose);
  const next = rng(seed + 2);
  for (let j = 0; j < inn; j++) {
    const s = 2 ** Math.round(next() * 20);
    for (let k = 0; k < r; k++) f.A[k * inn + j] *= s;
  }
  for (let i = 0; i < out; i++) {
    const s = 2 ** Math.round(next() * 20);
    for (let k = 0; k < r; k++) f.B[i * r + k] *= s;
  }
  cancel(f, seed);
  return f;
}

/**
 * Columns whose exact sums are tiny against their terms: b = (1, 1, 1), a = (1, 2^-30, -1) sums to 0 in
 * fp32 but 2^-30 in float64; in every third row, so their tiny exact values compete for the top k.
 */
function cancel(f: LoraFactors, seed: number): void {
  if (f.r < 3) return;
  for (let j = seed % 3; j < f.in; j += 3) {
    f.A[j] = 1;
    f.A[f.in + j] = 2 ** -30 * (1 + (j % 7) / 8);
    f.A[2 * f.in + j] = -1;
    for (let k = 3; k < f.r; k++) f.A[k * f.in + j] = 0;
  }
  for (let i = 0; i < f.out; i += 3) {
    f.B.fill(0, i * f.r, (i + 1) * f.r);
    f.B.set([1, 1, 1], i * f.r);
  }
}

function sameSelection(fs: LoraFactors[], k: number, label: string): { rechecked: number } | undefined {
  const exact = exactAggregate(fs);
  const want = topK(exact, k);
  const v = float32Aggregate(fs);
  const bound = float32Bound(fs);
  assert.ok(bound, `${label}: certifiable`);
  const got = certifiedTopK(v, k, bound, (idx) => exactMaxAbsAt(fs, idx));
  if (got === undefined) return undefined;
  assert.deepEqual(got.indices, want.indices, `${label}: selected indices`);
  assert.equal(Object.is(got.threshold, want.threshold), true, `${label}: threshold ${got.threshold} vs ${want.threshold}`);
  return got;
}

test('the float32 pass is within its bound of the exact aggregate on every element', () => {
  assert.ok(wasmLora(), 'dist/kernels.wasm is missing: run npm run build');
  let seed = 1;
  let wildDiffer = 0;
  // Widths around the 32-column blocks and the tile (W = 128 at r = 32), ranks 1 to 64, both orientations.
  for (const [out, inn, r] of [[9, 31, 3], [17, 64, 8], [40, 300, 32], [33, 257, 17], [5, 1000, 64], [3, 1, 1], [64, 130, 32]] as const) {
    for (const transpose of [false, true]) {
      for (const make of [set, wild]) {
        const fs = [make(out, inn, r, seed++, 2, transpose), make(out, inn, Math.max(1, r - 1), seed++, 1 / 3, transpose)].map((f) => ({ ...f, transpose }));
        const exact = exactAggregate(fs);
        const v = float32Aggregate(fs);
        const b = float32Bound(fs)!;
        const cols = b.cols.length;
        let worst = 0;
        for (let i = 0; i < exact.length; i++) {
          const e = b.rows[Math.floor(i / cols)] * b.cols[i % cols] + b.abs;
          const err = Math.abs(v[i] - exact[i]);
          if (v[i] !== exact[i] && make === wild) wildDiffer++;
          assert.ok(err <= e, `${out}x${inn} r=${r} ${make.name} transpose=${transpose}: element ${i}: |${v[i]} - ${exact[i]}| > ${e}`);
          worst = Math.max(worst, err / e);
        }
        assert.ok(worst < 1);
      }
    }
  }
  assert.ok(wildDiffer > 0, 'the crafted cancellations make the float32 pass differ from the exact values');
});

test('certified selection equals the float64 selection on random factors (several adapters, both orientations, many k)', () => {
  let seed = 100;
  for (const [out, inn, r, adapters] of [[64, 96, 8, 3], [100, 257, 16, 8], [33, 40, 4, 1], [128, 512, 32, 2]] as const) {
    for (const transpose of [false, true]) {
      const fs = Array.from({ length: adapters }, (_, a) => set(out, inn, r, seed++, [2, 0.5, 1 / 3][a % 3], transpose));
      for (const k of [1, 7, 50, 892, Math.floor((out * inn) / 3)]) {
        const got = sameSelection(fs, k, `${out}x${inn} r=${r} x${adapters} k=${k} transpose=${transpose}`);
        if (k <= 892) assert.ok(got, `k=${k}: certified (not left to the exact path)`);
      }
    }
  }
});

test('ties at the k-th value (duplicate adapters, repeated rows) select the lower indices, as the float64 path does', () => {
  const base = set(48, 64, 8, 7);
  // Rows 10..19 repeat row 3: ten copies of each value; a second adapter identical to the first.
  for (let i = 10; i < 20; i++) base.B.copyWithin(i * 8, 3 * 8, 4 * 8);
  const fs = [base, { ...base }, set(48, 64, 8, 9, 0.01)];
  const exact = exactAggregate(fs);
  // k placed inside a run of tied values: the k-th value occurs several times and only some are kept.
  const sorted = Float32Array.from(exact).sort().reverse();
  let k = 0;
  for (let t = 1; t < sorted.length - 1 && k === 0; t++) if (sorted[t] === sorted[t - 1] && sorted[t] === sorted[t + 1]) k = t;
  assert.ok(k > 0, 'a tie exists');
  const got = sameSelection(fs, k, 'ties');
  assert.ok(got, 'certified');
});

test('values one ulp either side of the k-th are told apart exactly', () => {
  // Rank 1, B = 1: each value is f(a_j * s), so A can place values at the threshold and its neighbours.
  const n = 4096;
  const A = new Float32Array(n);
  const next = rng(5);
  for (let j = 0; j < n; j++) A[j] = next() * 0.5;
  const t = 0.75;
  const up = new Float32Array([t]);
  const u = new Uint32Array(up.buffer);
  // 30 exact copies of t, 20 one ulp above, 20 one ulp below, scattered.
  for (let c = 0; c < 70; c++) {
    u[0] = 0x3f400000 + (c < 30 ? 0 : c < 50 ? 1 : -1);
    A[(c * 977) % n] = up[0] * (c % 2 ? -1 : 1);
  }
  const one: LoraFactors = { A, B: new Float32Array([1]), r: 1, out: 1, in: n, scale: 1, transpose: false };
  for (const k of [10, 20, 35, 50, 60]) assert.ok(sameSelection([one], k, `ulp k=${k}`), `k=${k} certified`);
});

test('cancellation the float32 sum gets wrong: the float32 top k differs, the certified one does not', () => {
  // Even rows: cancelled sums, 2^-30 (1 + j%7/8) exactly but 0 in fp32. Odd rows: 2^-31 (1 + j%5/8), exact in
  // fp32. The float32 pass ranks the odd rows first; exactly, the even rows win. Only a true bound finds them.
  const out = 30;
  const inn = 64;
  const r = 4;
  const A = new Float32Array(r * inn);
  for (let j = 0; j < inn; j++) {
    A[j] = 1;
    A[inn + j] = 2 ** -30 * (1 + (j % 7) / 8);
    A[2 * inn + j] = -1;
    A[3 * inn + j] = 2 ** -31 * (1 + (j % 5) / 8);
  }
  const B = new Float32Array(out * r);
  for (let i = 0; i < out; i++) B.set(i % 2 === 0 ? [1, 1, 1, 0] : [0, 0, 0, 1], i * r);
  const fs: LoraFactors[] = [{ A, B, r, out, in: inn, scale: 1.5, transpose: false }];
  const k = 40;
  const v = float32Aggregate(fs);
  const exact = exactAggregate(fs);
  assert.notDeepEqual(topK(v, k).indices, topK(exact, k).indices, 'the float32 pass alone would select differently');
  assert.ok(sameSelection(fs, k, 'cancellation'), 'certified');
});

test('too many elements near the k-th value (an all-zero module): certifiedTopK declines, never guesses', () => {
  const f: LoraFactors = { A: randomF32(4 * 300, 3, 0.1), B: new Float32Array(200 * 4), r: 4, out: 200, in: 300, scale: 2, transpose: false };
  const v = float32Aggregate([f]);
  assert.equal(certifiedTopK(v, 10, float32Bound([f])!, (idx) => exactMaxAbsAt([f], idx)), undefined);
  // Not certifiable at all: a non-finite scale, or products that could overflow fp32.
  assert.equal(float32Bound([{ ...f, scale: Infinity }]), undefined);
  const big = { ...f, A: new Float32Array(f.A.length).fill(2 ** 60), B: new Float32Array(f.B.length).fill(2 ** 60) };
  assert.equal(float32Bound([big]), undefined);
});

const H = 96;
const root = tmpDir('lora-lens-certified-');

function module(l: number, p: string): string {
  return `model.layers.${l}.self_attn.${p}`;
}

/** A base and adapters whose modules mix random, tied, cancelling and all-zero factors. */
function fixture(): { base: string; adapters: string[] } {
  const projections = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];
  const base = writeModel(path.join(root, 'base'), { model_type: 'qwen2', hidden_size: H, num_hidden_layers: 2 }, projections.flatMap((p) => [0, 1].map((l) => ({ name: `${module(l, p)}.weight`, shape: [H, H] }))));
  const adapters: string[] = [];
  for (let a = 0; a < 4; a++) {
    const r = 8;
    const tensors: TestTensor[] = [];
    for (let l = 0; l < 2; l++) {
      projections.forEach((p, pi) => {
        const f = pi === 1 ? wild(H, H, r, 10 * a + l) : set(H, H, r, 10 * a + l + pi * 100);
        if (pi === 2 && a === 0) f.B.fill(0); // one adapter untrained here: zeros, the others random
        if (pi === 3) for (let i = 1; i < H; i += 2) f.B.copyWithin(i * r, (i - 1) * r, i * r); // pairs of equal rows: ties
        if (pi === 3 && l === 1) f.B.fill(0); // every adapter zero: a module of ties at 0
        tensors.push({ name: `base_model.model.${module(l, p)}.lora_A.weight`, shape: [r, H], data: f.A });
        tensors.push({ name: `base_model.model.${module(l, p)}.lora_B.weight`, shape: [H, r], data: f.B });
      });
    }
    adapters.push(writeAdapter(path.join(root, `a${a}`), peftConfig({ r, lora_alpha: 16, target_modules: projections }), tensors));
  }
  return { base, adapters };
}

test('mask job: the certified default writes the float64 path\'s mask byte for byte, on the workers and on the main thread', async () => {
  const { base, adapters } = fixture();
  const reference = new CpuKernels();
  // Today's float64 path in its plainest form: the same job on a backend without the fused fold, given each exact delta in turn.
  const exactOnly: Kernels = Object.assign(Object.create(reference) as Kernels, { maxAbsLoraInto: undefined });
  const budget = 8 * 300;
  const run = async (kernels: Kernels, name: string): Promise<{ bytes: Buffer; log: string[]; json: unknown }> => {
    const log: string[] = [];
    const ctx = { ...quietContext(), log: (m: string) => log.push(m) };
    const out = path.join(root, name);
    const report = await maskJob({ base, adapters, budget, out }, withKernels(ctx, kernels));
    return { bytes: fs.readFileSync(path.join(out, 'mask.safetensors')), log, json: { ...report, device: undefined } };
  };
  const want = await run(exactOnly, 'exact');
  assert.equal(want.log.filter((l) => l.includes('certified')).length, 0);
  const workers = new WorkerKernels(2);
  try {
    for (const [kernels, name] of [[new CpuKernels(), 'main'], [workers, 'workers']] as const) {
      const got = await run(kernels, name);
      assert.ok(got.bytes.equals(want.bytes), `${name}: mask.safetensors differs from the float64 path's`);
      assert.deepEqual(got.json, want.json, `${name}: mask.json`);
      // 7 of 8 modules certified: the all-zero one goes to the exact path.
      assert.match(got.log.join('\n'), /mask: 7 of 8 modules selected from the certified float32 pass/);
    }
  } finally {
    await workers.dispose();
  }
});
