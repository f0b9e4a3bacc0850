/** Recognising adapter and model folders, output patterns, and the base of an adapter (src/extension/workspace/folders.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { eventMatters, expandPattern, guessBase, recogniseFolders } from '../../src/extension/workspace/folders';

test('adapter folders need config and weights; model folders a model file or an index; pickle-only folders apart', () => {
  const r = recogniseFolders([
    '/w/ad/adapter_config.json',
    '/w/ad/adapter_model.safetensors',
    '/w/config-only-adapter/adapter_config.json',
    '/w/base/model.safetensors',
    '/w/sharded/model.safetensors.index.json',
    '/w/nested/deep/model.safetensors',
    '/w/ad-bin/adapter_config.json',
    '/w/ad-bin/adapter_model.bin',
    '/w/torch/pytorch_model.bin',
    '/w/torch-sharded/pytorch_model.bin.index.json',
    '/w/both/pytorch_model.bin',
    '/w/both/model.safetensors',
  ]);
  assert.deepEqual(r, {
    adapters: ['/w/ad', '/w/ad-bin'],
    models: ['/w/base', '/w/both', '/w/nested/deep', '/w/sharded', '/w/torch', '/w/torch-sharded'],
    pickles: ['/w/ad-bin', '/w/torch', '/w/torch-sharded'],
  });
});

test('output pattern variables', () => {
  assert.equal(expandPattern('${workspaceFolder}/out/${name}-${job}', { workspaceFolder: '/w', name: 'qv', job: 'merged-bf16' }), '/w/out/qv-merged-bf16');
  assert.equal(expandPattern('${unknown}/${job}', { job: 'compare' }), '${unknown}/compare');
});

test('the base model of an adapter, by path or by its last name', () => {
  const models = ['/w/models/Qwen2.5-0.5B-Instruct', '/w/models/gpt2'];
  assert.equal(guessBase('Qwen/Qwen2.5-0.5B-Instruct', models), '/w/models/Qwen2.5-0.5B-Instruct');
  assert.equal(guessBase('/w/models/gpt2', models), '/w/models/gpt2');
  assert.equal(guessBase('meta-llama/Llama-3.2-1B', models), undefined);
  assert.equal(guessBase(null, models), undefined);
});

test('watch events that rescan: marker files, new folders (a checkpoint moved in whole), deleted checkpoint folders or their parents', () => {
  const known = { adapters: ['/ws/adapters/qv'], models: ['/ws/models/base'], pickles: [] };
  const dirs = new Set(['/ws/adapters/new', '/ws/out']);
  const isDir = (p: string): boolean => dirs.has(p);
  assert.equal(eventMatters('/ws/x/adapter_config.json', true, known, isDir), true);
  assert.equal(eventMatters('/ws/x/model.safetensors', false, known, isDir), true);
  assert.equal(eventMatters('/ws/adapters/new', true, known, isDir), true, 'a folder renamed into the workspace');
  assert.equal(eventMatters('/ws/notes.txt', true, known, isDir), false);
  assert.equal(eventMatters('/ws/adapters', false, known, isDir), true, 'the parent of a known adapter');
  assert.equal(eventMatters('/ws/models/base', false, known, isDir), true);
  assert.equal(eventMatters('/ws/models/base-old', false, known, isDir), false, 'a sibling whose name only starts the same');
  assert.equal(eventMatters('/ws/out', false, known, isDir), false);
});
