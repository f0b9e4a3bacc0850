import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { adapterLayout } from '../../src/engine/checkpoint/adapter';
import { Checkpoint, closeCheckpoint, openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { LensError } from '../../src/engine/errors';
import { loraPair, lowRank, peftConfig, TestTensor, tmpDir, writeAdapter, writeModel } from './helpers/builders';

const root = tmpDir();
let n = 0;
function adapter(cfg: Record<string, unknown>, tensors: TestTensor[]): Checkpoint {
  return openCheckpoint(writeAdapter(path.join(root, `a${n++}`), peftConfig(cfg), tensors));
}
function model(config: Record<string, unknown>, tensors: TestTensor[]): Checkpoint {
  return openCheckpoint(writeModel(path.join(root, `m${n++}`), config, tensors));
}
const P = 'base_model.model.';
const lensError =
  (detail: RegExp, tensor?: string) =>
  (e: unknown): boolean =>
    e instanceof LensError && detail.test(e.detail) && (tensor === undefined || e.tensor === tensor);

describe('adapterLayout', () => {
  const llama = model({ model_type: 'llama' }, [
    { name: 'model.embed_tokens.weight', shape: [20, 8] },
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [8, 8] },
    { name: 'model.layers.0.self_attn.k_proj.weight', shape: [4, 8] },
    { name: 'model.layers.0.mlp.down_proj.weight', shape: [8, 12] },
    { name: 'model.norm.weight', shape: [8] },
    { name: 'lm_head.weight', shape: [20, 8] },
  ]);

  it("maps PEFT's keys to modules and base tensors: Linear, GQA-narrow k, embedding, DoRA, modules_to_save", () => {
    const a = adapter({ r: 2, lora_alpha: 4, use_dora: true, target_modules: ['q_proj', 'k_proj', 'down_proj', 'embed_tokens'], modules_to_save: ['lm_head'] }, [
      ...loraPair('model.layers.0.self_attn.q_proj', 2, 8, 8),
      ...loraPair('model.layers.0.self_attn.k_proj', 2, 8, 4),
      ...loraPair('model.layers.0.mlp.down_proj', 2, 12, 8),
      { name: `${P}model.layers.0.self_attn.q_proj.lora_magnitude_vector`, shape: [8] },
      { name: `${P}model.embed_tokens.lora_embedding_A`, shape: [2, 20] },
      { name: `${P}model.embed_tokens.lora_embedding_B`, shape: [8, 2] },
      { name: `${P}lm_head.modules_to_save.default.weight`, shape: [20, 8] },
    ]);
    const l = adapterLayout(a, llama);
    const by = new Map(l.modules.map((m) => [m.module, m]));
    assert.deepEqual([...by.keys()].sort(), ['model.embed_tokens', 'model.layers.0.mlp.down_proj', 'model.layers.0.self_attn.k_proj', 'model.layers.0.self_attn.q_proj']);
    const k = by.get('model.layers.0.self_attn.k_proj')!;
    assert.deepEqual([k.in, k.out, lowRank(k).r, lowRank(k).scale, k.transpose, k.base!.name], [8, 4, 2, 2, false, 'model.layers.0.self_attn.k_proj.weight']);
    assert.equal(lowRank(by.get('model.layers.0.self_attn.q_proj')!).magnitude!.name, `${P}model.layers.0.self_attn.q_proj.lora_magnitude_vector`);
    const d = by.get('model.layers.0.mlp.down_proj')!;
    assert.deepEqual([d.in, d.out], [12, 8]);
    const e = by.get('model.embed_tokens')!;
    assert.deepEqual([e.embedding, e.transpose, e.base!.name], [true, true, 'model.embed_tokens.weight']);
    assert.deepEqual(l.replacements.map((r) => [r.target, r.base?.name]), [['lm_head.weight', 'lm_head.weight']]);
    assert.deepEqual(l.warnings, []);
    closeCheckpoint(a);
  });

  it('strips base_layer from keys and warns when lora_A rank differs from the config', () => {
    const a = adapter({ r: 4 }, [
      { name: `${P}model.layers.0.self_attn.q_proj.base_layer.lora_A.weight`, shape: [2, 8] },
      { name: `${P}model.layers.0.self_attn.q_proj.base_layer.lora_B.weight`, shape: [8, 2] },
    ]);
    const l = adapterLayout(a, llama);
    assert.equal(l.modules[0].module, 'model.layers.0.self_attn.q_proj');
    assert.equal(lowRank(l.modules[0]).scale, 16 / 4);
    assert.match(l.warnings[0], /lora_A has rank 2 but the config gives r=4/);
  });

  it('bad adapters are LensErrors naming the tensor', () => {
    const onlyA = adapter({}, [loraPair('model.layers.0.self_attn.q_proj', 2, 8, 8)[0]]);
    assert.throws(() => adapterLayout(onlyA), lensError(/has lora_A but no lora_B/, `${P}model.layers.0.self_attn.q_proj.lora_A.weight`));
    const mismatch = adapter({}, [
      { name: `${P}model.layers.0.self_attn.q_proj.lora_A.weight`, shape: [2, 8] },
      { name: `${P}model.layers.0.self_attn.q_proj.lora_B.weight`, shape: [8, 3] },
    ]);
    assert.throws(() => adapterLayout(mismatch), lensError(/do not form a rank-r product/));
    const absent = adapter({}, loraPair('model.layers.0.self_attn.v_proj', 2, 8, 8));
    assert.throws(() => adapterLayout(absent, llama), lensError(/the base has no tensor 'model\.layers\.0\.self_attn\.v_proj\.weight'/, 'model.layers.0.self_attn.v_proj.weight'));
    const wrongShape = adapter({}, loraPair('model.layers.0.self_attn.k_proj', 2, 8, 8));
    assert.throws(() => adapterLayout(wrongShape, llama), lensError(/delta of shape \[8, 8\] does not fit base tensor of shape \[4,8\]/, 'model.layers.0.self_attn.k_proj.weight'));
    const head = adapter({ modules_to_save: ['lm_head'] }, [...loraPair('model.layers.0.self_attn.q_proj', 2, 8, 8), { name: `${P}lm_head.weight`, shape: [3, 8] }]);
    assert.throws(() => adapterLayout(head, llama), lensError(/saved tensor of shape \[3,8\] does not fit base tensor of shape \[20,8\]/, 'lm_head.weight'));
  });

  it('GPT-2 Conv1D: orientation from the architecture, including the square c_proj, whatever fan_in_fan_out says', () => {
    const gpt2 = model({ model_type: 'gpt2' }, [
      { name: 'h.0.attn.c_attn.weight', shape: [8, 24] },
      { name: 'h.0.attn.c_proj.weight', shape: [8, 8] },
    ]);
    for (const flag of [true, false]) {
      const a = adapter({ r: 2, fan_in_fan_out: flag, target_modules: ['c_attn', 'c_proj'] }, [...loraPair('transformer.h.0.attn.c_attn', 2, 8, 24), ...loraPair('transformer.h.0.attn.c_proj', 2, 8, 8)]);
      const l = adapterLayout(a, gpt2);
      assert.ok(l.modules.every((m) => m.transpose), `fan_in_fan_out=${flag}`);
      assert.deepEqual(l.modules.map((m) => m.base!.name).sort(), ['h.0.attn.c_attn.weight', 'h.0.attn.c_proj.weight']);
      assert.equal(l.warnings.length, flag ? 0 : 1, l.warnings.join("\n"));
    }
  });
});
