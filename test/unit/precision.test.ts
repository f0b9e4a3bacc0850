/**
 * The 483 / 120 / 363 structure of StarCoder2-3B (30 layers, q/k/v/o LoRA) on a narrow model with its
 * exact tensor list: at bf16 from an fp32 base every tensor changes, 120 by the adapter, 363 by the cast.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { precisionJob } from '../../src/engine/jobs/precision';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { writeSyntheticAdapter } from '../../src/engine/synthetic/adapter';
import { STARCODER2_3B } from '../../src/engine/synthetic/configs';
import { writeSyntheticModel } from '../../src/engine/synthetic/model';
import { quietContext } from '../../src/engine/util/job';
import { tmpDir } from './helpers/builders';
import { withKernels } from '../../src/engine/kernels/kernels';

test('precision on a StarCoder2-3B-shaped model: 483 tensors, 120 adapted, 363 cast artifacts', async () => {
  const root = tmpDir();
  const config = { ...STARCODER2_3B, hidden_size: 16, intermediate_size: 32, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 32 };
  const model = writeSyntheticModel(path.join(root, 'base'), config, { dtype: 'F32' });
  assert.equal(model.tensors.length, 483);
  const adapter = writeSyntheticAdapter(path.join(root, 'adapter'), config, { targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], r: 2 });
  assert.equal(adapter.modules.length, 120);
  const r = await precisionJob({ base: model.dir, adapter: adapter.dir, dtypes: ['bf16'], rules: ['peft'] }, withKernels(quietContext(), new CpuKernels()));
  const bf = r.dtypes.bf16!;
  assert.equal(bf.nonzeroTensors, 483);
  assert.equal(bf.adaptedTensors, 120);
  assert.equal(bf.castArtifactTensors, 363);
  assert.ok(bf.castArtifactNorm > 0);
});
