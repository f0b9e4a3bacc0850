/**
 * compare against a merged model judges it by the rounding its dtype must make (as validate does): a
 * bf16/fp16 merge of any rule is an EXPECTED-LOSS, while the strict `equivalent` (CLI.md: every shared
 * tensor within --tolerance) stays false; a change larger than that rounding is NOT-EQUIVALENT.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { compareJob } from '../../src/engine/jobs/compare';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { MergeRule } from '../../src/shared/jobs/choices';
import { bytesToF32 } from '../../src/engine/safetensors/reader';
import { quietContext } from '../../src/engine/util/job';
import { peftConfig, randomF32, tmpDir, writeAdapter, writeModel } from './helpers/builders';
import { withKernels } from '../../src/engine/kernels/kernels';

const kernels = new CpuKernels();
const ctx = quietContext();
const LLAMA = { model_type: 'llama', torch_dtype: 'float32' };
const Q = 'model.layers.0.self_attn.q_proj.weight';

function fixture(root: string): { base: string; adapter: string; W: Float32Array } {
  const W = randomF32(16 * 16, 7, 0.5);
  const base = writeModel(path.join(root, 'base'), LLAMA, [
    { name: 'model.embed_tokens.weight', shape: [8, 16] },
    { name: Q, shape: [16, 16], data: W },
    { name: 'model.layers.0.input_layernorm.weight', shape: [16] },
  ]);
  const adapter = writeAdapter(path.join(root, 'adapter'), peftConfig({ r: 2, lora_alpha: 2, target_modules: ['q_proj'] }), [
    { name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight', shape: [2, 16], data: randomF32(32, 3, 0.1) },
    { name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight', shape: [16, 2], data: randomF32(32, 4, 0.1) },
  ]);
  return { base, adapter, W };
}

test('compare of a half-precision merge: EXPECTED-LOSS for every rule and dtype, strict verdict kept', async () => {
  const root = tmpDir();
  const { base, adapter } = fixture(root);
  for (const dtype of ['bf16', 'fp16'] as const) {
    for (const rule of ['peft', 'peft-safe', 'fp32-cast'] as MergeRule[]) {
      const merged = path.join(root, `m-${dtype}-${rule}`);
      await mergeJob({ base, adapter, out: merged, dtype, rule }, withKernels(ctx, kernels));
      const r = await compareJob(
        { base, adapter, finetuned: merged, out: path.join(root, `c-${dtype}-${rule}`), tolerance: 1e-5, saveDeltas: false },
        withKernels(ctx, kernels),
      );
      const s = r.summary;
      assert.equal(s.mergedDtype, dtype);
      assert.equal(s.equivalent, false, `${dtype} ${rule}: the rounding exceeds 1e-5, strictly`);
      assert.equal(s.dtypeVerdict, 'EXPECTED-LOSS', `${dtype} ${rule}`);
      assert.equal(s.withinRounding, true);
      assert.equal(s.outsideRoundingTensors, 0);
      assert.match(s.verdict, new RegExp(`^EXPECTED LOSS at ${dtype}`));
      assert.match(s.verdict, /Strict check: NOT EQUIVALENT/);
      assert.ok(r.tensors.every((t) => t.withinRounding === true));
    }
  }
});

test('compare of an fp32 merge is EQUIVALENT both ways; of a task vector file it names no merged dtype', async () => {
  const root = tmpDir();
  const { base, adapter } = fixture(root);
  const merged = path.join(root, 'm32');
  await mergeJob({ base, adapter, out: merged, dtype: 'fp32', rule: 'peft' }, withKernels(ctx, kernels));
  const r = await compareJob({ base, adapter, finetuned: merged, out: path.join(root, 'c32'), tolerance: 1e-5, saveDeltas: false }, withKernels(ctx, kernels));
  assert.equal(r.summary.mergedDtype, 'fp32');
  assert.equal(r.summary.equivalent, true);
  assert.equal(r.summary.dtypeVerdict, 'EQUIVALENT');
  assert.match(r.summary.verdict, /^EQUIVALENT/);
});

test('compare: a bf16 model changed by more than bf16 rounding is NOT-EQUIVALENT, naming how many tensors', async () => {
  const root = tmpDir();
  const { base, adapter, W } = fixture(root);
  const merged = path.join(root, 'mbf16');
  await mergeJob({ base, adapter, out: merged, dtype: 'bf16', rule: 'peft' }, withKernels(ctx, kernels));
  // A "fine-tuned" bf16 model: the same merge, with one q_proj element moved by 5% (many bf16 ulps).
  const tampered = path.join(root, 'tampered');
  const c = openCheckpoint(merged);
  const m = new Map(c.tensors.map((t) => [t.name, bytesToF32(t, c.handles.readBytesSync(t, new Uint8Array(t.byteLength)), new Float32Array(t.numel)).slice()]));
  c.handles.close();
  const q = m.get(Q)!;
  q[5] = q[5] + 0.05 * Math.abs(W[5]) + 0.01;
  writeModel(tampered, { ...LLAMA, torch_dtype: 'bfloat16' }, [...m].map(([name, data]) => ({ name, dtype: 'BF16' as const, shape: name === Q ? [16, 16] : name.includes('embed') ? [8, 16] : [16], data })));
  const r = await compareJob({ base, adapter, finetuned: tampered, out: path.join(root, 'ct'), tolerance: 1e-5, saveDeltas: false }, withKernels(ctx, kernels));
  assert.equal(r.summary.dtypeVerdict, 'NOT-EQUIVALENT');
  assert.equal(r.summary.outsideRoundingTensors, 1);
  assert.equal(r.tensors.find((t) => t.name === Q)?.withinRounding, false);
  assert.match(r.summary.verdict, /^NOT EQUIVALENT even allowing for bf16 rounding: 1 tensor/);
});
