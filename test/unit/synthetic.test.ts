import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { modelLayout } from '../../src/engine/census/architectures';
import { adapterLayout } from '../../src/engine/checkpoint/adapter';
import { closeCheckpoint, openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { readJson } from '../../src/engine/checkpoint/json';
import { writeSyntheticAdapter } from '../../src/engine/synthetic/adapter';
import { STARCODER2_3B } from '../../src/engine/synthetic/configs';
import { writeSyntheticModel } from '../../src/engine/synthetic/model';
import { FIXTURES, lowRank, tmpDir } from './helpers/builders';
import { readAll } from './helpers/tensors';

/** StarCoder2-3B's architecture at toy widths: same names, same GQA ratio, 2 layers. */
const TINY_SC2 = {
  ...STARCODER2_3B,
  hidden_size: 48,
  intermediate_size: 96,
  num_hidden_layers: 2,
  num_attention_heads: 6,
  num_key_value_heads: 2,
  vocab_size: 64,
};

describe('synthetic model', () => {
  it('writes the layout of its config at the requested dtype, and sets torch_dtype', () => {
    const dir = path.join(tmpDir(), 'm');
    const m = writeSyntheticModel(dir, TINY_SC2, { dtype: 'F16', seed: 3 });
    const c = openCheckpoint(dir);
    assert.equal(c.kind, 'model');
    assert.deepEqual(
      c.tensors.map((t) => [t.name, t.dtype, t.shape.join('x')]).sort(),
      modelLayout(TINY_SC2, 'F16').map((t) => [t.name, t.dtype, t.shape.join('x')]).sort(),
    );
    assert.equal(readJson(path.join(dir, 'config.json')).torch_dtype, 'float16');
    assert.equal(m.dataBytes, c.tensors.reduce((a, t) => a + t.byteLength, 0));
    closeCheckpoint(c);
  });

  it('gives the same values for the same seed whatever the sharding, and other values for another seed', () => {
    const root = tmpDir();
    writeSyntheticModel(path.join(root, 'one'), TINY_SC2, { seed: 5, dtype: 'BF16' });
    const sharded = writeSyntheticModel(path.join(root, 'sharded'), TINY_SC2, { seed: 5, dtype: 'BF16', shardBytes: 8000 });
    writeSyntheticModel(path.join(root, 'other'), TINY_SC2, { seed: 6, dtype: 'BF16' });
    assert.ok(sharded.files.length > 2);
    assert.equal(openCheckpoint(path.join(root, 'sharded')).kind, 'sharded-model');
    const a = readAll(path.join(root, 'one'));
    const b = readAll(path.join(root, 'sharded'));
    const o = readAll(path.join(root, 'other'));
    for (const [name, v] of a) {
      assert.deepEqual(b.get(name), v, name);
      assert.notDeepEqual(o.get(name), v, name);
    }
    const norm = a.get('model.layers.0.input_layernorm.weight')!;
    assert.ok(norm.every((x) => x > 0.9 && x < 1.1), 'norm scales near 1');
    const q = a.get('model.layers.0.self_attn.q_proj.weight')!;
    assert.ok(q.some((x) => x !== 0) && q.every((x) => Math.abs(x) < 0.05));
  });

  it('sparse: a true header and a data region of zeros taking no disk', () => {
    const dir = path.join(tmpDir(), 's');
    const m = writeSyntheticModel(dir, { ...TINY_SC2, vocab_size: 4096, hidden_size: 1024, num_attention_heads: 8 }, { sparse: true });
    const c = openCheckpoint(dir);
    const st = fs.statSync(m.files[0]);
    assert.equal(st.size, 8 + (c.tensors[0].offset - 8) + m.dataBytes);
    assert.ok(st.blocks * 512 < m.dataBytes / 4, `allocated ${st.blocks * 512} of ${m.dataBytes}`);
    const t = c.byName.get('model.embed_tokens.weight')!;
    assert.ok(c.handles.readBytesSync(t, new Uint8Array(t.byteLength)).every((x) => x === 0));
    closeCheckpoint(c);
  });
});

describe('synthetic adapter', () => {
  it('uses PEFT key names and shapes that adapterLayout maps onto the base, GQA-narrow k/v', () => {
    const root = tmpDir();
    writeSyntheticModel(path.join(root, 'base'), TINY_SC2);
    const a = writeSyntheticAdapter(path.join(root, 'ad'), TINY_SC2, { targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], r: 4, alpha: 8 });
    assert.equal(a.modules.length, 8);
    const base = openCheckpoint(path.join(root, 'base'));
    const ad = openCheckpoint(path.join(root, 'ad'));
    assert.equal(ad.kind, 'adapter');
    assert.ok(ad.byName.has('base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight'));
    assert.deepEqual(ad.byName.get('base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight')!.shape, [16, 4]);
    const layout = adapterLayout(ad, base);
    assert.equal(layout.modules.length, 8);
    assert.deepEqual(layout.warnings, []);
    for (const m of layout.modules) assert.equal(m.base!.name, `${m.module}.weight`);
    closeCheckpoint(base);
    closeCheckpoint(ad);
  });

  it('honours rank_pattern, layers_to_transform, DoRA, rsLoRA and modules_to_save', () => {
    const root = tmpDir();
    writeSyntheticModel(path.join(root, 'base'), TINY_SC2);
    const a = writeSyntheticAdapter(path.join(root, 'ad'), TINY_SC2, {
      targets: ['q_proj', 'c_fc'],
      r: 4,
      alpha: 16,
      rankPattern: { 'model.layers.0.self_attn.q_proj': 2 },
      useDora: true,
      useRslora: true,
      modulesToSave: ['lm_head', 'model.norm'],
      layersToTransform: [0],
    });
    assert.deepEqual(a.modules.map((m) => [m.module, m.r]), [
      ['model.layers.0.self_attn.q_proj', 2],
      ['model.layers.0.mlp.c_fc', 4],
    ]);
    const base = openCheckpoint(path.join(root, 'base'));
    const ad = openCheckpoint(path.join(root, 'ad'));
    assert.equal(ad.adapter!.useDora, true);
    assert.equal(ad.adapter!.useRslora, true);
    const layout = adapterLayout(ad, base);
    const q = layout.modules.find((m) => m.module.endsWith('q_proj'))!;
    assert.equal(lowRank(q).r, 2);
    assert.equal(lowRank(q).scale, 16 / Math.sqrt(2));
    assert.deepEqual(lowRank(q).magnitude!.shape, [48]);
    assert.deepEqual(layout.replacements.map((r) => r.target).sort(), ['model.norm.bias', 'model.norm.weight']);
    closeCheckpoint(base);
    closeCheckpoint(ad);
  });

  it("GPT-2: Conv1D in/out from the [in, out] storage, fan_in_fan_out set as PEFT does", () => {
    const root = tmpDir();
    const cfg = { model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], n_embd: 32, n_layer: 1, n_head: 4, n_positions: 16, vocab_size: 50 };
    writeSyntheticModel(path.join(root, 'base'), cfg);
    const a = writeSyntheticAdapter(path.join(root, 'ad'), cfg, { targets: ['c_attn'], r: 2 });
    assert.equal(a.config.fan_in_fan_out, true);
    const base = openCheckpoint(path.join(root, 'base'));
    const ad = openCheckpoint(path.join(root, 'ad'));
    assert.deepEqual(ad.byName.get('base_model.model.transformer.h.0.attn.c_attn.lora_B.weight')!.shape, [96, 2]);
    const layout = adapterLayout(ad, base);
    assert.equal(layout.modules[0].transpose, true);
    assert.deepEqual(layout.warnings, []);
    closeCheckpoint(base);
    closeCheckpoint(ad);
  });

  it("writes exactly the tensors PEFT's save_pretrained writes (golden from test/fixtures/layouts/peft_adapters.py)", () => {
    const layouts = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'layouts', 'layouts.json'), 'utf8')) as { small: Record<string, { config: Record<string, unknown> }> };
    const golden = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'layouts', 'peft-adapters.json'), 'utf8')) as {
      cases: Array<{ base: string; lora: Record<string, unknown>; tensors: Array<[string, string, number[]]> }>;
    };
    const root = tmpDir();
    golden.cases.forEach((c, i) => {
      const l = c.lora;
      const a = writeSyntheticAdapter(path.join(root, `a${i}`), layouts.small[c.base].config, {
        targets: l.target_modules as string[],
        r: l.r as number,
        rankPattern: l.rank_pattern as Record<string, number> | undefined,
        layersToTransform: l.layers_to_transform as number[] | undefined,
        useDora: l.use_dora as boolean | undefined,
        useRslora: l.use_rslora as boolean | undefined,
        modulesToSave: l.modules_to_save as string[] | undefined,
      });
      const ours = a.tensors.map((t) => [t.name, t.dtype, t.shape]).sort((x, y) => (x[0] < y[0] ? -1 : 1));
      // PEFT also saves a targeted embedding's (or head's) own weight as base_layer.weight; ours does not.
      const theirs = c.tensors.filter((t) => !t[0].endsWith('.base_layer.weight'));
      assert.deepEqual(ours, theirs, `${c.base} ${JSON.stringify(l)}`);
      assert.equal(a.config.fan_in_fan_out, l.fan_in_fan_out === true);
    });
  });

  it('refuses targets that match nothing', () => {
    assert.throws(() => writeSyntheticAdapter(path.join(tmpDir(), 'x'), TINY_SC2, { targets: ['nope'], r: 2 }), /match no module/);
  });
});
