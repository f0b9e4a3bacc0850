import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { adapterLayout } from '../../src/engine/checkpoint/adapter';
import { closeCheckpoint, openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { LensError } from '../../src/engine/errors';
import { compressJob } from '../../src/engine/jobs/compress';
import { DECOMPOSE_DEFAULTS } from '../../src/shared/jobs/choices';
import { DecomposeOptions, decomposeJob } from '../../src/engine/jobs/decompose';
import { maskJob } from '../../src/engine/jobs/mask';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { readHeader } from '../../src/shared/safetensors/file';
import { loraValuesAt, loraNormSq, readFactors } from '../../src/engine/unmerge/lora';
import { Mask } from '../../src/engine/unmerge/maskFile';
import { uniqueNames } from '../../src/engine/unmerge/names';
import { ulp } from '../../src/engine/unmerge/sources';
import { quietContext } from '../../src/engine/util/job';
import { loraPair, peftConfig, randomF32, TestTensor, tmpDir, writeAdapter, writeModel } from './helpers/builders';
import { withKernels } from '../../src/engine/kernels/kernels';

const H = 16;
const KV = 8;
const LAYERS = 2;
const PROJ: Record<string, [number, number]> = { q_proj: [H, H], k_proj: [KV, H], v_proj: [KV, H], o_proj: [H, H] };
const kernels = new CpuKernels();
const root = tmpDir('lora-lens-unmerge-');

const weight = (l: number, p: string): string => `model.layers.${l}.self_attn.${p}.weight`;

function writeBase(dir: string): string {
  const tensors: TestTensor[] = [{ name: 'model.embed_tokens.weight', shape: [32, H] }];
  for (let l = 0; l < LAYERS; l++) for (const [p, shape] of Object.entries(PROJ)) tensors.push({ name: weight(l, p), shape });
  tensors.push({ name: 'model.norm.weight', shape: [H] });
  return writeModel(dir, { model_type: 'qwen2', hidden_size: H, num_hidden_layers: LAYERS }, tensors);
}

function writeLora(name: string, seed: number, targets = Object.keys(PROJ), r = 4, zero = false): string {
  const tensors: TestTensor[] = [];
  for (let l = 0; l < LAYERS; l++) {
    for (const p of targets) {
      const [out, inn] = PROJ[p];
      const pair = loraPair(`model.layers.${l}.self_attn.${p}`, r, inn, out, seed + 17 * l + p.charCodeAt(0));
      if (zero) pair[1].data = new Float32Array(out * r);
      tensors.push(...pair);
    }
  }
  return writeAdapter(path.join(root, name), peftConfig({ r, lora_alpha: 2 * r, target_modules: targets }), tensors);
}

const base = writeBase(path.join(root, 'base'));
const dict = [writeLora('math', 100), writeLora('code', 200), writeLora('chat', 300, ['q_proj', 'v_proj']), writeLora('law', 400)];
const outsiders = [writeLora('med', 500), writeLora('poetry', 600)];

/** Each adapter's delta per base weight, as the CPU kernel expands it. */
async function deltas(adapterDir: string): Promise<Map<string, Float32Array>> {
  const b = openCheckpoint(base);
  const a = openCheckpoint(adapterDir);
  const out = new Map<string, Float32Array>();
  for (const lm of adapterLayout(a, b).modules) out.set(lm.base!.name, await kernels.loraDelta(await readFactors(a, lm)));
  closeCheckpoint(a);
  closeCheckpoint(b);
  return out;
}

/** base + sum c_j delta_j computed in float64, rounded once to fp32: a task-arithmetic merge as a model folder. */
async function writeMerged(name: string, parts: Array<[string, number]>): Promise<string> {
  const b = openCheckpoint(base);
  const ds = await Promise.all(parts.map(([dir]) => deltas(dir)));
  const tensors: TestTensor[] = b.tensors.map((t) => {
    const w = new Float32Array(b.handles.readBytesSync(t, new Uint8Array(t.byteLength)).buffer);
    const merged = new Float32Array(t.numel);
    for (let i = 0; i < t.numel; i++) merged[i] = w[i] + parts.reduce((acc, [, c], j) => acc + c * (ds[j].get(t.name)?.[i] ?? 0), 0);
    return { name: t.name, shape: t.shape, data: merged };
  });
  closeCheckpoint(b);
  return writeModel(path.join(root, name), { model_type: 'qwen2' }, tensors);
}

const maskDir = path.join(root, 'mask');
const budget = 100;
const maskReady = maskJob({ base, adapters: dict, budget, out: maskDir }, withKernels(quietContext(), kernels));

test('mask keeps floor(budget / modules) of each module by max |delta| over the dictionary, ties to the lower index', async () => {
  const report = await maskReady;
  assert.equal(report.modules, 8);
  assert.equal(report.k, 12);
  assert.equal(report.selected, 96);
  assert.deepEqual(report.perProjection, { k_proj: 24, o_proj: 24, q_proj: 24, v_proj: 24 });
  assert.deepEqual(report.perLayer, { 0: 48, 1: 48 });
  // Recompute one module's selection independently: max |delta| over adapters, full sort.
  const ds = await Promise.all(dict.map(deltas));
  const name = weight(1, 'v_proj');
  const agg = new Float32Array(KV * H);
  for (const d of ds) d.get(name)?.forEach((v, i) => (agg[i] = Math.max(agg[i], Math.abs(v))));
  const expected = [...agg.keys()].sort((a, b) => agg[b] - agg[a] || a - b).slice(0, 12).sort((a, b) => a - b);
  const mask = Mask.open(maskDir);
  assert.deepEqual([...(await mask.indices(mask.modules.find((m) => m.name === name)!))], expected);
  mask.close();
  const hdr = readHeader(path.join(maskDir, 'mask.safetensors'));
  assert.ok(hdr.tensors.every((t) => t.dtype === 'BOOL'));
  assert.deepEqual(hdr.tensors.find((t) => t.name === weight(0, 'k_proj'))!.shape, [KV, H]);
  // Norm preservation: ||mask * delta|| / ||delta|| recomputed from the expanded deltas.
  const m2 = Mask.open(maskDir);
  for (let a = 0; a < dict.length; a++) {
    let kept = 0;
    let all = 0;
    for (const m of m2.modules) {
      const d = ds[a].get(m.name);
      if (!d) continue;
      for (const i of await m2.indices(m)) kept += d[i] * d[i];
      for (const v of d) all += v * v;
    }
    const got = report.normPreservation[path.basename(dict[a])]!;
    assert.ok(Math.abs(got - Math.sqrt(kept / all)) < 1e-6, `${dict[a]}: ${got}`);
    assert.ok(got > 0 && got < 1);
  }
  m2.close();
  assert.deepEqual(report.perModule.find((m) => m.name === weight(0, 'q_proj'))!.adapters, ['math', 'code', 'chat', 'law']);
  assert.deepEqual(report.perModule.find((m) => m.name === weight(0, 'k_proj'))!.adapters, ['math', 'code', 'law']);
});

test('masked LoRA values equal the expanded kernel delta bit for bit, also transposed (Conv1D), and the trace norm agrees', async () => {
  for (const transpose of [false, true]) {
    const f = { A: randomF32(5 * 7, 1), B: randomF32(6 * 5, 2), r: 5, out: 6, in: 7, scale: 1.5, transpose };
    const full = await kernels.loraDelta(f);
    const idx = Uint32Array.from([0, 3, 8, 20, 41]);
    assert.deepEqual([...loraValuesAt(f, idx, new Float32Array(5))], [...idx].map((i) => full[i]));
    const normSq = full.reduce((a, v) => a + v * v, 0);
    assert.ok(Math.abs(loraNormSq(f) - normSq) < 1e-6 * normSq);
  }
});

test('mask ties: equal magnitudes keep the first k elements in row-major order', async () => {
  const flat = writeAdapter(path.join(root, 'flat'), peftConfig({ r: 1, lora_alpha: 1, target_modules: ['q_proj'] }), [
    { name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight', shape: [1, H], data: new Float32Array(H).fill(0.5) },
    { name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight', shape: [H, 1], data: new Float32Array(H).fill(-0.25) },
  ]);
  const out = path.join(root, 'mask-flat');
  const r = await maskJob({ base, adapters: [flat], budget: 20, out }, withKernels(quietContext(), kernels));
  assert.equal(r.k, 20);
  const mask = Mask.open(out);
  assert.deepEqual([...(await mask.indices(mask.modules[0]))], [...Array(20).keys()]);
  mask.close();
  assert.equal(r.normPreservation.flat, Math.sqrt(20 / (H * H)));
});

test('mask refuses a budget below the number of modules, and warns on duplicate and all-zero adapters', async () => {
  await assert.rejects(maskJob({ base, adapters: dict, budget: 7, out: path.join(root, 'm-small') }, withKernels(quietContext(), kernels)), (e: Error) => {
    assert.ok(e instanceof LensError);
    assert.match(e.message, /budget 7 is smaller than the number of modules the adapters target \(8\)/);
    return true;
  });
  assert.equal(fs.existsSync(path.join(root, 'm-small')), false);
  const zero = writeLora('zero', 700, Object.keys(PROJ), 4, true);
  const ctx = quietContext();
  const out = path.join(root, 'mask-degenerate');
  const r = await maskJob({ base, adapters: [...dict, dict[0], zero], budget, out }, withKernels(ctx, kernels));
  assert.ok(ctx.warnings.some((w) => /math#2 is a duplicate of math/.test(w)), ctx.warnings.join('\n'));
  assert.ok(ctx.warnings.some((w) => /zero: its delta is zero everywhere/.test(w)), ctx.warnings.join('\n'));
  assert.equal(r.normPreservation.zero, null);
  // Neither a duplicate nor a zero adapter changes a max: the same mask.
  for (const f of ['mask.safetensors']) assert.ok(fs.readFileSync(path.join(out, f)).equals(fs.readFileSync(path.join(maskDir, f))));
});

test('compress writes one vector per input in argv order: adapter values at the mask, model minus base', async () => {
  await maskReady;
  const merged = await writeMerged('merged-one', [[dict[1], 1]]);
  const out = path.join(root, 'compressed');
  const r = await compressJob(
    { mask: maskDir, base, inputs: [{ kind: 'adapter', path: dict[1] }, { kind: 'finetuned', path: merged }, { kind: 'adapter', path: dict[2] }], out },
    withKernels(quietContext(), kernels),
  );
  assert.deepEqual(r.inputs.map((i) => [i.name, i.kind]), [['code', 'adapter'], ['merged-one', 'finetuned'], ['chat', 'adapter']]);
  assert.equal(r.selected, 96);
  const read = (file: string): Float32Array[] => {
    const h = readHeader(path.join(out, file));
    const buf = fs.readFileSync(path.join(out, file));
    return h.tensors.map((t) => new Float32Array(buf.buffer.slice(buf.byteOffset + t.offset, buf.byteOffset + t.offset + t.byteLength)));
  };
  const a = read('code.safetensors');
  const m = read('merged-one.safetensors');
  const c = read('chat.safetensors');
  assert.equal(a.length, 8);
  for (let i = 0; i < 8; i++) {
    assert.equal(a[i].length, 12);
    a[i].forEach((v, t) => assert.ok(Math.abs(v - m[i][t]) <= 1e-7, `module ${i}: ${v} vs ${m[i][t]}`));
  }
  // chat targets q and v only: zeros on k and o.
  const mask = Mask.open(maskDir);
  mask.modules.forEach((mm, i) => {
    if (/k_proj|o_proj/.test(mm.name)) assert.ok(c[i].every((v) => v === 0));
    else assert.ok(c[i].some((v) => v !== 0));
  });
  mask.close();
  assert.ok(r.inputs[0].normKept! > 0 && r.inputs[0].normKept! < 1);
  assert.ok(fs.existsSync(path.join(out, 'compress.json')));
});

const options = (target: string, method: DecomposeOptions['method'], truth?: Record<string, number>): DecomposeOptions => ({
  mask: maskDir,
  base,
  dictionary: dict,
  target,
  method,
  ...DECOMPOSE_DEFAULTS,
  lambda: 1e-4,
  positive: true,
  truth,
});

test('decompose recovers a task-arithmetic merge (fp32 model folder) with NNLS, OMP and LASSO', async () => {
  await maskReady;
  const truth = { math: 0.6, chat: 1.2, law: 0.3 };
  const merged = await writeMerged('merged-known', [
    [dict[0], 0.6],
    [dict[2], 1.2],
    [dict[3], 0.3],
  ]);
  for (const method of ['nnls', 'omp', 'lasso'] as const) {
    const r = await decomposeJob({ ...options(merged, method, truth) }, withKernels(quietContext(), kernels));
    assert.deepEqual([...r.support].sort(), ['chat', 'law', 'math'], method);
    assert.equal(r.verdict, 'decomposable');
    assert.equal(r.precision, 1);
    assert.equal(r.recall, 1);
    const tol = method === 'lasso' ? 1e-2 : 1e-5;
    assert.ok(r.coefficientError! < tol, `${method}: coefficient error ${r.coefficientError}`);
    assert.ok(Math.abs(r.coefficients.code) < 1e-5, `${method}: code ${r.coefficients.code}`);
    // LASSO's L1 term shrinks the coefficients, so its residual is of the order of lambda.
    assert.ok(r.relativeResidual < (method === 'lasso' ? 1e-3 : 1e-5) && r.reconstructionError < 1e-6, `${method}: ${r.relativeResidual}`);
  }
});

test('decompose of adapters outside the dictionary says plainly that it is not decomposable', async () => {
  await maskReady;
  const merged = await writeMerged('merged-unknown', [
    [outsiders[0], 1],
    [outsiders[1], 0.5],
  ]);
  for (const method of ['nnls', 'omp'] as const) {
    const r = await decomposeJob({ ...options(merged, method, { med: 1, poetry: 0.5 }) }, withKernels(quietContext(), kernels));
    assert.equal(r.verdict, 'not decomposable', `${method}: ${r.relativeResidual}`);
    assert.equal(r.decomposable, false);
    assert.ok(r.relativeResidual > Math.SQRT1_2);
    assert.match(r.explanation, /^Not decomposable/);
    assert.equal(r.recall, 0);
  }
  // Half known, half not: the known part is found, and the report says the rest is missing.
  const half = await writeMerged('merged-half', [
    [dict[0], 1],
    [outsiders[0], 0.6],
  ]);
  for (const method of ['nnls', 'omp'] as const) {
    const r = await decomposeJob({ ...options(half, method, { math: 1, med: 0.6 }) }, withKernels(quietContext(), kernels));
    assert.equal(r.verdict, 'partially decomposable', `${method}: ${r.relativeResidual}`);
    assert.deepEqual(r.support, ['math'], `${method}: ${JSON.stringify(r.coefficients)}`);
    assert.match(r.explanation, /outside the dictionary/);
    assert.deepEqual([r.precision, r.recall], [1, 0.5]);
  }
});

test('decompose of an adapter target, with a duplicate and a zero atom in the dictionary', async () => {
  await maskReady;
  const zero = writeLora('zero2', 800, Object.keys(PROJ), 4, true);
  const ctx = quietContext();
  const r = await decomposeJob({ ...options(dict[1], 'omp'), dictionary: [...dict, zero] }, withKernels(ctx, kernels));
  assert.deepEqual(r.support, ['code']);
  assert.ok(Math.abs(r.coefficients.code - 1) < 1e-9);
  assert.equal(r.coefficients.zero2, 0);
  assert.ok(ctx.warnings.some((w) => /zero2: its task vector is zero/.test(w)));
  const dup = await decomposeJob({ ...options(dict[1], 'nnls'), dictionary: [dict[0], dict[1], dict[1]] }, withKernels(quietContext(), kernels));
  assert.ok(dup.warnings.some((w) => /duplicates on the mask/.test(w)));
  assert.ok(Math.abs(dup.coefficients.code + dup.coefficients['code#2'] - 1) < 1e-9);
  // OMP takes one of two identical atoms and skips the other; LASSO splits the weight between them.
  for (const method of ['omp', 'lasso'] as const) {
    const r2 = await decomposeJob({ ...options(dict[1], method), dictionary: [dict[0], dict[1], dict[1]] }, withKernels(quietContext(), kernels));
    assert.ok(r2.warnings.some((w) => /duplicates on the mask/.test(w)), method);
    assert.ok(Math.abs(r2.coefficients.code + r2.coefficients['code#2'] - 1) < (method === 'lasso' ? 1e-3 : 1e-9), `${method}: ${JSON.stringify(r2.coefficients)}`);
    assert.equal(r2.coefficients.math, 0, method);
    if (method === 'omp') assert.equal(r2.support.length, 1);
  }
  // A truth naming an adapter the dictionary does not have is said, not silently scored.
  const typo = await decomposeJob({ ...options(dict[1], 'nnls', { cod: 1 }) }, withKernels(quietContext(), kernels));
  assert.ok(typo.warnings.some((w) => /--truth names cod, not in the dictionary/.test(w)), typo.warnings.join('\n'));
  assert.deepEqual([typo.precision, typo.recall], [0, 0]);
  await assert.rejects(decomposeJob({ ...options(base, 'nnls') }, withKernels(quietContext(), kernels)), /nothing to decompose/);
});

test('uniqueNames lengthens clashing basenames and numbers repeats', () => {
  assert.deepEqual(uniqueNames(['/x/run1/adapter', '/x/run2/adapter', '/x/math', '/x/math']), ['run1/adapter', 'run2/adapter', 'math', 'math#2']);
});

test('ulp: the spacing of each storage dtype around a value, subnormals included', () => {
  assert.deepEqual(['BF16', 'F16', 'F32'].map((d) => ulp(d, 1)), [2 ** -7, 2 ** -10, 2 ** -23]);
  assert.deepEqual(['BF16', 'F16', 'F32'].map((d) => ulp(d, -0.75)), [2 ** -8, 2 ** -11, 2 ** -24]);
  assert.equal(ulp('F16', 1e-6), 2 ** -24);
  assert.equal(ulp('BF16', 0), 2 ** -133);
  assert.equal(ulp('F32', 1e-40), 2 ** -149);
});

test('mask: a non-finite factor in a later module fails with the file and tensor named, and leaves no output', async () => {
  const tensors: TestTensor[] = [];
  for (let l = 0; l < LAYERS; l++) {
    for (const p of Object.keys(PROJ)) {
      const [out, inn] = PROJ[p];
      const pair = loraPair(`model.layers.${l}.self_attn.${p}`, 2, inn, out, 900 + l);
      if (l === 1 && p === 'v_proj') (pair[0].data as Float32Array)[3] = NaN;
      tensors.push(...pair);
    }
  }
  const bad = writeAdapter(path.join(root, 'nan'), peftConfig({ r: 2, lora_alpha: 4, target_modules: Object.keys(PROJ) }), tensors);
  const out = path.join(root, 'mask-nan');
  await assert.rejects(maskJob({ base, adapters: [dict[0], bad], budget, out }, withKernels(quietContext(), kernels)), (e: Error) => {
    assert.ok(e instanceof LensError);
    assert.match(e.message, /non-finite value at element 3 of a LoRA factor/);
    assert.match(e.message, /layers\.1\.self_attn\.v_proj\.lora_A/);
    return true;
  });
  assert.equal(fs.existsSync(out), false);
});
