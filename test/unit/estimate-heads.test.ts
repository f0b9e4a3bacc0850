/**
 * Estimate with the modules_to_save PEFT really applies: a SEQ_CLS adapter trains its `classifier` /
 * `score` head though the config lists none (PeftModelForSequenceClassification adds them), and PEFT
 * matches modules_to_save as a plain suffix of the module path (`pre_classifier` ends with `classifier`).
 * Pinned on the real GPT-2 and DistilBERT adapters, whose weights hold exactly these tensors.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { effectiveModulesToSave, isSavedModule } from '../../src/engine/checkpoint/adapterConfig';
import { estimateJob } from '../../src/engine/jobs/estimate';
import { quietContext } from '../../src/engine/util/job';
import { FIXTURES, tmpDir } from './helpers/builders';

const real = (name: string): string => path.join(FIXTURES, 'real-adapters', name);
const baseConfig = (f: string): Record<string, unknown> => JSON.parse(fs.readFileSync(path.join(FIXTURES, 'base-configs', f), 'utf8'));

describe('estimate: the heads a classification adapter saves', () => {
  const dir = tmpDir();
  const write = (name: string, cfg: Record<string, unknown>): string => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, JSON.stringify(cfg));
    return p;
  };

  it('GPT-2 SEQ_CLS (modules_to_save null): the 6-label score head counts, and the total is what the weights hold', () => {
    const cfg = write('gpt2-seqcls.json', { ...baseConfig('gpt2.json'), architectures: ['GPT2ForSequenceClassification'], id2label: { 0: 'a', 1: 'b', 2: 'c', 3: 'd', 4: 'e', 5: 'f' } });
    const r = estimateJob({ path: cfg, adapter: real('gpt2-seqcls-cattn-r8') }, quietContext());
    assert.deepEqual(r.modulesToSave, [{ name: 'score', params: 6 * 768 }]);
    assert.equal(r.trainableParams, 12 * 8 * (768 + 2304) + 6 * 768);
    assert.equal(r.trainableParams, r.adapterFileParams);
    assert.deepEqual(r.warnings, []);
  });

  it("DistilBERT SEQ_CLS with modules_to_save ['classifier', 'score']: pre_classifier is saved too, as PEFT's suffix match does", () => {
    const cfg = write('distilbert-seqcls.json', { ...baseConfig('distilbert-base-uncased.json'), architectures: ['DistilBertForSequenceClassification'], id2label: { 0: 'NEG', 1: 'POS' } });
    const r = estimateJob({ path: cfg, adapter: real('distilbert-seqcls-qv-mts') }, quietContext());
    assert.deepEqual(r.modulesToSave, [
      { name: 'pre_classifier', params: 768 * 768 + 768 },
      { name: 'classifier', params: 2 * 768 + 2 },
    ]);
    assert.equal(r.trainableParams, 739_586);
    assert.equal(r.trainableParams, r.adapterFileParams);
    assert.deepEqual(r.warnings, []);
  });

  it('the matching rules', () => {
    assert.deepEqual(effectiveModulesToSave({ modulesToSave: [], taskType: 'SEQ_CLS' }), ['classifier', 'score']);
    assert.deepEqual(effectiveModulesToSave({ modulesToSave: ['classifier'], taskType: 'TOKEN_CLS' }), ['classifier', 'score']);
    assert.deepEqual(effectiveModulesToSave({ modulesToSave: [], taskType: 'QUESTION_ANS' }), ['qa_outputs']);
    assert.deepEqual(effectiveModulesToSave({ modulesToSave: ['model.norm'], taskType: 'CAUSAL_LM' }), ['model.norm']);
    assert.equal(isSavedModule(['classifier'], 'pre_classifier'), true);
    assert.equal(isSavedModule(['model.norm'], 'model.layers.0.input_layernorm'), false);
    assert.equal(isSavedModule(['layers.1'], 'model.layers.1.mlp.up_proj'), true, 'a saved module takes its submodules along');
    assert.equal(isSavedModule(['layers.1'], 'model.layers.11.mlp.up_proj'), false, 'no path of layer 11 ends with layers.1');
    assert.equal(isSavedModule([], 'score'), false);
  });
});
