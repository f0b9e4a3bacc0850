/**
 * What the CLI prints on stderr when stderr is not a terminal (scripts, CI, independent checks): bad
 * input is exactly one line even when the job warned before failing, usage errors name the command
 * once, warnings of a successful job still arrive, and a clean job prints nothing (no progress).
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { loraPair, peftConfig, tmpDir, writeAdapter, writeModel } from './helpers/builders';
import { CliRun, runCli } from './helpers/cli';

const cli = (...args: string[]): CliRun => runCli(args);

const lines = (s: string): string[] => s.split('\n').filter((l) => l !== '');

describe('stderr when it is not a terminal', () => {
  const root = tmpDir('lora-lens-stderr-');
  const base = writeModel(path.join(root, 'base'), { model_type: 'llama' }, [
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [4, 4] },
    { name: 'model.norm.weight', shape: [4] },
  ]);
  // Shares no tensor name and shape with the base: extract warns about the pairing, then fails.
  const other = writeModel(path.join(root, 'other'), { model_type: 'llama' }, [
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [4, 2] },
    { name: 'lm_head.weight', shape: [3, 4] },
  ]);
  const adapter = writeAdapter(path.join(root, 'adapter'), peftConfig({ r: 2, target_modules: ['q_proj'], modules_to_save: ['score'] }), [
    ...loraPair('model.layers.0.self_attn.q_proj', 2, 4, 4),
    { name: 'base_model.model.score.weight', shape: [2, 4] },
  ]);

  it('bad input after a warning is still one line, naming the file', () => {
    const r = cli('extract', '--base', base, '--finetuned', other, '--out', path.join(root, 'tv.safetensors'), '--device', 'cpu');
    assert.equal(r.status, 2);
    assert.equal(r.stdout, '');
    assert.equal(lines(r.stderr).length, 1, r.stderr);
    assert.ok(r.stderr.includes(other), r.stderr);
  });

  it('usage errors and unknown commands are one line that names the command once', () => {
    const r = cli('merge', '--base', base, '--adapter', adapter, '--dtype', 'bf16');
    assert.equal(r.status, 2);
    assert.deepEqual(lines(r.stderr), ['lora-lens merge: --out is required']);
    const u = cli('mrege', '--base', base);
    assert.equal(u.status, 2);
    assert.equal(u.stdout, '');
    assert.equal(lines(u.stderr).length, 1, u.stderr);
    assert.match(u.stderr, /unknown command 'mrege'/);
  });

  it("a successful job's warnings reach stderr; a clean job prints nothing there", () => {
    const r = cli('merge', '--base', base, '--adapter', adapter, '--out', path.join(root, 'merged'), '--dtype', 'fp32', '--device', 'cpu', '--json', '-');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).addedTensors, 1, 'stdout is the JSON report alone');
    assert.match(r.stderr, /^warning: score\.weight: .*absent from the base/m);
    const clean = cli('census', base, '--json', '-');
    assert.equal(clean.status, 0);
    assert.equal(clean.stderr, '', 'no progress and no log lines off a terminal');
    JSON.parse(clean.stdout);
  });
});
