/**
 * The CPU backend on worker threads against the one on the main thread: tensors bit for bit, statistics
 * exact in their counts and maxima and within 1e-12 (relative) in their float64 sums (summed per
 * STATS_CHUNK, then in order), the same whatever the thread count; jobs' outputs byte for byte; the
 * fast paths (identical bytes, zero blocks) against the full computation; and no worker keeps a
 * process alive.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { compareJob } from '../../src/engine/jobs/compare';
import { extractJob } from '../../src/engine/jobs/extract';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { allFinite, allZeroBytes } from '../../src/engine/kernels/cpuMath';
import { HalfDtype, MergeDtype, PairStats, PrecisionStats, withKernels } from '../../src/engine/kernels/kernels';
import { MERGE_RULES } from '../../src/shared/jobs/choices';
import { PARALLEL_MIN, WorkerKernels } from '../../src/engine/kernels/poolKernels';
import { STATS_CHUNK } from '../../src/engine/kernels/poolOps';
import { encodeBf16, encodeF16 } from '../../src/shared/safetensors/half';
import { bytesToF32 } from '../../src/engine/safetensors/reader';
import { quietContext } from '../../src/engine/util/job';
import { peftConfig, randomF32, tmpDir, writeAdapter, writeModel } from './helpers/builders';

const cpu = new CpuKernels();
const ctx = quietContext();

/** Random values with every special case sprinkled in: NaN, infinities, signed zeros, halves' overflow and subnormals. */
function values(n: number, seed: number, scale: number, shared: boolean): Float32Array {
  const x = new Float32Array(shared ? new SharedArrayBuffer(n * 4) : new ArrayBuffer(n * 4));
  x.set(randomF32(n, seed, scale));
  const special = [NaN, -NaN, Infinity, -Infinity, 0, -0, 65504, 65520, 1e-8, -6e-8, 3.4e38, 1e-40];
  for (let i = 0; i < special.length; i++) x[(i * 7919 + seed * 31) % n] = special[i];
  for (let i = 0; i < n; i += 97) x[i] = 0;
  return x;
}

function bytes(x: ArrayBufferView): Buffer {
  return Buffer.from(x.buffer, x.byteOffset, x.byteLength);
}

function assertStatsClose<T extends object>(got: T, want: T, label: string): void {
  for (const k of Object.keys(want) as (keyof T)[]) {
    const g = got[k] as number;
    const w = want[k] as number;
    if (Number.isInteger(w) || !Number.isFinite(w)) assert.ok(Object.is(g, w), `${label} ${String(k)}: ${g} vs ${w}`);
    else assert.ok(Math.abs(g - w) <= 1e-12 * Math.abs(w), `${label} ${String(k)}: ${g} vs ${w}`);
  }
}

test('worker kernels: tensors bit-identical to the main thread, statistics within 1e-12', async () => {
  const k = new WorkerKernels(2);
  try {
    for (const shared of [true, false]) {
      // Above PARALLEL_MIN, not a multiple of STATS_CHUNK; and one chunk exactly.
      for (const n of [PARALLEL_MIN * 2 + 12345, STATS_CHUNK]) {
        const label = `n=${n} shared=${shared}`;
        const w = values(n, 1, 0.1, shared);
        const d = values(n, 2, 0.002, shared);
        for (const dtype of ['F32', 'F16', 'BF16'] as MergeDtype[]) {
          const el = dtype === 'F32' ? 4 : 2;
          for (const rule of MERGE_RULES) {
            for (const delta of [d, null]) {
              const want = await cpu.merge(w, delta, dtype, rule, new Uint8Array(n * el));
              const got = await k.merge(w, delta, dtype, rule, new Uint8Array(shared ? new SharedArrayBuffer(n * el) : new ArrayBuffer(n * el)));
              assert.ok(bytes(got).equals(bytes(want)), `${label} merge ${dtype} ${rule} ${delta ? 'delta' : 'none'}`);
            }
          }
        }
        for (const b of [d, null]) {
          const want = await cpu.pairStats(w, b);
          const got = await k.pairStats(w, b);
          if (n <= STATS_CHUNK) assert.deepEqual(got, want, label);
          else assertStatsClose<PairStats>(got, want, `${label} pairStats`);
        }
        for (const dtype of ['F16', 'BF16'] as HalfDtype[]) {
          for (const rule of MERGE_RULES) {
            const want = await cpu.precision(w, d, dtype, rule);
            const got = await k.precision(w, d, dtype, rule);
            if (n <= STATS_CHUNK) assert.deepEqual(got, want, label);
            else assertStatsClose<PrecisionStats>(got, want, `${label} precision ${dtype} ${rule}`);
          }
        }
        const out = (): Float32Array => new Float32Array(shared ? new SharedArrayBuffer(n * 4) : new ArrayBuffer(n * 4));
        assert.ok(bytes(await k.subtract(w, d, out())).equals(bytes(await cpu.subtract(w, d, out()))), `${label} subtract`);
        const acc = (): Float32Array => out().fill(0.01);
        assert.ok(bytes(await k.maxAbsInto(acc(), w)).equals(bytes(await cpu.maxAbsInto(acc(), w))), `${label} maxAbsInto`);
      }
      for (const transpose of [false, true]) {
        const [r, rows, cols] = [5, 700, 400];
        const B = values(rows * r, 3, 0.1, shared);
        for (let i = 0; i < B.length; i += 3) B[i] = 0;
        const f = { A: values(r * cols, 4, 0.1, shared), B, r, out: rows, in: cols, scale: 1.5, transpose };
        const want = await cpu.loraDelta(f);
        const got = await k.loraDelta(f, new Float32Array(shared ? new SharedArrayBuffer(rows * cols * 4) : new ArrayBuffer(rows * cols * 4)));
        assert.ok(bytes(got).equals(bytes(want)), `loraDelta transpose=${transpose} shared=${shared}`);
      }
    }
  } finally {
    await k.dispose();
  }
});

test('worker kernels: the statistics are the same on 1, 2 and 3 threads', async () => {
  const n = STATS_CHUNK * 5 + 999;
  const w = values(n, 5, 0.1, true);
  const d = values(n, 6, 0.002, true);
  const results: unknown[] = [];
  for (const threads of [1, 2, 3]) {
    const k = new WorkerKernels(threads);
    try {
      results.push([await k.pairStats(w, d), await k.pairStats(d, null), await k.precision(w, d, 'BF16', 'peft')]);
    } finally {
      await k.dispose();
    }
  }
  assert.deepEqual(results[1], results[0]);
  assert.deepEqual(results[2], results[0]);
});

test('allFinite and allZeroBytes read the exponent bits and bytes as decoding would', () => {
  const x = new Float32Array(1001).fill(0.5);
  const check = (label: string, want: boolean, v: Float32Array): void => {
    const h = encodeBf16(v, new Uint16Array(v.length));
    assert.equal(allFinite('F32', new Uint8Array(v.buffer)), want, `F32 ${label}`);
    assert.equal(allFinite('BF16', new Uint8Array(h.buffer)), want, `BF16 ${label}`);
    assert.equal(allFinite('F64', new Uint8Array(Float64Array.from(v).buffer)), want, `F64 ${label}`);
  };
  check('finite', true, x);
  for (const bad of [NaN, Infinity, -Infinity]) {
    for (const at of [0, 500, 1000]) {
      const y = x.slice();
      y[at] = bad;
      check(`${bad} at ${at}`, false, y);
    }
  }
  // fp16: 65504 is finite, 0x7c00 infinite, in either half of a word and in an odd last element.
  assert.equal(allFinite('F16', new Uint8Array(new Uint16Array([0x7bff, 0xfbff, 0x3c00]).buffer)), true);
  assert.equal(allFinite('F16', new Uint8Array(new Uint16Array([0x3c00, 0x3c00, 0x7c00]).buffer)), false);
  assert.equal(allFinite('F16', new Uint8Array(new Uint16Array([0x3c00, 0xfe00]).buffer)), false);
  assert.equal(allZeroBytes(new Uint8Array(1003)), true);
  const z = new Uint8Array(1003);
  z[1002] = 1;
  assert.equal(allZeroBytes(z), false);
  assert.equal(allZeroBytes(new Uint8Array(new Float32Array([0, -0]).buffer)), false);
});

test('worker kernels decode half blocks and test them for NaN/Inf as the main thread does', async () => {
  const k = new WorkerKernels(2);
  try {
    const n = PARALLEL_MIN * 3 + 17;
    const v = values(n, 8, 0.1, false);
    for (const dtype of ['F16', 'BF16'] as const) {
      const h = (dtype === 'F16' ? encodeF16 : encodeBf16)(v, new Uint16Array(n));
      const raw = new Uint8Array(new SharedArrayBuffer(n * 2));
      raw.set(new Uint8Array(h.buffer));
      const t = { name: 'x', dtype, shape: [n], numel: n, offset: 0, byteLength: n * 2, file: 'x' };
      const got = await k.decode(t, raw, new Float32Array(new SharedArrayBuffer(n * 4)));
      assert.ok(bytes(got).equals(bytes(bytesToF32(t, raw, new Float32Array(n)))), dtype);
      assert.equal(await k.allFinite(dtype, raw), false, dtype);
      const finite = new Uint8Array(new SharedArrayBuffer(n * 2));
      finite.set(new Uint8Array((dtype === 'F16' ? encodeF16 : encodeBf16)(randomF32(n, 3, 0.1), new Uint16Array(n)).buffer));
      assert.equal(await k.allFinite(dtype, finite), true, dtype);
      // A NaN in the last worker's slice only.
      new Uint16Array(finite.buffer)[n - 1] = 0x7fc0;
      assert.equal(await k.allFinite(dtype, finite), false, dtype);
    }
  } finally {
    await k.dispose();
  }
});

/** A bf16 model with tensors above a block, an adapter on q, and a "finetuned" copy changed in q and a norm, with NaN in an untouched tensor. */
function fixture(root: string): { base: string; adapter: string; ft: string } {
  const cfg = { model_type: 'llama', torch_dtype: 'bfloat16' };
  const [rows, cols] = [1536, 1024];
  const nan = randomF32(512 * cols, 9, 0.05);
  nan[777] = NaN;
  nan[778] = Infinity;
  const tensors = [
    { name: 'model.embed_tokens.weight', dtype: 'BF16' as const, shape: [512, cols], data: nan },
    { name: 'model.layers.0.self_attn.q_proj.weight', dtype: 'BF16' as const, shape: [rows, cols], data: 11 },
    { name: 'model.layers.0.input_layernorm.weight', dtype: 'BF16' as const, shape: [cols], data: 12 },
    { name: 'model.layers.0.mlp.up_proj.weight', dtype: 'BF16' as const, shape: [rows, cols], data: 13 },
  ];
  const base = writeModel(path.join(root, 'base'), cfg, tensors);
  const changed = [...tensors];
  changed[1] = { ...tensors[1], data: 21 };
  changed[2] = { ...tensors[2], data: 22 };
  const ft = writeModel(path.join(root, 'ft'), cfg, changed);
  const adapter = writeAdapter(path.join(root, 'adapter'), peftConfig({ target_modules: ['q_proj'], r: 4 }), [
    { name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight', shape: [4, cols], data: randomF32(4 * cols, 31, 0.1) },
    { name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight', shape: [rows, 4], data: randomF32(rows * 4, 32, 0.1) },
  ]);
  return { base, adapter, ft };
}

function strip(r: object): unknown {
  return JSON.parse(JSON.stringify(r, (k, v) => (['seconds', 'device', 'out', 'base', 'finetuned', 'taskVector', 'adapter'].includes(k) ? undefined : v)));
}

/** Reports with the float sums rounded to 12 significant digits, counts and maxima as they are. */
function close(r: unknown): unknown {
  return JSON.parse(JSON.stringify(r, (_, v) => (typeof v === 'number' && !Number.isInteger(v) ? Number(v.toPrecision(12)) : v)));
}

test('merge, extract and compare on the worker backend: the same files and reports as on the main thread', async () => {
  const root = tmpDir();
  const { base, adapter, ft } = fixture(root);
  const k = new WorkerKernels(2);
  try {
    for (const dtype of ['bf16', 'fp16', 'fp32'] as const) {
      const [a, b] = [path.join(root, `m-${dtype}-cpu`), path.join(root, `m-${dtype}-workers`)];
      await mergeJob({ base, adapter, out: a, dtype, rule: 'peft' }, withKernels(ctx, cpu));
      await mergeJob({ base, adapter, out: b, dtype, rule: 'peft' }, withKernels(ctx, k));
      assert.ok(fs.readFileSync(path.join(a, 'model.safetensors')).equals(fs.readFileSync(path.join(b, 'model.safetensors'))), `merge ${dtype}`);
    }
    const e1 = await extractJob({ base, finetuned: ft, out: path.join(root, 'tv-cpu.safetensors') }, withKernels(ctx, cpu));
    const e2 = await extractJob({ base, finetuned: ft, out: path.join(root, 'tv-workers.safetensors') }, withKernels(ctx, k));
    assert.ok(fs.readFileSync(path.join(root, 'tv-cpu.safetensors')).equals(fs.readFileSync(path.join(root, 'tv-workers.safetensors'))));
    assert.deepEqual(close(strip(e2)), close(strip(e1)));
    // The embedding is bitwise the same on both sides but holds NaN and inf: its task vector is not zero.
    assert.deepEqual(e1.nonFinite, [{ name: 'model.embed_tokens.weight', elements: 2 }]);
    assert.deepEqual(e1.tensors.filter((t) => t.nonzeroElements > 0).map((t) => t.name), ['model.embed_tokens.weight', 'model.layers.0.self_attn.q_proj.weight', 'model.layers.0.input_layernorm.weight']);
    for (const source of [{ finetuned: ft }, { taskVector: path.join(root, 'tv-cpu.safetensors') }]) {
      const tag = source.finetuned ? 'ft' : 'tv';
      const c1 = await compareJob({ base, adapter, ...source, out: path.join(root, `c-${tag}-cpu`), tolerance: 1e-5, saveDeltas: true }, withKernels(ctx, cpu));
      const c2 = await compareJob(
        { base, adapter, ...source, out: path.join(root, `c-${tag}-workers`), tolerance: 1e-5, saveDeltas: true },
        withKernels(ctx, k),
      );
      assert.deepEqual(close(strip(c2)), close(strip(c1)), tag);
      assert.ok(fs.readFileSync(path.join(root, `c-${tag}-cpu`, 'lora_deltas.safetensors')).equals(fs.readFileSync(path.join(root, `c-${tag}-workers`, 'lora_deltas.safetensors'))));
    }
  } finally {
    await k.dispose();
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('worker kernels never keep the process alive: idle, cancelled mid-job, or disposed', () => {
  const pool = require.resolve('../../src/engine/kernels/poolKernels');
  const kernels = require.resolve('../../src/engine/kernels/kernels');
  const job = require.resolve('../../src/engine/jobs/extract');
  const util = require.resolve('../../src/engine/util/job');
  const root = tmpDir();
  const { base, ft } = fixture(root);
  const script = `
    const { WorkerKernels } = require(${JSON.stringify(pool)});
    const { withKernels } = require(${JSON.stringify(kernels)});
    const { extractJob } = require(${JSON.stringify(job)});
    const { quietContext } = require(${JSON.stringify(util)});
    (async () => {
      const k = new WorkerKernels(2);
      const x = new Float32Array(new SharedArrayBuffer(4 << 20));
      await k.subtract(x, x, x);
      const ac = new AbortController();
      const ctx = quietContext(ac.signal);
      ctx.progress = () => ac.abort();
      const opts = { base: ${JSON.stringify(base)}, finetuned: ${JSON.stringify(ft)}, out: ${JSON.stringify(path.join(root, 'tv.safetensors'))} };
      await extractJob(opts, withKernels(ctx, k)).catch((e) => console.log(e.name));
      if (process.argv[1] === 'dispose') await k.dispose();
      console.log('done');
    })();`;
  try {
    for (const mode of ['idle', 'dispose']) {
      const r = spawnSync(process.execPath, ['-e', script, mode], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 0, `${mode}: ${r.stderr}`);
      assert.match(r.stdout, /CancelledError\ndone/, mode);
    }
    assert.deepEqual(fs.readdirSync(root).sort(), ['adapter', 'base', 'ft']);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
