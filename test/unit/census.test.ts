import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { modelLayout } from '../../src/engine/census/architectures';
import { classifyTensor } from '../../src/shared/census/classify';
import { adapterLayout } from '../../src/engine/checkpoint/adapter';
import { closeCheckpoint, openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { censusJob } from '../../src/engine/jobs/census';
import { quietContext } from '../../src/engine/util/job';
import { writeSyntheticAdapter } from '../../src/engine/synthetic/adapter';
import { GEMMA3_270M, STARCODER2_3B } from '../../src/engine/synthetic/configs';
import { writeSyntheticModel } from '../../src/engine/synthetic/model';
import { FIXTURES, tmpDir } from './helpers/builders';

type Golden = Array<[string, string, number[]]>;
interface Layouts {
  small: Record<string, { config: Record<string, unknown>; tensors: Golden }>;
  base: Record<string, { tensors: Golden }>;
}
/** Written by test/fixtures/layouts/generate.py from transformers' own save_pretrained / meta-device models. */
const LAYOUTS = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'layouts', 'layouts.json'), 'utf8')) as Layouts;
const baseConfig = (f: string): Record<string, unknown> => JSON.parse(fs.readFileSync(path.join(FIXTURES, 'base-configs', f), 'utf8'));
const PRESETS: Record<string, Record<string, unknown>> = { STARCODER2_3B, GEMMA3_270M };

function ours(config: Record<string, unknown>): Golden {
  return modelLayout(config)
    .map((t): [string, string, number[]] => [t.name, t.dtype, t.shape])
    .sort((a, b) => (a[0] < b[0] ? -1 : 1));
}

describe('modelLayout matches transformers exactly', () => {
  for (const [name, g] of Object.entries(LAYOUTS.small)) {
    it(`small ${name}`, () => assert.deepEqual(ours(g.config), g.tensors));
  }
  for (const [name, g] of Object.entries(LAYOUTS.base)) {
    it(`base ${name}`, () => assert.deepEqual(ours(PRESETS[name] ?? baseConfig(name)), g.tensors));
  }

  it('StarCoder2-3B: 483 tensors (30 x 16 + embedding + final norm weight and bias), 3,030,371,328 elements', () => {
    const l = modelLayout(STARCODER2_3B);
    assert.equal(l.length, 483);
    assert.equal(l.filter((t) => t.name.startsWith('model.layers.7.')).length, 16);
    assert.equal(l.reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0), 3_030_371_328);
    assert.ok(!l.some((t) => t.name === 'lm_head.weight'), 'tied embeddings: no lm_head tensor');
    assert.deepEqual(l.find((t) => t.name === 'model.layers.0.self_attn.k_proj.weight')!.shape, [256, 3072], 'GQA: 2 kv heads of 128');
  });

  it('refuses unknown model types with a LensError', () => {
    assert.throws(() => modelLayout({ model_type: 'mamba' }), (e: Error) => e.name === 'LensError' && /mamba/.test(e.message));
    assert.throws(() => modelLayout({ model_type: 'llama', hidden_size: 8 }), /has no num_hidden_layers/);
  });
});

describe('classifyTensor', () => {
  const cases: Array<[string, string, number | null, string | null]> = [
    ['model.embed_tokens.weight', 'embedding', null, null],
    ['lm_head.weight', 'embedding', null, null],
    ['model.norm.weight', 'final_norm', null, null],
    ['model.norm.bias', 'final_norm', null, null],
    ['transformer.ln_f.weight', 'final_norm', null, null],
    ['gpt_neox.final_layer_norm.bias', 'final_norm', null, null],
    ['model.final_layernorm.weight', 'final_norm', null, null],
    ['model.layers.12.self_attn.q_proj.weight', 'attention', 12, 'q_proj'],
    ['model.layers.3.self_attn.o_proj.bias', 'attention', 3, 'o_proj'],
    ['model.layers.3.self_attn.q_norm.weight', 'norm', 3, null],
    ['model.layers.0.mlp.c_fc.bias', 'mlp', 0, 'c_fc'],
    ['model.layers.0.pre_feedforward_layernorm.weight', 'norm', 0, null],
    ['h.5.attn.c_attn.weight', 'attention', 5, 'c_attn'],
    ['transformer.h.5.mlp.c_proj.weight', 'mlp', 5, 'c_proj'],
    ['transformer.h.5.ln_2.bias', 'norm', 5, null],
    ['transformer.wpe.weight', 'embedding', null, null],
    ['gpt_neox.layers.1.attention.query_key_value.weight', 'attention', 1, 'query_key_value'],
    ['gpt_neox.layers.1.attention.dense.weight', 'attention', 1, 'attention.dense'],
    ['embed_out.weight', 'embedding', null, null],
    ['bert.encoder.layer.2.attention.self.query.weight', 'attention', 2, 'query'],
    ['bert.encoder.layer.2.attention.output.dense.weight', 'attention', 2, 'output.dense'],
    ['bert.encoder.layer.2.attention.output.LayerNorm.weight', 'norm', 2, null],
    ['bert.encoder.layer.2.intermediate.dense.weight', 'mlp', 2, 'intermediate.dense'],
    ['bert.encoder.layer.2.output.dense.bias', 'mlp', 2, 'output.dense'],
    ['bert.embeddings.LayerNorm.weight', 'norm', null, null],
    ['bert.pooler.dense.weight', 'other', null, null],
    ['distilbert.transformer.layer.4.attention.v_lin.weight', 'attention', 4, 'v_lin'],
    ['distilbert.transformer.layer.4.ffn.lin2.weight', 'mlp', 4, 'lin2'],
    ['distilbert.transformer.layer.4.sa_layer_norm.weight', 'norm', 4, null],
    ['pre_classifier.weight', 'other', null, null],
    ['vocab_projector.bias', 'embedding', null, null],
    ['model.layers.0.self_attn.qkv_proj.weight', 'attention', 0, 'qkv_proj'],
    ['model.layers.0.mlp.gate_up_proj.weight', 'mlp', 0, 'gate_up_proj'],
    ['model.layers.0.self_attn.dense.weight', 'attention', 0, 'self_attn.dense'],
    ['score.weight', 'other', null, null],
    // Adapter tensors classify as the module they adapt.
    ['base_model.model.model.layers.9.self_attn.v_proj.lora_B.weight', 'attention', 9, 'v_proj'],
    ['base_model.model.transformer.h.0.attn.c_attn.lora_A.weight', 'attention', 0, 'c_attn'],
    ['base_model.model.model.embed_tokens.lora_embedding_A', 'embedding', null, null],
    ['base_model.model.model.layers.1.mlp.down_proj.lora_magnitude_vector', 'mlp', 1, 'down_proj'],
  ];
  for (const [name, category, layer, projection] of cases) {
    // BERT's blocks are its encoder stack (census names stacks only where a model has two).
    const stack = /^bert\.encoder\.layer\./.test(name) ? { stack: 'encoder' } : {};
    it(name, () => assert.deepEqual(classifyTensor(name), { category, layer, projection, ...stack }));
  }
});

describe('classifyTensor on every layout transformers produced', () => {
  const all = [...Object.entries(LAYOUTS.small), ...Object.entries(LAYOUTS.base)];
  for (const [name, g] of all) {
    it(name, () => {
      const classes = g.tensors.map(([n]) => ({ n, ...classifyTensor(n) }));
      const inLayers = classes.filter((c) => c.layer !== null);
      // Inside a block everything is attention, MLP or a norm; projections are named.
      for (const c of inLayers) {
        assert.ok(['attention', 'mlp', 'norm'].includes(c.category), `${c.n}: ${c.category}`);
        assert.equal(c.projection === null, c.category === 'norm', `${c.n}: projection ${c.projection}`);
      }
      // Every layer looks alike.
      const perLayer = new Map<number, string[]>();
      for (const c of inLayers) perLayer.set(c.layer!, [...(perLayer.get(c.layer!) ?? []), `${c.category}/${c.projection}`]);
      const shapes = [...perLayer.values()].map((v) => v.sort().join(','));
      assert.ok(shapes.length > 0 && shapes.every((x) => x === shapes[0]), 'layers differ');
      // Outside the blocks: embeddings, and a final norm exactly for the decoders (encoders norm their embeddings instead).
      const outside = classes.filter((c) => c.layer === null);
      assert.ok(outside.some((c) => c.category === 'embedding'));
      const finals = outside.filter((c) => c.category === 'final_norm').length;
      assert.equal(finals > 0, !/bert/.test(name), `${finals} final norms`);
    });
  }
});

describe('census', () => {
  const root = tmpDir();
  const sc2 = path.join(root, 'sc2-3b');
  writeSyntheticModel(sc2, STARCODER2_3B, { sparse: true });
  // An adapter needs only the base's layout, not its weights: a 2-token vocabulary keeps it small.
  const qkvo = writeSyntheticAdapter(path.join(root, 'qkvo'), { ...STARCODER2_3B, vocab_size: 2 }, { targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], r: 8, alpha: 16 });

  it('StarCoder2-3B, header-true sparse (6 GB at bf16): 483 tensors, 120 q/k/v/o targets, 363 others', () => {
    const r = censusJob({ path: sc2, adapter: qkvo.dir }, quietContext());
    assert.equal(r.kind, 'model');
    assert.equal(r.modelType, 'starcoder2');
    assert.equal(r.summary.tensors, 483);
    assert.equal(r.summary.loraTargetTensors, 120);
    assert.equal(r.summary.nonTargetTensors, 363);
    assert.equal(r.summary.params, 3_030_371_328);
    assert.equal(r.summary.bytes, 2 * 3_030_371_328);
    assert.equal(r.summary.layers, 30);
    assert.deepEqual(r.summary.categories, { attention: 240, mlp: 120, norm: 120, embedding: 1, final_norm: 2, other: 0 });
    assert.equal(Object.values(r.summary.categoryParams).reduce((a, b) => a + b, 0), r.summary.params);
    assert.deepEqual(r.summary.dtypes, { BF16: 483 });
    assert.equal(r.perLayer.length, 30);
    assert.ok(r.perLayer.every((l) => l.tensors === 16 && l.params === 95_979_008 && l.loraTargetTensors === 4));
    assert.deepEqual(r.outsideLayers, { tensors: 3, params: 150_994_944 + 2 * 3072 });
    // Only the .weight of each targeted Linear: never its bias.
    const targets = r.tensors.filter((t) => t.loraTarget);
    assert.ok(targets.every((t) => t.name.endsWith('.weight') && t.category === 'attention'));
    // q: 8*(3072+3072), k and v: 8*(3072+256), o: 8*(3072+3072) per layer, 30 layers.
    assert.equal(r.adapter!.trainableParams, 30 * 8 * (6144 + 3328 + 3328 + 6144));
    assert.equal(r.adapter!.loraModules, 120);
    const q = r.tensors.find((t) => t.name === 'model.layers.29.self_attn.q_proj.weight')!;
    assert.deepEqual(q, { name: q.name, dtype: 'BF16', shape: [3072, 3072], numel: 9437184, bytes: 18874368, category: 'attention', layer: 29, projection: 'q_proj', loraTarget: true, replaced: false });
  });

  it('the same census from a sharded checkpoint, with its files listed', () => {
    const dir = path.join(root, 'sc2-sharded');
    writeSyntheticModel(dir, STARCODER2_3B, { sparse: true, shardBytes: 2e9 });
    const r = censusJob({ path: dir, adapter: qkvo.dir }, quietContext());
    const one = censusJob({ path: sc2, adapter: qkvo.dir }, quietContext());
    assert.equal(r.kind, 'sharded-model');
    assert.equal(r.files.length, 4);
    assert.deepEqual(r.summary, one.summary);
    assert.deepEqual(r.tensors.map((t) => t.name).sort(), one.tensors.map((t) => t.name).sort());
  });

  it('a config-only adapter (adapter_config.json, no weights) marks targets by PEFT matching', () => {
    const r = censusJob({ path: sc2, adapter: path.join(FIXTURES, 'real-adapters', '_config-only', 'starcoder2-3b-qv-r8') }, quietContext());
    assert.equal(r.summary.loraTargetTensors, 60);
    assert.equal(r.adapter!.trainableParams, null);
    assert.equal(r.adapter!.loraModules, 60);
  });

  it('--target without an adapter, and a bare config.json (layout, no weights)', () => {
    const cfg = path.join(root, 'config-only');
    fs.mkdirSync(cfg);
    fs.writeFileSync(path.join(cfg, 'config.json'), JSON.stringify(STARCODER2_3B));
    const r = censusJob({ path: cfg, targets: ['c_fc', 'c_proj'] }, quietContext());
    assert.equal(r.kind, 'config');
    assert.equal(r.summary.tensors, 483);
    assert.equal(r.summary.loraTargetTensors, 60);
    assert.equal(censusJob({ path: path.join(FIXTURES, 'base-configs', 'gemma-2b.json') }, quietContext()).summary.params, 2_506_172_416);
  });

  it('an adapter folder: its own tensors, classified as the modules they adapt, factors and not targets (as a bare file)', () => {
    const r = censusJob({ path: qkvo.dir }, quietContext());
    assert.equal(r.kind, 'adapter');
    assert.equal(r.summary.tensors, 240);
    assert.equal(r.summary.loraTargetTensors, 0);
    assert.ok(r.tensors.every((t) => t.loraFactor === true && !t.loraTarget));
    assert.ok(r.warnings.includes('an adapter: its 120 modules adapt tensors of a base; census BASE --adapter DIR marks those targets'), r.warnings.join('\n'));
    assert.deepEqual(r.summary.categories, { attention: 240, mlp: 0, norm: 0, embedding: 0, final_norm: 0, other: 0 });
    assert.equal(r.adapter!.r, 8);
    assert.equal(r.adapter!.trainableParams, r.summary.params);
  });
});

/** A base for each real adapter, laid out from its true config, header-true sparse (no weights on disk). */
describe('real adapters on bases of their true shapes', () => {
  const root = tmpDir();
  const real = (name: string): string => path.join(FIXTURES, 'real-adapters', name);
  const base = (name: string, config: Record<string, unknown>): string => {
    const dir = path.join(root, name);
    writeSyntheticModel(dir, config, { sparse: true });
    return dir;
  };

  it('gpt2 (GPT2ForSequenceClassification, c_attn, fan_in_fan_out=true on Conv1D; the score head is saved)', () => {
    const b = base('gpt2', { ...baseConfig('gpt2.json'), architectures: ['GPT2ForSequenceClassification'], id2label: { 0: 'a', 1: 'b', 2: 'c', 3: 'd', 4: 'e', 5: 'f' } });
    const r = censusJob({ path: b, adapter: real('gpt2-seqcls-cattn-r8') }, quietContext());
    assert.equal(r.summary.loraTargetTensors, 12);
    assert.ok(r.tensors.filter((t) => t.loraTarget).every((t) => /^transformer\.h\.\d+\.attn\.c_attn\.weight$/.test(t.name)));
    assert.deepEqual(r.tensors.filter((t) => t.replaced).map((t) => t.name), ['score.weight']);
    assert.deepEqual(r.warnings, []);
    const [ad, bc] = [openCheckpoint(real('gpt2-seqcls-cattn-r8')), openCheckpoint(b)];
    const layout = adapterLayout(ad, bc);
    assert.ok(layout.modules.every((m) => m.transpose && m.in === 768 && m.out === 2304));
    closeCheckpoint(ad);
    closeCheckpoint(bc);
  });

  it('gpt2 on the LM-head base: c_attn found through the transformer. prefix, score is new', () => {
    const r = censusJob({ path: base('gpt2-lm', baseConfig('gpt2.json')), adapter: real('gpt2-seqcls-cattn-r8') }, quietContext());
    assert.equal(r.summary.loraTargetTensors, 12);
    assert.equal(r.tensors.filter((t) => t.replaced).length, 0);
    assert.ok(r.warnings.some((w) => /score\.weight.*absent from the base/.test(w)));
  });

  it('a wrong fan_in_fan_out on GPT-2 is corrected and warned about', () => {
    const dir = path.join(root, 'gpt2-flag');
    fs.mkdirSync(dir);
    for (const f of ['adapter_model.safetensors']) fs.copyFileSync(path.join(real('gpt2-seqcls-cattn-r8'), f), path.join(dir, f));
    const cfg = JSON.parse(fs.readFileSync(path.join(real('gpt2-seqcls-cattn-r8'), 'adapter_config.json'), 'utf8'));
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, fan_in_fan_out: false }));
    const ctx = quietContext();
    const r = censusJob({ path: base('gpt2-flag-base', baseConfig('gpt2.json')), adapter: dir }, ctx);
    assert.equal(r.summary.loraTargetTensors, 12);
    assert.ok(r.warnings.some((w) => /fan_in_fan_out=false .* contradicts the base for 12 module/.test(w)), r.warnings.join('\n'));
    assert.deepEqual(ctx.warnings, r.warnings);
  });

  it('distilbert (seq-cls): q_lin/v_lin targets, classifier and pre_classifier replaced (modules_to_save suffix match)', () => {
    const b = base('distilbert', { ...baseConfig('distilbert-base-uncased.json'), architectures: ['DistilBertForSequenceClassification'], id2label: { 0: 'neg', 1: 'pos' } });
    const r = censusJob({ path: b, adapter: real('distilbert-seqcls-qv-mts') }, quietContext());
    assert.equal(r.summary.loraTargetTensors, 12);
    assert.deepEqual(r.tensors.filter((t) => t.replaced).map((t) => t.name).sort(), ['classifier.bias', 'classifier.weight', 'pre_classifier.bias', 'pre_classifier.weight']);
    assert.equal(r.adapter!.savedTensors, 4);
    assert.equal(r.adapter!.trainableParams, 6 * 2 * 8 * (768 + 768) + 768 * 768 + 768 + 2 * 768 + 2);
  });

  it('llama 3.2 1B: q/v with GQA-narrow v (out 512)', () => {
    const r = censusJob({ path: base('llama', baseConfig('Llama-3.2-1B.json')), adapter: real('llama3.2-1b-qv-r8') }, quietContext());
    assert.equal(r.summary.tensors, 146);
    assert.equal(r.summary.loraTargetTensors, 32);
    assert.equal(r.adapter!.trainableParams, 16 * (8 * (2048 + 2048) + 8 * (2048 + 512)));
  });

  it('qwen2.5 0.5B: q/v with GQA-narrow v (out 128); q/k/v biases are not targets', () => {
    const r = censusJob({ path: base('qwen', baseConfig('Qwen2.5-0.5B-Instruct.json')), adapter: real('qwen2.5-0.5b-instruct-qv-r8') }, quietContext());
    assert.equal(r.summary.loraTargetTensors, 48);
    assert.ok(r.tensors.filter((t) => t.loraTarget).every((t) => t.name.endsWith('_proj.weight')));
    assert.equal(r.adapter!.trainableParams, 24 * (8 * (896 + 896) + 8 * (896 + 128)));
  });

  it('gemma3 270m: q/k/v/o with head_dim 256 (q 640 -> 1024, o 1024 -> 640)', () => {
    const r = censusJob({ path: base('gemma3', GEMMA3_270M), adapter: real('gemma3-270m-it-qkvo-r4') }, quietContext());
    assert.equal(r.summary.tensors, 236);
    assert.equal(r.summary.loraTargetTensors, 72);
    assert.deepEqual(r.warnings, []);
    assert.equal(r.adapter!.trainableParams, 368_640);
  });

  it('an adapter that does not fit its base is a LensError naming the tensor', () => {
    assert.throws(
      () => censusJob({ path: base('qwen-wrong', baseConfig('Qwen2.5-0.5B-Instruct.json')), adapter: real('llama3.2-1b-qv-r8') }, quietContext()),
      (e: Error) => e.name === 'LensError' && /model\.layers\.0\.self_attn\.q_proj\.weight/.test(e.message) && /does not fit|has no tensor/.test(e.message),
    );
  });
});
