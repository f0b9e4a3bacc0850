import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { isTargetModule, moduleScaling, parseAdapterConfig, patternValue } from '../../src/engine/checkpoint/adapterConfig';
import { closeCheckpoint, openCheckpoint, TASK_VECTOR_KIND } from '../../src/engine/checkpoint/checkpoint';
import { LensError } from '../../src/engine/errors';
import { SafetensorsWriter } from '../../src/engine/safetensors/writer';
import { FIXTURES, loraPair, peftConfig, tmpDir, writeAdapter, writeModel, writeWeights } from './helpers/builders';

const lensError =
  (detail: RegExp, tensor?: string) =>
  (e: unknown): boolean =>
    e instanceof LensError && detail.test(e.detail) && (tensor === undefined || e.tensor === tensor);

describe('openCheckpoint', () => {
  const root = tmpDir();
  const tensors = [
    { name: 'model.embed_tokens.weight', shape: [10, 4] },
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [4, 4] },
    { name: 'model.norm.weight', shape: [4] },
  ];

  it('recognises a model folder, a sharded one, its config.json, an adapter, a bare file and a task vector', () => {
    const model = writeModel(path.join(root, 'model'), { model_type: 'llama' }, tensors);
    const c = openCheckpoint(model);
    assert.equal(c.kind, 'model');
    assert.equal(c.config!.model_type, 'llama');
    assert.deepEqual(c.tensors.map((t) => t.name), tensors.map((t) => t.name));
    closeCheckpoint(c);
    assert.equal(openCheckpoint(path.join(model, 'config.json')).kind, 'model');

    const sharded = writeModel(path.join(root, 'sharded'), { model_type: 'llama' }, tensors, 60);
    const s = openCheckpoint(sharded);
    assert.equal(s.kind, 'sharded-model');
    assert.equal(s.files.length, 3);
    closeCheckpoint(s);

    const adapter = writeAdapter(path.join(root, 'adapter'), peftConfig(), loraPair('model.layers.0.self_attn.q_proj', 2, 4, 4));
    const a = openCheckpoint(adapter);
    assert.equal(a.kind, 'adapter');
    assert.equal(a.adapter!.r, 8);
    closeCheckpoint(a);

    const file = openCheckpoint(path.join(model, 'model.safetensors'));
    assert.equal(file.kind, 'file');
    assert.equal(file.config, undefined);
    closeCheckpoint(file);

    const tv = path.join(root, 'tv.safetensors');
    const w = new SafetensorsWriter(tv, [{ name: 'x.weight', dtype: 'F32', shape: [1] }], { format: 'pt', lora_lens: TASK_VECTOR_KIND });
    w.write('x.weight', new Uint8Array(4));
    w.finish();
    assert.equal(openCheckpoint(tv).kind, 'task-vector');
  });

  it('refuses what it cannot read, naming the path', () => {
    assert.throws(() => openCheckpoint(path.join(root, 'absent')), lensError(/no such file or folder/));
    const pickles = path.join(root, 'pickles');
    fs.mkdirSync(pickles);
    fs.writeFileSync(path.join(pickles, 'pytorch_model.bin'), 'x');
    // Pickles are read now (test/unit/pickle.test.ts); one that is not a zip archive is refused, naming the file.
    const notZip = (e: unknown): boolean => e instanceof LensError && e.file.endsWith('.bin') && /not a PyTorch checkpoint: no zip archive/.test(e.detail);
    assert.throws(() => openCheckpoint(pickles), notZip);
    const adapterBin = path.join(root, 'adapter-bin');
    fs.mkdirSync(adapterBin);
    fs.writeFileSync(path.join(adapterBin, 'adapter_config.json'), JSON.stringify(peftConfig()));
    fs.writeFileSync(path.join(adapterBin, 'adapter_model.bin'), 'x');
    assert.throws(() => openCheckpoint(adapterBin), notZip);
    fs.rmSync(path.join(adapterBin, 'adapter_model.bin'));
    assert.throws(() => openCheckpoint(adapterBin), lensError(/no adapter_model\.safetensors or adapter_model\.bin/));
    const badConfig = path.join(root, 'bad-config');
    writeWeights(badConfig, tensors);
    fs.writeFileSync(path.join(badConfig, 'config.json'), '{"model_type": ');
    assert.throws(() => openCheckpoint(badConfig), (e: unknown) => e instanceof LensError && e.file.endsWith('config.json') && /invalid JSON/.test(e.detail));
  });

  it('refuses a tensor present in two shards', () => {
    const dir = path.join(root, 'dup');
    writeWeights(dir, [tensors[0], tensors[1]], 170);
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    // Rewrite shard 2 to hold shard 1's tensor as well.
    writeWeights(path.join(root, 'tmp'), [tensors[0], tensors[1]]);
    fs.copyFileSync(path.join(root, 'tmp', 'model.safetensors'), path.join(dir, index.weight_map[tensors[1].name]));
    assert.throws(() => openCheckpoint(dir), (e: unknown) => e instanceof LensError && e.tensor !== undefined);
  });
});

describe('adapter_config.json', () => {
  const root = tmpDir();
  const write = (cfg: Record<string, unknown>): string => {
    const f = path.join(root, `c${Math.random().toString(36).slice(2)}.json`);
    fs.writeFileSync(f, JSON.stringify(cfg));
    return f;
  };

  it('parses every real adapter config in the fixtures', () => {
    const dirs = ['gpt2-seqcls-cattn-r8', 'distilbert-seqcls-qv-mts', 'llama3.2-1b-qv-r8', 'qwen2.5-0.5b-instruct-qv-r8', 'gemma3-270m-it-qkvo-r4']
      .concat(fs.readdirSync(path.join(FIXTURES, 'real-adapters', '_config-only')).map((d) => path.join('_config-only', d)));
    const parsed = dirs.map((d) => parseAdapterConfig(path.join(FIXTURES, 'real-adapters', d, 'adapter_config.json')));
    assert.deepEqual(parsed.map((c) => c.r), [8, 8, 8, 8, 4, 32, 10, 64, 8]);
    assert.equal(parsed[0].fanInFanOut, true);
    assert.deepEqual(parsed[1].modulesToSave, ['classifier', 'score']);
    assert.equal(parsed[5].useDora, true);
    assert.equal(parsed[7].useRslora, true);
    assert.equal(parsed[5].targetModules, null);
  });

  it('applies PEFT defaults and normalises layers_to_transform / layers_pattern', () => {
    const c = parseAdapterConfig(write({ target_modules: 'q_proj', layers_to_transform: 3, layers_pattern: 'layers' }));
    assert.equal(c.r, 8);
    assert.equal(c.loraAlpha, 8);
    assert.equal(c.bias, 'none');
    assert.deepEqual(c.layersToTransform, [3]);
    assert.deepEqual(c.layersPattern, ['layers']);
  });

  it('refuses bad fields with a LensError naming the file and the field', () => {
    for (const [cfg, re] of [
      [{ r: 0 }, /^r must be a positive integer/],
      [{ r: 2.5 }, /^r must be/],
      [{ lora_alpha: 'x' }, /^lora_alpha must be a number/],
      [{ target_modules: [1] }, /^target_modules must be/],
      [{ bias: 'some' }, /^bias must be/],
      [{ rank_pattern: { q: 0 } }, /^rank_pattern values must be positive integers/],
      [{ peft_type: 'OFT' }, /peft_type "OFT" is not supported/],
      [{ peft_type: 'PROMPT_TUNING' }, /^peft_type PROMPT_TUNING adds virtual tokens or prefixes and changes no weight of the base/],
      [{ peft_type: 'PREFIX_TUNING' }, /^peft_type PREFIX_TUNING adds virtual tokens/],
      [{ layers_to_transform: 'all' }, /^layers_to_transform must be/],
    ] as Array<[Record<string, unknown>, RegExp]>) {
      const f = write(cfg);
      assert.throws(() => parseAdapterConfig(f), (e: unknown) => e instanceof LensError && e.file === f && re.test(e.detail), JSON.stringify(cfg));
    }
  });

  it('rank_pattern / alpha_pattern match the end of the module path, as PEFT does; rsLoRA scales by sqrt(r)', () => {
    const pats = { 'layers.0.self_attn.q_proj': 4, v_proj: 2 };
    assert.equal(patternValue(pats, 'model.layers.0.self_attn.q_proj'), 4);
    assert.equal(patternValue(pats, 'model.layers.10.self_attn.q_proj'), undefined);
    assert.equal(patternValue(pats, 'model.layers.3.self_attn.v_proj'), 2);
    assert.equal(patternValue(pats, 'model.layers.3.self_attn.xv_proj'), undefined);
    const cfg = parseAdapterConfig(write({ r: 16, lora_alpha: 32, rank_pattern: { v_proj: 4 }, alpha_pattern: { v_proj: 8 }, use_rslora: true }));
    assert.deepEqual(moduleScaling(cfg, 'model.layers.0.self_attn.v_proj'), { r: 4, alpha: 8, scale: 4 });
    assert.deepEqual(moduleScaling(cfg, 'model.layers.0.self_attn.q_proj'), { r: 16, alpha: 32, scale: 8 });
  });

  it('target_modules as suffixes, as a full-match regex, with layers_to_transform', () => {
    const rules = (tm: string[] | string, ltt: number[] | null = null, lp: string[] | null = null) => ({
      targetModules: tm,
      layersToTransform: ltt,
      layersPattern: lp,
    });
    assert.equal(isTargetModule(rules(['q_proj']), 'model.layers.0.self_attn.q_proj'), true);
    assert.equal(isTargetModule(rules(['q_proj']), 'model.layers.0.self_attn.xq_proj'), false);
    assert.equal(isTargetModule(rules('.*\\.(q|v)_proj'), 'model.layers.0.self_attn.v_proj'), true);
    assert.equal(isTargetModule(rules('(q|v)_proj'), 'model.layers.0.self_attn.v_proj'), false, 'a regex must match the whole name');
    assert.equal(isTargetModule(rules(['c_attn'], [1]), 'transformer.h.1.attn.c_attn'), true);
    assert.equal(isTargetModule(rules(['c_attn'], [1]), 'transformer.h.11.attn.c_attn'), false);
    assert.equal(isTargetModule(rules(['q_proj'], [0], ['blocks']), 'model.layers.0.self_attn.q_proj'), false);
  });
});
