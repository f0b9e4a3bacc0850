/**
 * Every command that computes, given a missing input, exits 2 with exactly one stderr line and nothing
 * on stdout, whatever the machine's GPU stack prints (Dawn warns on stderr when it finds no Vulkan).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { tmpDir } from './helpers/builders';
import { assertOneLineError, runCli } from './helpers/cli';

test('a missing input is one stderr line for every numeric command, on every --device', () => {
  const root = tmpDir('lora-lens-errors-');
  const gone = path.join(root, 'missing');
  const out = path.join(root, 'out');
  const commands = [
    ['merge', '--base', gone, '--adapter', gone, '--out', out, '--dtype', 'bf16'],
    ['extract', '--base', gone, '--finetuned', gone, '--out', path.join(out, 'tv.safetensors')],
    ['compare', '--base', gone, '--adapter', gone, '--finetuned', gone, '--out', out],
    ['precision', '--base', gone, '--adapter', gone],
    ['validate', '--base', gone, '--adapter', gone, '--out', out],
    ['mask', '--base', gone, '--adapters', gone, '--budget', '10', '--out', out],
    ['compress', '--mask', gone, '--base', gone, '--adapter', gone, '--out', out],
    ['decompose', '--mask', gone, '--base', gone, '--dictionary', gone, '--target', gone],
  ];
  for (const args of commands) {
    for (const device of ['auto', 'cpu']) {
      assertOneLineError(runCli([...args, '--device', device]), gone);
      assert.equal(fs.existsSync(out), false, `${args[0]} wrote nothing`);
    }
  }
});
