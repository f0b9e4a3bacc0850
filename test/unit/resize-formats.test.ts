/**
 * resize of kohya / LyCORIS files (LoRA, LoCon, LoHa, LoKr, full diffs, Tucker cores): one LoRA file in the
 * source's naming, every delta at numpy's Eckart–Young optimum to 1e-6, the error measured on the
 * written fp32 factors; and the real LyCORIS LoKr file.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { FIXTURES, tmpDir } from './helpers/builders';
import { assertOneLineError, runCli } from './helpers/cli';
import { kohyaZoo } from './helpers/lycorisZoo';
import { runNumpy } from './helpers/numpyRef';
import { findPython } from './helpers/python';

const root = tmpDir();

interface ResizeJson {
  modules: { name: string; fromRank: number; rank: number; energyKept: number; relError: number; optimalRelError: number }[];
}

function resize(src: string, args: string[], name: string): { out: string; report: ResizeJson } {
  const out = path.join(root, name);
  const json = path.join(root, `${name}.json`);
  const r = runCli(['resize', '--adapter', src, '--out', out, '--json', json, ...args]);
  assert.equal(r.status, 0, r.stderr);
  return { out, report: JSON.parse(fs.readFileSync(json, 'utf8')) as ResizeJson };
}

/** numpy, per module of `only`: the rank (given, or by the energy rule), the optimum's error and energy, and how far the written delta is from numpy's best rank-k. */
type Optimum = Record<string, { k: number; opt: number; kept: number; writtenVsBest: number }>;

function check(python: string, src: string, dst: string, only: string[], rank: number | null, energy = 0): Optimum {
  return runNumpy(
    python,
    `src = lycoris_deltas(${JSON.stringify(src)}, set(${JSON.stringify(only)})); dst = lycoris_deltas(${JSON.stringify(dst)}, set(${JSON.stringify(only)}))
out = {}
for m, d in src.items():
    s = svals(d)
    k = ${rank ?? 'None'} or int(np.argmax(np.cumsum(s**2) / np.sum(s**2) >= ${energy}) + 1)
    b = best(d, k)
    out[m] = {'k': k, 'opt': float(np.linalg.norm(d - b) / np.linalg.norm(d)), 'kept': float(np.sum(s[:k]**2) / np.sum(s**2)),
              'writtenVsBest': float(np.abs(dst[m] - b).max() / np.abs(d).max())}
emit(out)`,
  );
}

function assertOptimal(report: ResizeJson, ref: Optimum): void {
  for (const m of report.modules) {
    const r = ref[m.name];
    assert.equal(m.rank, r.k, m.name);
    assert.ok(Math.abs(m.relError - r.opt) <= 1e-6, `${m.name}: relError ${m.relError} vs optimum ${r.opt}`);
    assert.ok(Math.abs(m.optimalRelError - r.opt) <= 1e-9, m.name);
    assert.ok(Math.abs(m.energyKept - r.kept) <= 1e-9, m.name);
    assert.ok(r.writtenVsBest <= 1e-6, `${m.name}: written delta ${r.writtenVsBest} from numpy's best rank-${r.k}`);
  }
}

test('resize of every kohya / LyCORIS kind writes a kohya LoRA file at the optimum (numpy, 1e-6)', (t) => {
  const src = kohyaZoo(path.join(root, 'zoo.safetensors'), false);
  const { out, report } = resize(src, ['--rank', '2'], 'zoo-r2');
  assert.deepEqual(fs.readdirSync(out).filter((f) => !f.startsWith('.')), ['zoo.safetensors']);
  const written = openCheckpoint(path.join(out, 'zoo.safetensors'));
  const names = written.tensors.map((x) => x.name);
  // Plain LoRA keys only (a convolution's kernel kept where the source states it), alpha = rank, diff_b as it was.
  assert.ok(names.every((n) => /\.(lora_down\.weight|lora_up\.weight|alpha|diff_b)$/.test(n)), names.join());
  assert.deepEqual(written.byName.get('lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight')!.shape, [2, 6, 3, 3]);
  assert.deepEqual(written.byName.get('lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight')!.shape, [8, 2, 1, 1]);
  assert.deepEqual(written.byName.get('lora_unet_down_blocks_0_downsamplers_0_conv.lora_down.weight')!.shape, [2, 8, 3, 3]);
  assert.ok(names.includes('lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.diff_b'));
  written.handles.close();
  const from = new Map(report.modules.map((m) => [m.name.replace('lora_unet_down_blocks_0_', ''), m.fromRank]));
  assert.equal(from.get('attentions_0_proj_out'), 6, 'LoHa r₁·r₂');
  assert.equal(from.get('attentions_0_transformer_blocks_0_attn2_to_q'), 8, 'whole LoKr 2 × 4');
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  const only = report.modules.map((m) => m.name);
  assertOptimal(report, check(py.python, src, path.join(out, 'zoo.safetensors'), only, 2));
  const e = resize(src, ['--energy', '0.9'], 'zoo-e90');
  assertOptimal(e.report, check(py.python, src, path.join(e.out, 'zoo.safetensors'), only, null, 0.9));
});

test('resize of the real LyCORIS LoKr file: a kohya LoRA at rank 4, at the optimum (numpy, 1e-6)', (t) => {
  const src = path.join(FIXTURES, 'real-adapters-2/sd-lycoris-lokr-kohya-fp16/smart_falcon_4_lokr.safetensors');
  const { out, report } = resize(src, ['--rank', '4'], 'lokr-r4');
  assert.equal(report.modules.length, 350);
  const file = path.join(out, 'smart_falcon_4_lokr.safetensors');
  const written = openCheckpoint(file);
  assert.equal(written.metadata.ss_network_module, 'networks.lora');
  assert.equal(written.metadata.ss_network_dim, '4');
  assert.equal(written.metadata.ss_network_args, undefined);
  written.handles.close();
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  // Four modules, smallest to largest ([1280, 1280]).
  const bySize = [...report.modules].sort((a, b) => a.fromRank - b.fromRank || a.name.localeCompare(b.name));
  const only = bySize.filter((_, i) => i % 100 === 0).map((m) => m.name);
  assertOptimal({ modules: report.modules.filter((m) => only.includes(m.name)) }, check(py.python, src, file, only, 4));
});

test('resize refuses what it cannot hold: (IA)³, a rank above a module, with one line', () => {
  const src = kohyaZoo(path.join(root, 'zoo-ia3.safetensors'));
  assertOneLineError(runCli(['resize', '--adapter', src, '--out', path.join(root, 'no'), '--rank', '1']), 'IA³');
  const plain = kohyaZoo(path.join(root, 'zoo-plain.safetensors'), false);
  assertOneLineError(runCli(['resize', '--adapter', plain, '--out', path.join(root, 'no'), '--rank', '5']), '--rank 5');
  assert.ok(!fs.existsSync(path.join(root, 'no')));
});
