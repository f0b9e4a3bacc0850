/**
 * Encoder-decoder and speech models in the census: T5 (encoder.block.N.layer.K.SelfAttention /
 * EncDecAttention / DenseReluDense), Whisper and BART (encoder.layers.N / decoder.layers.N, encoder_attn,
 * fc1 / fc2): attention, cross-attention and MLP told apart, layers counted per stack. The real adapters
 * (flan-t5-base q/v as adapter_model.bin, whisper-small q/v) are classified as the modules they adapt.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { checkpointNode } from '../../src/extension/census/treeModel';
import { censusJob } from '../../src/engine/jobs/census';
import { quietContext } from '../../src/engine/util/job';
import { classifyTensor } from '../../src/shared/census/classify';
import { FIXTURES } from './helpers/builders';

const real = (name: string): string => path.join(FIXTURES, 'real-adapters-2', name);

describe('encoder-decoder models in the census', () => {
  it('T5 names: sub-layers of a block are not blocks; EncDecAttention is cross-attention; each stack has its final norm', () => {
    const c = (n: string): unknown[] => {
      const x = classifyTensor(n);
      return [x.category, x.layer, x.projection, x.stack ?? null];
    };
    assert.deepEqual(c('encoder.block.3.layer.0.SelfAttention.q.weight'), ['attention', 3, 'q', 'encoder']);
    assert.deepEqual(c('encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight'), ['attention', 0, 'relative_attention_bias', 'encoder']);
    assert.deepEqual(c('encoder.block.3.layer.1.DenseReluDense.wi_0.weight'), ['mlp', 3, 'wi_0', 'encoder']);
    assert.deepEqual(c('decoder.block.5.layer.1.EncDecAttention.v.weight'), ['cross_attention', 5, 'v', 'decoder']);
    assert.deepEqual(c('decoder.block.5.layer.2.DenseReluDense.wo.weight'), ['mlp', 5, 'wo', 'decoder']);
    assert.deepEqual(c('decoder.block.5.layer.2.layer_norm.weight'), ['norm', 5, null, 'decoder']);
    assert.deepEqual(c('encoder.final_layer_norm.weight'), ['final_norm', null, null, 'encoder']);
    assert.deepEqual(c('shared.weight'), ['embedding', null, null, null]);
    assert.deepEqual(c('base_model.model.decoder.block.0.layer.1.EncDecAttention.q.lora_A.weight'), ['cross_attention', 0, 'q', 'decoder']);
  });

  it('Whisper and BART names: encoder_attn is cross-attention, fc1 / fc2 the MLP, the stack layer_norm its final norm', () => {
    const c = (n: string): unknown[] => {
      const x = classifyTensor(n);
      return [x.category, x.layer, x.projection, x.stack ?? null];
    };
    assert.deepEqual(c('model.decoder.layers.7.encoder_attn.k_proj.weight'), ['cross_attention', 7, 'k_proj', 'decoder']);
    assert.deepEqual(c('model.decoder.layers.7.self_attn.k_proj.weight'), ['attention', 7, 'k_proj', 'decoder']);
    assert.deepEqual(c('model.encoder.layers.2.fc1.weight'), ['mlp', 2, 'fc1', 'encoder']);
    assert.deepEqual(c('model.decoder.layers.2.encoder_attn_layer_norm.weight'), ['norm', 2, null, 'decoder']);
    assert.deepEqual(c('model.encoder.layer_norm.weight'), ['final_norm', null, null, 'encoder']);
    assert.deepEqual(c('model.encoder.conv1.weight'), ['other', null, null, null]);
    // Decoder-only models keep their one stack of layers, unnamed.
    assert.deepEqual(c('model.layers.4.self_attn.q_proj.weight'), ['attention', 4, 'q_proj', null]);
  });

  it('the real whisper-small q/v adapter: 48 self-attention and 24 cross-attention modules, 12 encoder and 12 decoder layers', () => {
    const r = censusJob({ path: real('whisper-small-qv-r8') }, quietContext());
    const modules = (cat: string): number => r.tensors.filter((t) => t.category === cat && t.name.endsWith('lora_A.weight')).length;
    assert.deepEqual([modules('attention'), modules('cross_attention'), modules('other')], [48, 24, 0]);
    assert.deepEqual([r.summary.layers, r.summary.stackLayers], [24, { encoder: 12, decoder: 12 }]);
    assert.deepEqual(r.perLayer.filter((l) => l.layer === 3).map((l) => [l.stack, l.tensors]), [['decoder', 8], ['encoder', 4]]);
    // The six contract keys stay; cross_attention appears because it is present.
    assert.deepEqual(Object.keys(r.summary.categories), ['attention', 'mlp', 'norm', 'embedding', 'final_norm', 'other', 'cross_attention']);
  });

  it("the census tree gives each stack its layers (Encoder layer 3 and Decoder layer 3 are two nodes) and a Cross-attention category", () => {
    const r = censusJob({ path: real('whisper-small-qv-r8') }, quietContext());
    const root = checkpointNode({ path: r.path, report: r });
    assert.deepEqual(root.children.map((c) => c.label.split(' — ')[0]), ['Attention', 'Cross-attention']);
    const attention = root.children[0];
    assert.equal(attention.children.length, 24);
    assert.deepEqual(attention.children.filter((c) => / layer 3 /.test(c.label)).map((c) => c.label), ['Decoder layer 3 — 4 tensors', 'Encoder layer 3 — 4 tensors']);
    assert.equal(root.children[1].children.length, 12);
  });

  it('the real flan-t5-base q/v adapter (adapter_model.bin): SelfAttention in both stacks, EncDecAttention in the decoder', () => {
    const r = censusJob({ path: real('flan-t5-base-seq2seq-qv-r8-bin') }, quietContext());
    const modules = (cat: string): number => r.tensors.filter((t) => t.category === cat && /lora_A/.test(t.name)).length;
    assert.deepEqual([modules('attention'), modules('cross_attention'), modules('other')], [48, 24, 0]);
    assert.deepEqual(r.summary.stackLayers, { encoder: 12, decoder: 12 });
    // A decoder-only census keeps no stacks.
    const llama = censusJob({ path: path.join(FIXTURES, 'real-adapters', 'llama3.2-1b-qv-r8') }, quietContext());
    assert.equal(llama.summary.stackLayers, undefined);
    assert.ok(llama.perLayer.every((l) => l.stack === undefined));
  });
});
