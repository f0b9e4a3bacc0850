import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { estimateJob } from '../../src/engine/jobs/estimate';
import { writeSyntheticAdapter } from '../../src/engine/synthetic/adapter';
import { GEMMA3_270M, STARCODER2_3B } from '../../src/engine/synthetic/configs';
import { writeSyntheticModel } from '../../src/engine/synthetic/model';
import { quietContext } from '../../src/engine/util/job';
import { FIXTURES, peftConfig, tmpDir } from './helpers/builders';

const config = (f: string): string => path.join(FIXTURES, 'base-configs', f);
const ctx = quietContext;

describe('estimate', () => {
  it('gemma-2b, r=8 on q,k,v,o: 1,843,200, not the square-projection 20,643,840', () => {
    const r = estimateJob({ path: config('gemma-2b.json'), r: 8, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] }, ctx());
    // hidden 2048, 8 heads x head_dim 256 = 2048 (q, o), 1 KV head x 256 = 256 (k, v); 18 layers:
    //   q: 8 * (2048 + 2048) = 32,768   k: 8 * (2048 + 256) = 18,432
    //   v: 8 * (2048 + 256)  = 18,432   o: 8 * (2048 + 2048) = 32,768
    //   per layer 102,400; x 18 = 1,843,200.
    assert.equal(r.trainableParams, 1_843_200);
    assert.notEqual(r.trainableParams, 20_643_840);
    // Base: embed 256000*2048 + 18 * (2*2048*2048 + 2*256*2048 + 3*16384*2048 + 2*2048) + final norm 2048.
    assert.equal(r.baseParams, 2_506_172_416);
    assert.equal(r.percent, (100 * 1_843_200) / 2_506_172_416);
    assert.equal(r.modules.length, 72);
    assert.deepEqual(r.modules.find((m) => m.name === 'model.layers.17.self_attn.k_proj'), { name: 'model.layers.17.self_attn.k_proj', in: 2048, out: 256, r: 8, alpha: 8, params: 18_432 });
    assert.equal(r.shapesFrom, 'config');
  });

  it('the same figures from a model folder\'s headers as from its config.json', () => {
    const dir = path.join(tmpDir(), 'sc2');
    writeSyntheticModel(dir, STARCODER2_3B, { sparse: true });
    const fromWeights = estimateJob({ path: dir, r: 16, alpha: 32, targets: ['q_proj', 'v_proj', 'c_fc'] }, ctx());
    const fromConfig = estimateJob({ path: path.join(dir, 'config.json'), r: 16, alpha: 32, targets: ['q_proj', 'v_proj', 'c_fc'] }, ctx());
    assert.equal(fromWeights.shapesFrom, 'weights');
    assert.equal(fromConfig.shapesFrom, 'config');
    assert.deepEqual({ ...fromWeights, model: '', shapesFrom: '' }, { ...fromConfig, model: '', shapesFrom: '' });
    // 30 layers x 16 x ((3072 + 3072) + (3072 + 256) + (3072 + 12288))
    assert.equal(fromWeights.trainableParams, 30 * 16 * (6144 + 3328 + 15360));
  });

  it('honours rank_pattern, alpha_pattern, layers_to_transform, DoRA and modules_to_save from an adapter config', () => {
    const dir = tmpDir();
    fs.writeFileSync(
      path.join(dir, 'adapter_config.json'),
      JSON.stringify(
        peftConfig({
          r: 8,
          target_modules: ['q_proj', 'v_proj'],
          rank_pattern: { 'model.layers.0.self_attn.q_proj': 2, v_proj: 4 },
          alpha_pattern: { v_proj: 1 },
          layers_to_transform: [0, 15],
          use_dora: true,
          modules_to_save: ['model.norm'],
        }),
      ),
    );
    const r = estimateJob({ path: config('Llama-3.2-1B.json'), adapter: dir }, ctx());
    assert.deepEqual(
      r.modules.map((m) => [m.name, m.r, m.alpha, m.params]),
      [
        ['model.layers.0.self_attn.q_proj', 2, 16, 2 * (2048 + 2048) + 2048],
        ['model.layers.0.self_attn.v_proj', 4, 1, 4 * (2048 + 512) + 512],
        ['model.layers.15.self_attn.q_proj', 8, 16, 8 * (2048 + 2048) + 2048],
        ['model.layers.15.self_attn.v_proj', 4, 1, 4 * (2048 + 512) + 512],
      ],
    );
    assert.equal(r.doraParams, 2 * (2048 + 512));
    assert.deepEqual(r.modulesToSave, [{ name: 'model.norm', params: 2048 }]);
    assert.equal(r.trainableParams, r.modules.reduce((a, m) => a + m.params, 0) + 2048);
    assert.equal(r.adapterFileParams, null);
  });

  it("agrees with the element count of real adapters' weights", () => {
    for (const [base, adapter] of [
      ['Llama-3.2-1B.json', 'llama3.2-1b-qv-r8'],
      ['Qwen2.5-0.5B-Instruct.json', 'qwen2.5-0.5b-instruct-qv-r8'],
    ]) {
      const r = estimateJob({ path: config(base), adapter: path.join(FIXTURES, 'real-adapters', adapter) }, ctx());
      assert.equal(r.trainableParams, r.adapterFileParams, adapter);
      assert.deepEqual(r.warnings, []);
    }
    // The GPT-2 adapter also saves its 6-label score head (6 x 768), which the config does not list.
    const g = estimateJob({ path: config('gpt2.json'), adapter: path.join(FIXTURES, 'real-adapters', 'gpt2-seqcls-cattn-r8') }, ctx());
    assert.equal(g.trainableParams, 12 * 8 * (768 + 2304));
    assert.equal(g.adapterFileParams, g.trainableParams + 6 * 768);
    assert.equal(g.warnings.length, 1);
  });

  it('agrees with a synthetic adapter written with DoRA, rank_pattern and modules_to_save', () => {
    const root = tmpDir();
    const opts = { targets: ['q_proj', 'k_proj', 'c_proj'], r: 8, rankPattern: { k_proj: 2 }, useDora: true, modulesToSave: ['model.norm'], layersToTransform: [1, 2] };
    writeSyntheticAdapter(path.join(root, 'a'), STARCODER2_3B, opts);
    fs.writeFileSync(path.join(root, 'config.json'), JSON.stringify(STARCODER2_3B));
    const r = estimateJob({ path: path.join(root, 'config.json'), adapter: path.join(root, 'a') }, ctx());
    assert.equal(r.modules.length, 6);
    assert.equal(r.savedParams, 2 * 3072);
    assert.equal(r.trainableParams, r.adapterFileParams);
    // Per layer: q 8*(3072+3072)+3072, k 2*(3072+256)+256, c_proj 8*(12288+3072)+3072 (DoRA adds out).
    assert.equal(r.trainableParams, 2 * (8 * 6144 + 3072 + 2 * 3328 + 256 + 8 * 15360 + 3072) + 6144);
  });

  it('all-linear leaves out the output head and embeddings; a null target_modules takes PEFT\'s default', () => {
    const all = estimateJob({ path: config('Qwen2.5-0.5B-Instruct.json'), r: 4, targets: ['all-linear'] }, ctx());
    assert.equal(all.modules.length, 24 * 7);
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(peftConfig({ r: 4, target_modules: null })));
    const d = estimateJob({ path: config('Qwen2.5-0.5B-Instruct.json'), adapter: dir }, ctx());
    assert.deepEqual(d.targets, ['q_proj', 'v_proj']);
    assert.equal(d.modules.length, 48);
    assert.throws(() => estimateJob({ path: config('distilbert-base-uncased.json'), adapter: dir }, ctx()), /no default targets for model type "distilbert"/);
  });

  it('equals the trainable parameters PEFT itself counts (golden from test/fixtures/layouts/peft_estimates.py)', () => {
    const golden = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'layouts', 'peft-estimates.json'), 'utf8')) as {
      cases: Array<{ base: string; lora: Record<string, unknown>; trainableParams: number; baseParams: number }>;
    };
    const presets: Record<string, Record<string, unknown>> = { STARCODER2_3B, GEMMA3_270M };
    const dir = tmpDir();
    golden.cases.forEach((c, i) => {
      let base = config(c.base);
      if (presets[c.base]) {
        base = path.join(dir, `${c.base}.json`);
        fs.writeFileSync(base, JSON.stringify(presets[c.base]));
      }
      const adapter = path.join(dir, `adapter${i}`);
      fs.mkdirSync(adapter);
      fs.writeFileSync(path.join(adapter, 'adapter_config.json'), JSON.stringify(peftConfig(c.lora)));
      const r = estimateJob({ path: base, adapter }, ctx());
      assert.equal(r.trainableParams, c.trainableParams, `${c.base} ${JSON.stringify(c.lora)}`);
      assert.equal(r.baseParams, c.baseParams, c.base);
    });
  });

  it('bad input is a LensError', () => {
    assert.throws(() => estimateJob({ path: config('gpt2.json') }, ctx()), (e: Error) => e.name === 'LensError' && /--adapter DIR, or --r N/.test(e.message));
    assert.throws(() => estimateJob({ path: config('gpt2.json'), r: 0, targets: ['c_attn'] }, ctx()), /positive integer/);
    assert.throws(() => estimateJob({ path: path.join(FIXTURES, 'nope'), r: 2, targets: ['x'] }, ctx()), /no such file/);
  });
});
