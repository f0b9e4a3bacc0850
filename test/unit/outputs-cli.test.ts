/**
 * Outputs are never written over inputs, through the built CLI (`npm run build` first): --json FILE and
 * --out are checked before any work, a refusal is exit 2 with one stderr line, and nothing is left
 * behind (no output folder, no temporary file beside the target, the inputs byte for byte unchanged).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { withOutputDir } from '../../src/engine/util/outputDir';
import { loraPair, peftConfig, tmpDir, writeAdapter, writeModel } from './helpers/builders';
import { assertOneLineError, CliRun, runCli } from './helpers/cli';
import { snapshot } from './helpers/files';

const cli = (cwd: string, ...args: string[]): CliRun => runCli([...args, '--device', 'cpu'], { cwd });

const refused = assertOneLineError;

describe('outputs never land on inputs', () => {
  const root = tmpDir('lora-lens-outputs-');
  const config = { model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: 8, num_hidden_layers: 1 };
  writeModel(path.join(root, 'base'), config, [
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [8, 8] },
    { name: 'model.norm.weight', shape: [8] },
  ]);
  writeModel(path.join(root, 'ft'), config, [
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [8, 8], data: 5 },
    { name: 'model.norm.weight', shape: [8] },
  ]);
  writeAdapter(path.join(root, 'adapter'), peftConfig({ r: 2, target_modules: ['q_proj'] }), loraPair('model.layers.0.self_attn.q_proj', 2, 8, 8));
  fs.writeFileSync(path.join(root, 'notes.txt'), 'a file, not a folder\n');
  const before = snapshot(root);
  const unchanged = (): void => assert.deepEqual(snapshot(root), before, 'inputs and their folders are untouched, no temporary file left');

  it('--json naming a file of an input folder (config.json, model.safetensors, adapter_config.json) is refused', () => {
    refused(cli(root, 'census', 'base', '--json', 'base/config.json'), 'base/config.json', 'input');
    refused(cli(root, 'census', 'base/config.json', '--json', 'base/config.json'), 'base/config.json');
    refused(cli(root, 'estimate', 'base', '--r', '2', '--target', 'q_proj', '--json', 'base/model.safetensors'), 'base/model.safetensors');
    refused(cli(root, 'merge', '--base', 'base', '--adapter', 'adapter', '--out', 'merged', '--dtype', 'bf16', '--json', 'adapter/adapter_config.json'), 'adapter/adapter_config.json');
    refused(cli(root, 'precision', '--base', 'base', '--adapter', 'adapter', '--json', 'base/model.safetensors'), 'base/model.safetensors');
    refused(cli(root, 'compare', '--base', 'base', '--adapter', 'adapter', '--finetuned', 'ft', '--out', 'cmp', '--json', 'ft/model.safetensors'), 'ft/model.safetensors');
    refused(cli(root, 'census', 'base', '--json', 'base'), 'base');
    // A new file in an input folder can change how it reads (a shard index makes the folder sharded).
    refused(cli(root, 'census', 'base', '--json', 'base/model.safetensors.index.json'), 'base/model.safetensors.index.json');
    refused(cli(root, 'census', 'base/model.safetensors', '--json', 'base/report.json'), 'base/report.json');
    refused(cli(root, 'merge', '--base', 'base', '--adapter', 'adapter', '--out', 'merged', '--dtype', 'bf16', '--json', 'adapter/merge.json'), 'adapter/merge.json');
    for (const d of ['merged', 'cmp']) assert.equal(fs.existsSync(path.join(root, d)), false, `${d}: no partial output`);
    unchanged();
  });

  it('--out naming a file of an input folder, or the --json file, is refused before any work', () => {
    refused(cli(root, 'extract', '--base', 'base', '--finetuned', 'ft', '--out', 'base/model.safetensors'), 'base/model.safetensors');
    refused(cli(root, 'extract', '--base', 'base', '--finetuned', 'ft', '--out', 'ft/model.safetensors'), 'ft/model.safetensors');
    refused(cli(root, 'extract', '--base', 'base', '--finetuned', 'ft', '--out', 'tv.safetensors', '--json', 'tv.safetensors'), 'tv.safetensors', '--out');
    refused(cli(root, 'merge', '--base', 'base', '--adapter', 'adapter', '--out', '.', '--dtype', 'fp32'), 'input');
    assert.equal(fs.existsSync(path.join(root, 'tv.safetensors')), false);
    unchanged();
  });

  it('a --json folder, or a path under a file, is an input error, not a crash', () => {
    refused(cli(root, 'census', 'base', '--json', '.'), '.');
    refused(cli(root, 'census', 'base', '--json', 'notes.txt/report.json'), 'notes.txt');
    refused(cli(root, 'merge', '--base', 'base', '--adapter', 'adapter', '--out', 'merged', '--dtype', 'bf16', '--json', 'merged'), 'merged');
    assert.equal(fs.existsSync(path.join(root, 'merged')), false);
    unchanged();
  });

  it('a report into a folder that does not exist yet, or a new file beside the inputs, is written', () => {
    const r = cli(root, 'census', 'base', '--json', 'reports/new/census.json');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(fs.readFileSync(path.join(root, 'reports/new/census.json'), 'utf8')).summary.tensors, 2);
    const m = cli(root, 'merge', '--base', 'base', '--adapter', 'adapter', '--out', 'base/merged', '--dtype', 'fp32', '--json', 'base/reports/merge.json');
    assert.equal(m.status, 0, m.stderr);
    assert.ok(fs.existsSync(path.join(root, 'base/merged/model.safetensors')));
    assert.equal(JSON.parse(fs.readFileSync(path.join(root, 'base/reports/merge.json'), 'utf8')).loraTensors, 1);
  });

  it('a job that fails inside its output folder leaves nothing, not even the folders made to hold it', async () => {
    const target = path.join(root, 'new', 'nested', 'out');
    await assert.rejects(
      withOutputDir('test', target, [], async (d) => {
        fs.writeFileSync(d.file('half.safetensors'), 'partial');
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.equal(fs.existsSync(path.join(root, 'new')), false);
    await withOutputDir('test', target, [], async (d) => fs.writeFileSync(d.file('done.txt'), 'ok'));
    assert.deepEqual(fs.readdirSync(path.join(root, 'new', 'nested')), ['out']);
  });
});
