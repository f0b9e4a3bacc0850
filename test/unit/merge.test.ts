/**
 * merge, extract, compare, precision and validate on tiny checkpoints: hand-checked deltas, the rounding
 * rules at ties and subnormals, orientation, replacements, sharding, blocks, errors and cancellation.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { CancelledError, LensError } from '../../src/engine/errors';
import { compareJob } from '../../src/engine/jobs/compare';
import { extractJob } from '../../src/engine/jobs/extract';
import { mergeJob } from '../../src/engine/jobs/merge';
import { precisionJob } from '../../src/engine/jobs/precision';
import { blocksOf } from '../../src/engine/tensors/stream';
import { validateJob } from '../../src/engine/jobs/validate';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { mergeHalfElement } from '../../src/engine/kernels/cpuMath';
import { quietContext } from '../../src/engine/util/job';
import { peftConfig, randomF32, tmpDir, writeAdapter, writeModel } from './helpers/builders';
import { readAll } from './helpers/tensors';
import { withKernels } from '../../src/engine/kernels/kernels';

const kernels = new CpuKernels();
const ctx = quietContext();
const LLAMA = { model_type: 'llama', torch_dtype: 'float32' };

/** A 2-layer base with q (4x3), a norm and an embedding, and an adapter on q with hand-picked factors. */
function tiny(root: string, config: Record<string, unknown> = {}): { base: string; adapter: string; W: Float32Array } {
  const W = new Float32Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  const base = writeModel(path.join(root, 'base'), LLAMA, [
    { name: 'model.embed_tokens.weight', shape: [5, 3] },
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [4, 3], data: W },
    { name: 'model.layers.0.input_layernorm.weight', shape: [3], data: new Float32Array([1, 1, 1]) },
  ]);
  // B @ A = [[1,0,1],[0,1,0],[1,1,1],[0,0,0]] with r = 2; alpha 4 -> s = 2.
  const adapter = writeAdapter(path.join(root, 'adapter'), peftConfig({ r: 2, lora_alpha: 4, target_modules: ['q_proj'], ...config }), [
    { name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight', shape: [2, 3], data: new Float32Array([1, 0, 1, 0, 1, 0]) },
    { name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight', shape: [4, 2], data: new Float32Array([1, 0, 0, 1, 1, 1, 0, 0]) },
  ]);
  return { base, adapter, W };
}

test('merge at fp32 adds the hand-checked delta s * B @ A and copies the rest', async () => {
  const root = tmpDir();
  const { base, adapter } = tiny(root);
  fs.writeFileSync(path.join(base, 'tokenizer.json'), '{}');
  const r = await mergeJob({ base, adapter, out: path.join(root, 'out'), dtype: 'fp32', rule: 'peft' }, withKernels(ctx, kernels));
  assert.equal(r.loraTensors, 1);
  const m = readAll(path.join(root, 'out'));
  assert.deepEqual([...m.get('model.layers.0.self_attn.q_proj.weight')!], [3, 2, 5, 4, 7, 6, 9, 10, 11, 10, 11, 12]);
  assert.deepEqual(m.get('model.embed_tokens.weight'), readAll(base).get('model.embed_tokens.weight'));
  const cfg = JSON.parse(fs.readFileSync(path.join(root, 'out', 'config.json'), 'utf8'));
  assert.equal(cfg.torch_dtype, 'float32');
  assert.ok(fs.existsSync(path.join(root, 'out', 'tokenizer.json')));
});

test('blocksOf cuts a tensor into whole-row blocks of bounded size', async () => {
  const t = { name: 'x', dtype: 'F32' as const, shape: [10, 3], numel: 30, offset: 0, byteLength: 120, file: 'f' };
  const blocks = blocksOf(t, 9);
  assert.deepEqual(blocks.map((b) => [b.row0, b.row1]), [[0, 3], [3, 6], [6, 9], [9, 10]]);
  assert.ok(blocks[0].first && blocks[3].last && !blocks[1].first);
});

test('merge rules at ties and subnormals differ exactly as defined', () => {
  // bf16 has 8 significant bits: 1 + 2^-8 is a tie between 1 and 1 + 2^-7.
  const w = 1;
  const d = 2 ** -8;
  assert.equal(mergeHalfElement('BF16', 'peft', w, d), 0x3f80); // tie to even: 1
  assert.equal(mergeHalfElement('BF16', 'peft', w, d * 1.5), 0x3f81); // above the tie
  // peft-safe rounds d first; fp32-cast adds to the unrounded W.
  const w2 = 1 + 2 ** -9; // r(W) = 1
  assert.equal(mergeHalfElement('BF16', 'fp32-cast', w2, 2 ** -8), 0x3f81); // 1 + 2^-8 + 2^-9 > tie
  assert.equal(mergeHalfElement('BF16', 'peft', w2, 2 ** -8), 0x3f80); // r(W) + d = tie -> even
  // fp16 subnormals: 2^-24 is the smallest; 2^-25 ties to zero, 3 * 2^-26 rounds up.
  assert.equal(mergeHalfElement('F16', 'peft', 0, 2 ** -25), 0x0000);
  assert.equal(mergeHalfElement('F16', 'peft', 0, 3 * 2 ** -26), 0x0001);
  assert.equal(mergeHalfElement('F16', 'peft-safe', 2 ** -24, 2 ** -25), 0x0001); // r(d) = 0
  assert.equal(mergeHalfElement('F16', 'peft', 2 ** -24, 2 ** -25), 0x0002); // 1.5 units ties to even 2
});

test('merge transposes for Conv1D whatever fan_in_fan_out says, and warns', async () => {
  const root = tmpDir();
  const base = writeModel(path.join(root, 'base'), { model_type: 'gpt2' }, [{ name: 'h.0.attn.c_attn.weight', shape: [3, 6] }]);
  const adapter = writeAdapter(path.join(root, 'ad'), peftConfig({ r: 1, lora_alpha: 1, target_modules: ['c_attn'], fan_in_fan_out: false }), [
    { name: 'base_model.model.h.0.attn.c_attn.lora_A.weight', shape: [1, 3], data: new Float32Array([1, 2, 3]) },
    { name: 'base_model.model.h.0.attn.c_attn.lora_B.weight', shape: [6, 1], data: new Float32Array([1, 0, 0, 0, 0, 2]) },
  ]);
  const c = quietContext();
  await mergeJob({ base, adapter, out: path.join(root, 'out'), dtype: 'fp32', rule: 'peft' }, withKernels(c, kernels));
  const W = readAll(base).get('h.0.attn.c_attn.weight')!;
  const M = readAll(path.join(root, 'out')).get('h.0.attn.c_attn.weight')!;
  // delta[i][j] (stored [in=3, out=6]) = A[i] * B[j]
  for (let i = 0; i < 3; i++) for (let j = 0; j < 6; j++) assert.equal(M[i * 6 + j], Math.fround(W[i * 6 + j] + [1, 0, 0, 0, 0, 2][j] * (i + 1)));
  assert.ok(c.warnings.some((w) => w.includes('fan_in_fan_out')));
});

test('merge shards above --shard-size, with an index', async () => {
  const root = tmpDir();
  const { base, adapter } = tiny(root);
  const r = await mergeJob({ base, adapter, out: path.join(root, 'out'), dtype: 'bf16', rule: 'peft', shardSize: 40 }, withKernels(ctx, kernels));
  assert.ok(r.files.length > 1);
  assert.ok(fs.existsSync(path.join(root, 'out', 'model.safetensors.index.json')));
  assert.equal(openCheckpoint(path.join(root, 'out')).tensors.length, 3);
});

test('merge: a target missing from the base is a LensError naming it; nothing is left behind', async () => {
  const root = tmpDir();
  const { base } = tiny(root);
  const adapter = writeAdapter(path.join(root, 'bad'), peftConfig({ r: 2 }), [
    { name: 'base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight', shape: [2, 3] },
    { name: 'base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight', shape: [4, 2] },
  ]);
  await assert.rejects(mergeJob(
    { base, adapter, out: path.join(root, 'out'), dtype: 'fp32', rule: 'peft' },
    withKernels(ctx, kernels),
  ), (e: unknown) => e instanceof LensError && /v_proj/.test((e as Error).message));
  assert.deepEqual(fs.readdirSync(root).sort(), ['adapter', 'bad', 'base']);
});

test('merge: cancellation leaves no output folder', async () => {
  const root = tmpDir();
  const { base, adapter } = tiny(root);
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(mergeJob(
    { base, adapter, out: path.join(root, 'out'), dtype: 'fp16', rule: 'peft' },
    withKernels(quietContext(ac.signal), kernels),
  ), CancelledError);
  assert.deepEqual(fs.readdirSync(root).sort(), ['adapter', 'base']);
});

test('extract, then compare against the file and against the finetuned folder: equivalent at fp32', async () => {
  const root = tmpDir();
  const { base, adapter } = tiny(root);
  const merged = path.join(root, 'm32');
  await mergeJob({ base, adapter, out: merged, dtype: 'fp32', rule: 'peft' }, withKernels(ctx, kernels));
  const tv = path.join(root, 'tv.safetensors');
  const x = await extractJob({ base, finetuned: merged, out: tv }, withKernels(ctx, kernels));
  assert.equal(x.summary.nonzeroTensors, 1);
  assert.equal(x.summary.zeroTensors, 2);
  assert.equal(x.summary.nonzeroElements, 6);
  assert.equal(openCheckpoint(tv).kind, 'task-vector');
  for (const source of [{ taskVector: tv }, { finetuned: merged }]) {
    const out = path.join(root, `cmp-${Object.keys(source)[0]}`);
    const r = await compareJob({ base, adapter, ...source, out, tolerance: 1e-5, saveDeltas: true }, withKernels(ctx, kernels));
    assert.equal(r.summary.shared, 1);
    assert.equal(r.summary.perfectMatches, 1);
    assert.equal(r.summary.equivalent, true);
    assert.equal(r.tensors[0].cosine, 1);
    assert.equal(r.tensors[0].category, 'attention');
    assert.ok(fs.existsSync(path.join(out, 'comparison_results.json')) && fs.existsSync(path.join(out, 'lora_deltas.safetensors')));
    assert.match(fs.readFileSync(path.join(out, 'report.txt'), 'utf8'), /EQUIVALENT/);
  }
});

test('extract reports mismatched tensor sets and NaN instead of crashing', async () => {
  const root = tmpDir();
  const base = writeModel(path.join(root, 'a'), LLAMA, [{ name: 'x', shape: [2] }, { name: 'y', shape: [2] }, { name: 'z', shape: [3] }]);
  const ft = writeModel(path.join(root, 'b'), LLAMA, [{ name: 'x', shape: [2], data: new Float32Array([NaN, 1]) }, { name: 'y', shape: [3] }, { name: 'w', shape: [1] }]);
  const r = await extractJob({ base, finetuned: ft, out: path.join(root, 'tv.safetensors') }, withKernels(quietContext(), kernels));
  assert.deepEqual(r.onlyInBase, ['z']);
  assert.deepEqual(r.onlyInFinetuned, ['w']);
  assert.deepEqual(r.shapeMismatches.map((m) => m.name), ['y']);
  assert.deepEqual(r.nonFinite, [{ name: 'x', elements: 1 }]);
});

test('compare at bf16 finds the cast artifacts and is not equivalent; a cosine never exceeds 1', async () => {
  const root = tmpDir();
  const { base, adapter } = tiny(root);
  const merged = path.join(root, 'mbf16');
  await mergeJob({ base, adapter, out: merged, dtype: 'bf16', rule: 'peft' }, withKernels(ctx, kernels));
  const r = await compareJob({ base, adapter, finetuned: merged, out: path.join(root, 'cmp'), tolerance: 1e-5, saveDeltas: false }, withKernels(ctx, kernels));
  assert.equal(r.summary.taskVectorOnly, 1); // the random embedding (the norm weight of ones is exact in bf16)
  assert.ok(r.summary.taskVectorOnlyNorm! > 0);
  for (const t of r.tensors) assert.ok(t.cosine === null || Math.abs(t.cosine) <= 1);
});

test('precision counts cast artifacts and lost delta elements per dtype and rule', async () => {
  const root = tmpDir();
  const W = randomF32(64 * 8, 3, 1);
  const base = writeModel(path.join(root, 'base'), LLAMA, [
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [64, 8], data: W },
    { name: 'model.layers.0.self_attn.k_proj.weight', shape: [64, 8] },
    { name: 'model.norm.weight', shape: [8], data: new Float32Array(8).fill(1) },
  ]);
  // A tiny delta (1e-6 against weights ~0.5) is lost entirely at bf16.
  const adapter = writeAdapter(path.join(root, 'ad'), peftConfig({ r: 1, lora_alpha: 1, target_modules: ['q_proj'] }), [
    { name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight', shape: [1, 8], data: new Float32Array(8).fill(1e-3) },
    { name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight', shape: [64, 1], data: new Float32Array(64).fill(1e-3) },
  ]);
  const r = await precisionJob({ base, adapter, dtypes: ['fp16', 'bf16'], rules: ['peft', 'peft-safe', 'fp32-cast'] }, withKernels(ctx, kernels));
  const bf = r.dtypes.bf16!;
  assert.equal(bf.rule, 'peft');
  assert.equal(bf.castArtifactTensors, 1); // k_proj; the norm of ones is exact
  assert.equal(bf.nonzeroTensors, 2);
  assert.equal(bf.deltaElements, 512);
  assert.ok(bf.deltaLostFraction! > 0.99);
  assert.ok(r.dtypes.fp16!.deltaLostFraction! < bf.deltaLostFraction!);
  assert.equal(r.tensors.filter((t) => t.dtype === 'bf16' && t.rule === 'peft').length, 3);
  assert.ok(Object.keys(bf.rules).length === 3);
});

test('validate --keep-models writes per-dtype folders with the models, and a summary whose verdicts hold', async () => {
  const root = tmpDir();
  const { base, adapter } = tiny(root);
  const out = path.join(root, 'val');
  const r = await validateJob({ base, adapter, out, dtypes: ['fp32', 'bf16'], rule: 'peft', tolerance: 1e-5, keepModels: true }, withKernels(ctx, kernels));
  assert.equal(r.ok, true);
  assert.deepEqual(r.dtypes.map((d) => d.status), ['PASS', 'EXPECTED-LOSS']);
  for (const f of ['summary.json', 'report.txt', 'fp32/merged/model.safetensors', 'fp32/task_vector.safetensors', 'fp32/comparison_results.json', 'bf16/precision.json']) {
    assert.ok(fs.existsSync(path.join(out, f)), f);
  }
});

test('validate without keepModels leaves reports only: no merged model, no task vector', async () => {
  const root = tmpDir();
  const { base, adapter } = tiny(root);
  const out = path.join(root, 'val');
  const r = await validateJob({ base, adapter, out, dtypes: ['fp32', 'bf16'], rule: 'peft', tolerance: 1e-5, keepModels: false }, withKernels(ctx, kernels));
  assert.equal(r.ok, true);
  assert.equal(r.keptModels, false);
  for (const d of ['fp32', 'bf16']) {
    assert.ok(fs.existsSync(path.join(out, d, 'comparison_results.json')), `${d} report`);
    assert.ok(!fs.existsSync(path.join(out, d, 'merged')) && !fs.existsSync(path.join(out, d, 'task_vector.safetensors')), `${d} models removed`);
  }
  assert.match(fs.readFileSync(path.join(out, 'report.txt'), 'utf8'), /not kept; --keep-models keeps it/);
});
