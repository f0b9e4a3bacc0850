/**
 * resize of LyCORIS LoHa and LoKr modules on convolutions whose factors flatten the kernel ([r, in·kh·kw],
 * no Tucker core): with --base the written LoRA is conv-shaped (down [k, in, kh, kw], up [out, k, 1, 1]),
 * as kohya's and LyCORIS's loaders build a Conv2d LoRA; read back by the engine's reader, its delta is numpy's
 * best rank-k approximation of the source's, and numpy's conv product of the written down and up is that
 * approximation reshaped to the base's [out, in, kh, kw]. Without --base, a warning says what only the base knows.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { adapterLayout } from '../../src/engine/checkpoint/adapter';
import { closeCheckpoint, openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { readFactors } from '../../src/engine/lowrank/factors';
import { tmpDir } from './helpers/builders';
import { runCli } from './helpers/cli';
import { clipTextTensors, sd15UnetTensors, writePipeline, writeSafetensorsFile } from './helpers/diffusion';
import { alpha, tensor } from './helpers/lycorisZoo';
import { runNumpy } from './helpers/numpyRef';
import { findPython } from './helpers/python';

const root = tmpDir();
const UNET = { channels: [8, 16, 32, 32] as [number, number, number, number], cross: 12, latent: 4 };
const base = writePipeline(path.join(root, 'sd15'), sd15UnetTensors(UNET), clipTextTensors({ hidden: 12, layers: 1, intermediate: 24, vocab: 50, positions: 7 }));

const u = 'lora_unet_down_blocks';
/** kohya module -> the base's conv weight shape [out, in, kh, kw] (or a Linear's [out, in]). */
const SHAPES: Record<string, number[]> = {
  [`${u}_1_resnets_0_conv1`]: [16, 8, 3, 3],
  [`${u}_1_resnets_0_conv_shortcut`]: [16, 8, 1, 1],
  [`${u}_2_resnets_1_conv2`]: [32, 32, 3, 3],
  [`${u}_1_resnets_1_conv1`]: [16, 16, 3, 3],
  [`${u}_1_attentions_0_transformer_blocks_0_attn1_to_q`]: [16, 16],
};

/** LyCORIS's on-disk layouts (lycoris/modules/loha.py, lokr.py) for a Conv2d without use_tucker. */
const src = writeSafetensorsFile(path.join(root, 'lycoris.safetensors'), [
  // LoHa, rank 2, on a 3x3 conv [16, 8, 3, 3]: hada_w*_a [out, r], hada_w*_b [r, in·kh·kw].
  tensor(`${u}_1_resnets_0_conv1.hada_w1_a`, [16, 2], 1, 'F16'),
  tensor(`${u}_1_resnets_0_conv1.hada_w1_b`, [2, 72], 2, 'F16'),
  tensor(`${u}_1_resnets_0_conv1.hada_w2_a`, [16, 2], 3, 'F16'),
  tensor(`${u}_1_resnets_0_conv1.hada_w2_b`, [2, 72], 4, 'F16'),
  alpha(`${u}_1_resnets_0_conv1`, 1),
  // LoHa on a 1x1 conv (conv_shortcut [16, 8, 1, 1]): LyCORIS never uses Tucker there, so [r, in].
  tensor(`${u}_1_resnets_0_conv_shortcut.hada_w1_a`, [16, 2], 5),
  tensor(`${u}_1_resnets_0_conv_shortcut.hada_w1_b`, [2, 8], 6),
  tensor(`${u}_1_resnets_0_conv_shortcut.hada_w2_a`, [16, 2], 7),
  tensor(`${u}_1_resnets_0_conv_shortcut.hada_w2_b`, [2, 8], 8),
  alpha(`${u}_1_resnets_0_conv_shortcut`, 2),
  // LoKr on a 3x3 conv [32, 32, 3, 3], factorization(32) = (4, 8): whole w1 [4, 4], w2_a [8, r 2], w2_b [2, 8·9].
  tensor(`${u}_2_resnets_1_conv2.lokr_w1`, [4, 4], 9),
  tensor(`${u}_2_resnets_1_conv2.lokr_w2_a`, [8, 2], 10),
  tensor(`${u}_2_resnets_1_conv2.lokr_w2_b`, [2, 72], 11),
  alpha(`${u}_2_resnets_1_conv2`, 1),
  // LoKr with both factors split (decompose_both, r 1 < max(4, 4) / 2) on a 3x3 conv [16, 16, 3, 3].
  tensor(`${u}_1_resnets_1_conv1.lokr_w1_a`, [4, 1], 12),
  tensor(`${u}_1_resnets_1_conv1.lokr_w1_b`, [1, 4], 13),
  tensor(`${u}_1_resnets_1_conv1.lokr_w2_a`, [4, 1], 14),
  tensor(`${u}_1_resnets_1_conv1.lokr_w2_b`, [1, 36], 15),
  alpha(`${u}_1_resnets_1_conv1`, 1),
  // LoHa on a Linear stays [k, in] / [out, k].
  tensor(`${u}_1_attentions_0_transformer_blocks_0_attn1_to_q.hada_w1_a`, [16, 2], 16),
  tensor(`${u}_1_attentions_0_transformer_blocks_0_attn1_to_q.hada_w1_b`, [2, 16], 17),
  tensor(`${u}_1_attentions_0_transformer_blocks_0_attn1_to_q.hada_w2_a`, [16, 2], 18),
  tensor(`${u}_1_attentions_0_transformer_blocks_0_attn1_to_q.hada_w2_b`, [2, 16], 19),
  alpha(`${u}_1_attentions_0_transformer_blocks_0_attn1_to_q`, 2),
]);

interface ResizeJson {
  modules: { name: string; rank: number; relError: number; optimalRelError: number }[];
  warnings: string[];
}

function resize(args: string[], name: string): { file: string; report: ResizeJson } {
  const out = path.join(root, name);
  const json = path.join(root, `${name}.json`);
  const r = runCli(['resize', '--adapter', src, '--out', out, '--json', json, ...args]);
  assert.equal(r.status, 0, r.stderr);
  return { file: path.join(out, 'lycoris.safetensors'), report: JSON.parse(fs.readFileSync(json, 'utf8')) as ResizeJson };
}

/** Each written module's delta L·Rᵀ [out, in·kh·kw] as the engine's reader forms it, expanded in float64. */
function readBack(file: string): Record<string, number[]> {
  const c = openCheckpoint(file);
  try {
    const out: Record<string, number[]> = {};
    for (const m of adapterLayout(c).modules) {
      const { L, R } = readFactors(c, m);
      const d = new Array<number>(L.rows * R.rows).fill(0);
      for (let i = 0; i < L.rows; i++) {
        for (let j = 0; j < R.rows; j++) for (let p = 0; p < L.cols; p++) d[i * R.rows + j] += L.data[i * L.cols + p] * R.data[j * R.cols + p];
      }
      out[m.module] = d;
    }
    return out;
  } finally {
    closeCheckpoint(c);
  }
}

test('resize --base writes LoHa and LoKr convolutions conv-shaped, at numpy’s optimum', (t) => {
  const { file, report } = resize(['--energy', '0.9', '--base', base], 'conv');
  assert.deepEqual(report.warnings, []);
  const written = openCheckpoint(file);
  const ranks = new Map(report.modules.map((m) => [m.name, m.rank]));
  for (const [m, shape] of Object.entries(SHAPES)) {
    const k = ranks.get(m)!;
    const [out, inn, ...kernel] = shape;
    assert.deepEqual(written.byName.get(`${m}.lora_down.weight`)!.shape, [k, inn, ...kernel], m);
    assert.deepEqual(written.byName.get(`${m}.lora_up.weight`)!.shape, [out, k, ...kernel.map(() => 1)], m);
  }
  closeCheckpoint(written);
  assert.ok(report.modules.some((m) => m.rank >= 2), 'some module keeps more than one rank');
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  const ref = runNumpy<Record<string, { k: number; ours: number; conv: number }>>(
    py.python,
    `inp = json.load(sys.stdin)
src = lycoris_deltas(${JSON.stringify(src)}); dst = load_st(${JSON.stringify(file)})
out = {}
for m, shape in inp['shapes'].items():
    d = src[m]
    s = svals(d)
    k = int(np.argmax(np.cumsum(s**2) / np.sum(s**2) >= 0.9) + 1)
    b = best(d, k)
    ours = np.array(inp['ours'][m]).reshape(d.shape)
    down, up = dst[m + '.lora_down.weight'].astype(np.float64), dst[m + '.lora_up.weight'].astype(np.float64)
    conv = np.einsum('ok,k...->o...', up.reshape(up.shape[0], up.shape[1]), down)
    out[m] = {'k': k, 'ours': float(np.abs(ours - b).max() / np.abs(d).max()), 'conv': float(np.abs(conv - b.reshape(shape)).max() / np.abs(d).max())}
emit(out)`,
    { shapes: SHAPES, ours: readBack(file) },
  );
  for (const m of Object.keys(SHAPES)) {
    assert.equal(ranks.get(m), ref[m].k, m);
    assert.ok(ref[m].ours <= 1e-6, `${m}: the written delta read back is ${ref[m].ours} from numpy's best rank-${ref[m].k}`);
    assert.ok(ref[m].conv <= 1e-6, `${m}: up ⊛ down is ${ref[m].conv} from numpy's best rank-${ref[m].k} as [out, in, kh, kw]`);
  }
});

test('resize without --base names the LoHa / LoKr modules whose kernel only the base knows', () => {
  const { report } = resize(['--rank', '1'], 'nobase');
  assert.equal(report.warnings.length, 1);
  assert.match(report.warnings[0], /^5 LoHa \/ LoKr module\(s\) .*--base/);
  assert.ok(report.modules.every((m) => m.relError <= m.optimalRelError + 1e-6));
});

test('resize --base refuses a base the adapter does not fit, with one line', () => {
  const other = writePipeline(path.join(root, 'other'), sd15UnetTensors({ ...UNET, channels: [8, 24, 32, 32] }), clipTextTensors({ hidden: 12, layers: 1, intermediate: 24, vocab: 50, positions: 7 }));
  const r = runCli(['resize', '--adapter', src, '--out', path.join(root, 'no'), '--rank', '1', '--base', other]);
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /does not fit/);
  assert.ok(!fs.existsSync(path.join(root, 'no')));
});
