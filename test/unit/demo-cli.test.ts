/** `lora-lens demo` (the README's first command) through the built CLI (`npm run build` first). */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { tmpDir } from './helpers/builders';
import { runCli } from './helpers/cli';

const demo = (out: string): ReturnType<typeof runCli> => runCli(['demo', '--out', out]);

test('the demo runs every job on its StarCoder2-shaped checkpoint and prints what each found', () => {
  const out = path.join(tmpDir('lora-lens-demo-'), 'demo');
  const r = demo(out);
  assert.equal(r.status, 0, String(r.stderr));
  const text = String(r.stdout);
  assert.match(text, /483 tensors, 11,701,440 elements/);
  assert.match(text, /LoRA targets: 120 tensors .*not targeted: 363 tensors/);
  assert.match(text, /task vector: 483 non-zero tensors/);
  assert.match(text, /\[fp32\] PASS/);
  assert.match(text, /\[bf16\] EXPECTED LOSS/);
  assert.match(text, /decompose \(nnls\): DECOMPOSABLE\nThe target is explained by math \+ chat/);
  assert.match(text, /decompose \(omp\): NOT DECOMPOSABLE/);
  for (const f of ['base/model.safetensors', 'adapter/adapter_config.json', 'merged-bf16/config.json', 'validate/summary.json', 'mask/mask.json']) {
    assert.ok(fs.existsSync(path.join(out, f)), f);
  }
  // A second run replaces its own earlier output.
  assert.equal(demo(out).status, 0);
});

test('the demo refuses to replace a folder it did not write', () => {
  const out = tmpDir('lora-lens-demo-foreign-');
  fs.writeFileSync(path.join(out, 'precious.txt'), 'keep me');
  const r = demo(out);
  assert.equal(r.status, 2);
  assert.match(String(r.stderr), /is not a LoRA Lens demo folder/);
  assert.equal(fs.readFileSync(path.join(out, 'precious.txt'), 'utf8'), 'keep me');
});
