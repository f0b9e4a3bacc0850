/**
 * An adapter as PEFT initialises it (lora_B all zeros): every delta is zero, so the fp32 merge is the
 * base itself and every tensor a half-precision merge changes is a cast artifact. precision, validate
 * and the CLI's reports must say so with defined numbers (null where a figure has no meaning, never NaN).
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { precisionJob } from '../../src/engine/jobs/precision';
import { validateJob } from '../../src/engine/jobs/validate';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { quietContext } from '../../src/engine/util/job';
import { peftConfig, tmpDir, writeAdapter, writeModel } from './helpers/builders';
import { withKernels } from '../../src/engine/kernels/kernels';

const CLI = path.resolve(__dirname, '../../../dist/cli.js');

/** Every number in a parsed report is finite (JSON cannot hold NaN; this also catches a stray string). */
function finiteNumbers(v: unknown, where = '$'): void {
  if (typeof v === 'number') assert.ok(Number.isFinite(v), where);
  else if (typeof v === 'string') assert.ok(!/^(NaN|-?Infinity)$/.test(v), `${where} = ${v}`);
  else if (Array.isArray(v)) v.forEach((x, i) => finiteNumbers(x, `${where}[${i}]`));
  else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) finiteNumbers(x, `${where}.${k}`);
}

describe('an adapter whose lora_B is all zeros', () => {
  const root = tmpDir('lora-lens-zero-');
  const base = writeModel(path.join(root, 'base'), { model_type: 'llama', architectures: ['LlamaForCausalLM'] }, [
    { name: 'model.embed_tokens.weight', shape: [16, 8] },
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [8, 8] },
    { name: 'model.layers.0.self_attn.v_proj.weight', shape: [4, 8] },
    { name: 'model.layers.0.input_layernorm.weight', shape: [8] },
    { name: 'model.norm.weight', shape: [8] },
  ]);
  const zeroB = (module: string, inF: number, outF: number) => [
    { name: `base_model.model.${module}.lora_A.weight`, shape: [2, inF], data: 3 },
    { name: `base_model.model.${module}.lora_B.weight`, shape: [outF, 2], data: new Float32Array(outF * 2) },
  ];
  const adapter = writeAdapter(path.join(root, 'adapter'), peftConfig({ r: 2, lora_alpha: 4 }), [
    ...zeroB('model.layers.0.self_attn.q_proj', 8, 8),
    ...zeroB('model.layers.0.self_attn.v_proj', 8, 4),
  ]);

  it('precision: the targeted tensors change by the cast alone, so they are cast artifacts with no delta lost', async () => {
    const r = await precisionJob({ base, adapter, dtypes: ['fp16', 'bf16'], rules: ['peft'] }, withKernels(quietContext(), new CpuKernels()));
    for (const d of ['fp16', 'bf16'] as const) {
      const f = r.dtypes[d]!;
      assert.equal(f.nonzeroTensors, 5, d);
      assert.equal(f.castArtifactTensors, 5, d);
      assert.equal(f.adaptedTensors, 0, d);
      assert.equal(f.deltaLostFraction, null, d);
      assert.equal(f.recoveredRelErr, null, d);
    }
    const q = r.tensors.find((t) => t.name === 'model.layers.0.self_attn.q_proj.weight' && t.dtype === 'bf16')!;
    assert.equal(q.loraTarget, true);
    assert.equal(q.castArtifactTensors, 1);
  });

  it('validate: the fp32 merge passes (it is the base), bf16 shows exactly the predicted cast loss', async () => {
    const r = await validateJob(
      { base, adapter, out: path.join(root, 'validate'), dtypes: ['fp32', 'bf16'], rule: 'peft', tolerance: 1e-5, keepModels: false },
      withKernels(quietContext(), new CpuKernels()),
    );
    assert.deepEqual(r.dtypes.map((d) => [d.dtype, d.status]), [['fp32', 'PASS'], ['bf16', 'EXPECTED-LOSS']]);
    assert.equal(r.ok, true);
    finiteNumbers(JSON.parse(fs.readFileSync(path.join(root, 'validate', 'summary.json'), 'utf8')));
  });

  it('the CLI reports: cosine and relative error null for the zero side, every other number finite', () => {
    const run = (...args: string[]) => {
      const p = spawnSync(process.execPath, [CLI, ...args, '--device', 'cpu', '--json', '-'], { encoding: 'utf8' });
      assert.equal(p.status, 0, p.stderr);
      const report = JSON.parse(p.stdout);
      finiteNumbers(report);
      return report;
    };
    const cmp = run('compare', '--base', base, '--adapter', adapter, '--finetuned', base, '--out', path.join(root, 'cmp'));
    assert.equal(cmp.summary.shared, 0);
    assert.equal(cmp.summary.meanCosine, null);
    const prec = run('precision', '--base', base, '--adapter', adapter);
    assert.equal(prec.dtypes.bf16.castArtifactTensors, prec.dtypes.bf16.nonzeroTensors);
    const tv = run('extract', '--base', base, '--finetuned', base, '--out', path.join(root, 'tv.safetensors'));
    assert.deepEqual([tv.summary.nonzeroTensors, tv.summary.zeroTensors, tv.summary.nonzeroElements], [0, 5, 0]);
    // finetuned != base on a targeted tensor while the adapter's delta is zero: a cosine with a zero vector.
    const ft = writeModel(path.join(root, 'ft'), { model_type: 'llama' }, [
      { name: 'model.embed_tokens.weight', shape: [16, 8] },
      { name: 'model.layers.0.self_attn.q_proj.weight', shape: [8, 8], data: 99 },
      { name: 'model.layers.0.self_attn.v_proj.weight', shape: [4, 8] },
      { name: 'model.layers.0.input_layernorm.weight', shape: [8] },
      { name: 'model.norm.weight', shape: [8] },
    ]);
    const c2 = run('compare', '--base', base, '--adapter', adapter, '--finetuned', ft, '--out', path.join(root, 'cmp2'));
    const q = c2.tensors.find((t: { name: string }) => t.name === 'model.layers.0.self_attn.q_proj.weight');
    assert.equal(q.cosine, null);
    assert.equal(q.loraNorm, 0);
    assert.ok(q.taskVectorNorm > 0);
    assert.equal(c2.summary.taskVectorOnly, 1);
  });
});
