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
import { FIXTURES, randomF32, TestTensor, tmpDir } from './helpers/builders';
import { assertOneLineError, runCli } from './helpers/cli';
import { writeSafetensorsFile } from './helpers/diffusion';
import { runNumpy } from './helpers/numpyRef';
import { findPython } from './helpers/python';

const root = tmpDir();
const REAL = path.join(FIXTURES, 'real-adapters-2');

interface SpectrumJson {
  modules: { name: string; rule: string; rank: number; out: number; in: number; singularValues: number[]; energyRank99: number }[];
  noFactorForm: { name: string; rule: string; reason: string }[];
}

export function spectrumOf(adapter: string): SpectrumJson {
  const json = path.join(root, `spectrum-${path.basename(adapter)}.json`);
  const r = runCli(['spectrum', '--adapter', adapter, '--json', json]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(fs.readFileSync(json, 'utf8')) as SpectrumJson;
}

const tensor = (name: string, shape: number[], seed: number, dtype: 'F16' | 'F32' = 'F32'): TestTensor => ({
  name,
  dtype,
  shape,
  data: randomF32(shape.reduce((a, b) => a * b, 1), seed, 0.3),
});
const alpha = (m: string, a: number): TestTensor => ({ name: `${m}.alpha`, shape: [], data: new Float32Array([a]) });

/** One module of each LyCORIS / kohya kind, in kohya naming, with the shapes their code saves. */
export function kohyaZoo(file: string): string {
  const u = 'lora_unet_down_blocks_0';
  return writeSafetensorsFile(file, [
    // kohya LoRA on a Linear, alpha 3 / r 4; and on a Conv2d 3x3 (down [r, in, 3, 3], up [out, r, 1, 1]).
    tensor(`${u}_attentions_0_proj_in.lora_down.weight`, [4, 12], 1),
    tensor(`${u}_attentions_0_proj_in.lora_up.weight`, [10, 4], 2),
    alpha(`${u}_attentions_0_proj_in`, 3),
    tensor(`${u}_resnets_0_conv1.lora_down.weight`, [3, 6, 3, 3], 3, 'F16'),
    tensor(`${u}_resnets_0_conv1.lora_up.weight`, [8, 3, 1, 1], 4, 'F16'),
    alpha(`${u}_resnets_0_conv1`, 1.5),
    // LoCon with a Tucker core: down [r, in, 1, 1], mid [r, r, 3, 3], up [out, r, 1, 1].
    tensor(`${u}_resnets_0_conv2.lora_down.weight`, [3, 8, 1, 1], 5),
    tensor(`${u}_resnets_0_conv2.lora_mid.weight`, [3, 3, 3, 3], 6),
    tensor(`${u}_resnets_0_conv2.lora_up.weight`, [8, 3, 1, 1], 7),
    alpha(`${u}_resnets_0_conv2`, 2),
    // LoHa on a Linear (rank 3 x 2 = 6 ≤ min(out, in)); and one whose r₁·r₂ = 16 exceeds its 10 rows.
    tensor(`${u}_attentions_0_proj_out.hada_w1_a`, [10, 3], 8),
    tensor(`${u}_attentions_0_proj_out.hada_w1_b`, [3, 12], 9),
    tensor(`${u}_attentions_0_proj_out.hada_w2_a`, [10, 2], 10),
    tensor(`${u}_attentions_0_proj_out.hada_w2_b`, [2, 12], 11),
    alpha(`${u}_attentions_0_proj_out`, 1),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_q.hada_w1_a`, [10, 4], 12),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_q.hada_w1_b`, [4, 14], 13),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_q.hada_w2_a`, [10, 4], 14),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_q.hada_w2_b`, [4, 14], 15),
    // LoHa with Tucker cores on a 3x3 conv: w_a [r, out], w_b [r, in], t [r, r, 3, 3].
    tensor(`${u}_downsamplers_0_conv.hada_w1_a`, [2, 8], 16),
    tensor(`${u}_downsamplers_0_conv.hada_w1_b`, [2, 8], 17),
    tensor(`${u}_downsamplers_0_conv.hada_t1`, [2, 2, 3, 3], 18),
    tensor(`${u}_downsamplers_0_conv.hada_w2_a`, [2, 8], 19),
    tensor(`${u}_downsamplers_0_conv.hada_w2_b`, [2, 8], 20),
    tensor(`${u}_downsamplers_0_conv.hada_t2`, [2, 2, 3, 3], 21),
    alpha(`${u}_downsamplers_0_conv`, 4),
    // LoKr: whole w1 [2, 3] with factored w2 [5, r 2, 4]; both factored; a Tucker w2 on a 3x3 conv.
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_k.lokr_w1`, [2, 3], 22),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_k.lokr_w2_a`, [5, 2], 23),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_k.lokr_w2_b`, [2, 4], 24),
    alpha(`${u}_attentions_0_transformer_blocks_0_attn1_to_k`, 1),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_v.lokr_w1_a`, [4, 2], 25, 'F16'),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_v.lokr_w1_b`, [2, 3], 26, 'F16'),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_v.lokr_w2_a`, [3, 2], 27, 'F16'),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_v.lokr_w2_b`, [2, 5], 28, 'F16'),
    alpha(`${u}_attentions_0_transformer_blocks_0_attn1_to_v`, 3),
    tensor(`${u}_resnets_1_conv1.lokr_w1`, [2, 2], 29),
    tensor(`${u}_resnets_1_conv1.lokr_w2_a`, [2, 4], 30),
    tensor(`${u}_resnets_1_conv1.lokr_w2_b`, [2, 3], 31),
    tensor(`${u}_resnets_1_conv1.lokr_t2`, [2, 2, 3, 3], 32),
    // A whole LoKr (neither factor split: scale 1), and a full diff with its bias.
    tensor(`${u}_attentions_0_transformer_blocks_0_attn2_to_q.lokr_w1`, [2, 2], 33),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn2_to_q.lokr_w2`, [4, 6], 34),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn2_to_k.diff`, [9, 7], 35),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn2_to_k.diff_b`, [9], 36),
    // (IA)³ scales the base: named, not in the spectrum.
    tensor(`${u}_attentions_0_transformer_blocks_0_attn2_to_v.weight`, [9], 37),
  ]);
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
