/**
 * spectrum on every adapter format the engine reads, against numpy/LAPACK's SVD of each delta expanded in
 * float64 from the formats' own formulas (helpers/numpyRef.ts `lycoris_deltas`): kohya LoRA (Linear and
 * Conv2d), LoCon with a Tucker core, LoHa (plain and Tucker), LoKr (whole, factored and Tucker factors),
 * a full diff, the diffusers naming, and the real LyCORIS LoKr file; (IA)³ is named, not guessed.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { FIXTURES, tmpDir } from './helpers/builders';
import { assertOneLineError, runCli } from './helpers/cli';
import { writeSafetensorsFile } from './helpers/diffusion';
import { alpha, kohyaZoo, tensor } from './helpers/lycorisZoo';
import { runNumpy } from './helpers/numpyRef';
import { findPython } from './helpers/python';

const root = tmpDir();
const REAL = path.join(FIXTURES, 'real-adapters-2');

interface SpectrumJson {
  modules: { name: string; rule: string; rank: number; out: number; in: number; singularValues: number[]; energyRank99: number }[];
  noFactorForm: { name: string; rule: string; reason: string }[];
}

function spectrumOf(adapter: string): SpectrumJson {
  const json = path.join(root, `spectrum-${path.basename(adapter)}.json`);
  const r = runCli(['spectrum', '--adapter', adapter, '--json', json]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(fs.readFileSync(json, 'utf8')) as SpectrumJson;
}

/** Our spectrum of `file` against numpy's SVD of each expanded delta, to 1e-9·σ₁, and numpy's values past ours zero. */
function checkAgainstNumpy(python: string, file: string, ours: SpectrumJson): void {
  const only = ours.modules.map((m) => m.name);
  const ref = runNumpy<Record<string, number[]>>(python, `emit({m: svals(d).tolist() for m, d in lycoris_deltas(${JSON.stringify(file)}, set(${JSON.stringify(only)})).items()})`);
  assert.deepEqual(only.sort(), Object.keys(ref).sort());
  for (const m of ours.modules) {
    const s = ref[m.name];
    const got = m.singularValues;
    assert.ok(got.length <= s.length, m.name);
    for (let i = 0; i < s.length; i++) assert.ok(Math.abs((got[i] ?? 0) - s[i]) <= 1e-9 * s[0], `${m.name} (${m.rule}) σ${i}: ${got[i]} vs ${s[i]}`);
  }
}

test('spectrum of every kohya / LyCORIS kind equals numpy/LAPACK on the expanded deltas to 1e-9', (t) => {
  const py = findPython(['numpy']);
  const file = kohyaZoo(path.join(root, 'zoo.safetensors'));
  const ours = spectrumOf(file);
  const rules = new Map(ours.modules.map((m) => [m.name.replace('lora_unet_down_blocks_0_', ''), m]));
  assert.equal(rules.get('attentions_0_proj_in')!.rule, 'LoRA');
  assert.equal(rules.get('resnets_0_conv2')!.rule, 'LoCon (Tucker)');
  assert.equal(rules.get('attentions_0_proj_out')!.rank, 6);
  assert.equal(rules.get('attentions_0_transformer_blocks_0_attn1_to_q')!.singularValues.length, 10, 'LoHa of r₁·r₂ 16 on 10 rows');
  assert.equal(rules.get('downsamplers_0_conv')!.rule, 'LoHa (Tucker)');
  assert.equal(rules.get('attentions_0_transformer_blocks_0_attn1_to_k')!.rank, 4, 'LoKr: 2 (whole w1 [2, 3]) × 2');
  assert.equal(rules.get('resnets_1_conv1')!.rule, 'LoKr (Tucker)');
  assert.equal(rules.get('attentions_0_transformer_blocks_0_attn2_to_k')!.rule, 'full diff');
  assert.deepEqual(
    ours.noFactorForm.map((m) => [m.name, m.rule]),
    [['lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v', 'IA³']],
  );
  assert.match(ours.noFactorForm[0].reason, /base/);
  if (!py.python) return t.skip(py.skip);
  // The diff's bias (diff_b) is a module of its own, the 9 values as a [9, 1] delta.
  checkAgainstNumpy(py.python, file, { ...ours, modules: ours.modules.filter((m) => !m.name.endsWith('.bias')) });
  assert.ok(ours.modules.some((m) => m.name.endsWith('attn2_to_k.bias')));
});

test('spectrum of a diffusers-named LoRA file equals numpy to 1e-9', (t) => {
  const py = findPython(['numpy']);
  const m = 'unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1';
  const file = writeSafetensorsFile(path.join(root, 'diffusers.safetensors'), [
    tensor(`${m}.to_q.lora.down.weight`, [4, 12], 40),
    tensor(`${m}.to_q.lora.up.weight`, [12, 4], 41),
    alpha(`${m}.to_q`, 2),
    tensor(`${m}.to_k.lora_A.weight`, [3, 12], 42),
    tensor(`${m}.to_k.lora_B.weight`, [6, 3], 43),
  ]);
  const ours = spectrumOf(file);
  assert.equal(ours.modules.length, 2);
  if (!py.python) return t.skip(py.skip);
  checkAgainstNumpy(py.python, file, ours);
});

test('spectrum of the real LyCORIS LoKr file (kohya naming, fp16) equals numpy to 1e-9', (t) => {
  const py = findPython(['numpy']);
  const file = path.join(REAL, 'sd-lycoris-lokr-kohya-fp16/smart_falcon_4_lokr.safetensors');
  const ours = spectrumOf(file);
  assert.equal(ours.modules.length, 350);
  assert.ok(ours.modules.every((m) => m.rule === 'LoKr' && m.rank === 16 && m.singularValues.length === 16));
  if (!py.python) return t.skip(py.skip);
  // Six modules from the smallest expansion to the largest ([1280, 1280]): numpy's SVD of all 350 would take minutes.
  const bySize = [...ours.modules].sort((a, b) => a.out * a.in - b.out * b.in || a.name.localeCompare(b.name));
  checkAgainstNumpy(py.python, file, { ...ours, modules: bySize.filter((_, i) => i % 70 === 0 || i === bySize.length - 1) });
});

test('spectrum of a file that is no adapter exits 2 with one line', () => {
  const file = writeSafetensorsFile(path.join(root, 'weights.safetensors'), [tensor('model.layers.0.mlp.up_proj.weight', [4, 4], 50)]);
  assertOneLineError(runCli(['spectrum', '--adapter', file]), file, 'not an adapter');
});
