/**
 * LyCORIS weight decomposition (`dora_scale`, on LoCon, LoHa, LoKr; per output feature with
 * `wd_on_output`, else per input channel) and LyCORIS (IA)³ (`weight`, `on_input`), in their exact
 * on-disk layouts, merged onto an SD1.5-shaped diffusers pipeline: bit for bit against a float64
 * reference of the rounding the engine defines, and against LyCORIS's own formulas run by torch.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { censusJob } from '../../src/engine/jobs/census';
import { compareJob } from '../../src/engine/jobs/compare';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { quietContext } from '../../src/engine/util/job';
import { decodeF16Array, encodeF16 } from '../../src/shared/safetensors/half';
import { randomF32, TestTensor, tmpDir } from './helpers/builders';
import { assertOneLineError, runCli } from './helpers/cli';
import { clipTextTensors, sd15UnetTensors, writePipeline, writeSafetensorsFile } from './helpers/diffusion';
import { findPython } from './helpers/python';
import { matmul, readAll } from './helpers/tensors';
import { withKernels } from '../../src/engine/kernels/kernels';

const ctx = quietContext();
const kernels = new CpuKernels();
const UNET = { channels: [8, 16, 32, 32] as [number, number, number, number], cross: 12, latent: 4 };
const CLIP = { hidden: 12, layers: 2, intermediate: 24, vocab: 50, positions: 7 };
const EPS = 2 ** -23;

function half(n: number, seed: number, scale = 0.5): Float32Array {
  return decodeF16Array(encodeF16(randomF32(n, seed, scale), new Uint16Array(n)), new Float32Array(n));
}
const f16 = (name: string, shape: number[], data: Float32Array): TestTensor => ({ name, dtype: 'F16', shape, data });
const f32 = (name: string, shape: number[], data: Float32Array): TestTensor => ({ name, dtype: 'F32', shape, data });

/**
 * f(g · v), v = f(W + d), g = f(m / f(f(||v||) + eps)) per output row (`out`) or per input channel of
 * `span` columns (`in`), norms summed in float64.
 */
function decomposed(W: Float32Array, d: Float32Array, m: Float32Array, rows: number, cols: number, axis: 'out' | 'in'): Float32Array {
  const v = W.map((w, i) => Math.fround(w + d[i]));
  const span = axis === 'in' ? cols / m.length : cols;
  const sq = new Float64Array(m.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) sq[axis === 'out' ? i : Math.floor(j / span)] += v[i * cols + j] ** 2;
  const g = Float32Array.from(sq, (s, f) => m[f] / Math.fround(Math.fround(Math.sqrt(s)) + EPS));
  return v.map((x, i) => Math.fround(g[axis === 'out' ? Math.floor(i / cols) : Math.floor((i % cols) / span)] * x));
}

describe('LyCORIS DoRA (dora_scale) and (IA)³ on a Stable Diffusion 1.5-shaped pipeline', () => {
  const root = tmpDir();
  const pipe = writePipeline(path.join(root, 'sd15'), sd15UnetTensors(UNET), clipTextTensors(CLIP));
  const base = readAll(pipe);
  const tensors: TestTensor[] = [];
  const expected = new Map<string, Float32Array>();
  /** What torch recomputes with LyCORIS's formulas (fp32, as LyCORIS runs them). */
  const torchInput: Record<string, { kind: string; axis?: string; shape: number[]; W: number[]; d?: number[]; m?: number[]; l?: number[] }> = {};

  // LoCon + DoRA with wd_on_output on a Linear [32, 12] (attn2.to_k): dora_scale [32, 1], alpha 1 / r 2.
  {
    const mod = 'lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k';
    const target = 'unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight';
    const [r, out, inn] = [2, 32, 12];
    const [down, up, m] = [half(r * inn, 1), half(out * r, 2), Float32Array.from(randomF32(out, 3, 1), (x) => Math.abs(x) + 0.5)];
    tensors.push(f16(`${mod}.lora_down.weight`, [r, inn], down), f16(`${mod}.lora_up.weight`, [out, r], up), f16(`${mod}.alpha`, [], new Float32Array([1])), f32(`${mod}.dora_scale`, [out, 1], m));
    const d = Float32Array.from(matmul(up, down, out, r, inn), (x) => x * 0.5);
    expected.set(target, decomposed(base.get(target)!, d, m, out, inn, 'out'));
    torchInput[target] = { kind: 'dora', axis: 'out', shape: [out, inn], W: Array.from(base.get(target)!), d: Array.from(d), m: Array.from(m) };
  }
  // LoHa + DoRA per input channel on a 3x3 conv [16, 16, 3, 3] (conv2): dora_scale [1, 16, 1, 1], alpha 2 / r 2.
  {
    const mod = 'lora_unet_down_blocks_1_resnets_0_conv2';
    const target = 'unet.down_blocks.1.resnets.0.conv2.weight';
    const [r, out, inn] = [2, 16, 16 * 9];
    const [w1a, w1b, w2a, w2b] = [half(out * r, 4), half(r * inn, 5), half(out * r, 6), half(r * inn, 7)];
    const m = Float32Array.from(randomF32(16, 8, 1), (x) => Math.abs(x) + 0.5);
    tensors.push(
      f16(`${mod}.hada_w1_a`, [out, r], w1a),
      f16(`${mod}.hada_w1_b`, [r, 16, 3, 3], w1b),
      f16(`${mod}.hada_w2_a`, [out, r], w2a),
      f16(`${mod}.hada_w2_b`, [r, 16, 3, 3], w2b),
      f16(`${mod}.alpha`, [], new Float32Array([2])),
      f32(`${mod}.dora_scale`, [1, 16, 1, 1], m),
    );
    const p1 = matmul(w1a, w1b, out, r, inn);
    const p2 = matmul(w2a, w2b, out, r, inn);
    const d = Float32Array.from(p1, (x, i) => Math.fround(Math.fround(x) * Math.fround(p2[i])));
    expected.set(target, decomposed(base.get(target)!, d, m, out, inn, 'in'));
    torchInput[target] = { kind: 'dora', axis: 'in', shape: [out, 16, 3, 3], W: Array.from(base.get(target)!), d: Array.from(d), m: Array.from(m) };
  }
  // LoKr + DoRA per input channel on a Linear [12, 12] (text encoder q_proj): dora_scale [1, 12], scale 1.
  {
    const mod = 'lora_te_text_model_encoder_layers_0_self_attn_q_proj';
    const target = 'text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight';
    const [w1, w2] = [half(3 * 2, 9), half(4 * 6, 10)];
    const m = Float32Array.from(randomF32(12, 11, 1), (x) => Math.abs(x) + 0.5);
    tensors.push(f16(`${mod}.lokr_w1`, [3, 2], w1), f16(`${mod}.lokr_w2`, [4, 6], w2), f32(`${mod}.dora_scale`, [1, 12], m));
    const d = new Float32Array(144);
    for (let a = 0; a < 3; a++)
      for (let b = 0; b < 2; b++)
        for (let c = 0; c < 4; c++) for (let e = 0; e < 6; e++) d[(a * 4 + c) * 12 + b * 6 + e] = Math.fround(w1[a * 2 + b] * w2[c * 6 + e]);
    expected.set(target, decomposed(base.get(target)!, d, m, 12, 12, 'in'));
    torchInput[target] = { kind: 'dora', axis: 'in', shape: [12, 12], W: Array.from(base.get(target)!), d: Array.from(d), m: Array.from(m) };
  }
  // (IA)³ on the output features of a Linear [24, 12] (fc1, on_input 0) and the input channels of a conv [16, 8, 3, 3] (on_input 1).
  {
    const mod = 'lora_te_text_model_encoder_layers_1_mlp_fc1';
    const target = 'text_encoder.text_model.encoder.layers.1.mlp.fc1.weight';
    const l = half(24, 12);
    tensors.push(f16(`${mod}.weight`, [24], l), { name: `${mod}.on_input`, dtype: 'I64', shape: [], data: new Uint8Array(8) });
    const W = base.get(target)!;
    expected.set(target, W.map((w, i) => Math.fround(w * Math.fround(1 + l[Math.floor(i / 12)]))));
    torchInput[target] = { kind: 'ia3', axis: 'out', shape: [24, 12], W: Array.from(W), l: Array.from(l) };
  }
  {
    const mod = 'lora_unet_down_blocks_1_resnets_0_conv1';
    const target = 'unet.down_blocks.1.resnets.0.conv1.weight';
    const l = half(8, 13);
    tensors.push(f16(`${mod}.weight`, [1, 8, 1, 1], l), { name: `${mod}.on_input`, dtype: 'I64', shape: [], data: new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]) });
    const W = base.get(target)!;
    expected.set(target, W.map((w, i) => Math.fround(w * Math.fround(1 + l[Math.floor((i % 72) / 9)]))));
    torchInput[target] = { kind: 'ia3', axis: 'in', shape: [16, 8, 3, 3], W: Array.from(W), l: Array.from(l) };
  }
  const file = writeSafetensorsFile(path.join(root, 'lora', 'dora-ia3.safetensors'), tensors);

  it('census names the methods', () => {
    const r = censusJob({ path: file }, ctx);
    assert.equal(r.adapter!.loraModules, 5);
    assert.equal(r.adapter!.method, 'kohya DoRA + DoRA (LoHa) + DoRA (LoKr) + IA³');
  });

  it('merges at fp32 bit for bit as the engine defines the rounding, and nothing else', async () => {
    const out = path.join(root, 'merged');
    const rep = await mergeJob({ base: pipe, adapter: file, out, dtype: 'fp32', rule: 'peft' }, withKernels(ctx, kernels));
    assert.deepEqual([rep.loraTensors, rep.doraTensors], [5, 3]);
    const merged = readAll(out);
    for (const [name, want] of expected) assert.ok(Buffer.from(merged.get(name)!.buffer).equals(Buffer.from(want.buffer)), name);
    for (const [name, w] of base) if (!expected.has(name)) assert.ok(Buffer.from(merged.get(name)!.buffer).equals(Buffer.from(w.buffer)), name);
  });

  it('compare with the fp32 merge: the delta of each adapted tensor is what the merge changed, exactly', async () => {
    const merged = path.join(root, 'merged-for-compare');
    await mergeJob({ base: pipe, adapter: file, out: merged, dtype: 'fp32', rule: 'peft' }, withKernels(ctx, kernels));
    const rep = await compareJob(
      { base: pipe, adapter: file, finetuned: merged, out: path.join(root, 'compare'), tolerance: 0, saveDeltas: false },
      withKernels(ctx, kernels),
    );
    const adapted = rep.tensors.filter((t) => t.loraTarget);
    assert.deepEqual(adapted.map((t) => t.name).sort(), [...expected.keys()].sort());
    for (const t of adapted) assert.deepEqual([t.maxAbsDiff, t.withinTolerance], [0, true], t.name);
  });

  it("LyCORIS's own formulas in torch (fp32) agree to fp32 rounding", (t) => {
    const py = findPython(['torch']);
    if (!py.python) return t.skip(py.skip);
    // apply_weight_decompose: weight = W + ΔW; norm over all but dim 0 (wd_on_out) or all but dim 1,
    // + finfo(float32).eps; weight * (dora_scale / norm). IA3Module.make_weight: W * (weight + 1), the
    // vector broadcast on dim 0 (on the transposed weight) or dim 1 (on_input).
    const script = [
      'import json, sys, torch',
      'd = json.load(sys.stdin)',
      'out = {}',
      'for name, x in d.items():',
      '    W = torch.tensor(x["W"], dtype=torch.float32).reshape(x["shape"])',
      '    nd = W.dim() - 1',
      '    if x["kind"] == "dora":',
      '        w = W + torch.tensor(x["d"], dtype=torch.float32).reshape(x["shape"])',
      '        if x["axis"] == "out":',
      '            n = w.reshape(w.shape[0], -1).norm(dim=1).reshape(w.shape[0], *[1] * nd)',
      '            m = torch.tensor(x["m"]).reshape(w.shape[0], *[1] * nd)',
      '        else:',
      '            n = w.transpose(0, 1).reshape(w.shape[1], -1).norm(dim=1, keepdim=True).reshape(w.shape[1], *[1] * nd).transpose(0, 1)',
      '            m = torch.tensor(x["m"]).reshape(1, w.shape[1], *[1] * (nd - 1))',
      '        r = w * (m / (n + torch.finfo(torch.float32).eps))',
      '    else:',
      '        l = torch.tensor(x["l"]) + 1',
      '        if x["axis"] == "in":',
      '            r = W * l.reshape(1, -1, *[1] * (nd - 1))',
      '        else:',
      '            r = (W.transpose(0, 1) * l.reshape(1, -1, *[1] * (nd - 1))).transpose(0, 1)',
      '    out[name] = r.flatten().tolist()',
      'print(json.dumps(out))',
    ].join('\n');
    const r = spawnSync(py.python, ['-c', script], { input: JSON.stringify(torchInput), encoding: 'utf8', maxBuffer: 1 << 26 });
    assert.equal(r.status, 0, r.stderr);
    const ref = JSON.parse(r.stdout) as Record<string, number[]>;
    for (const [name, want] of Object.entries(ref)) {
      const got = expected.get(name)!;
      const max = Math.max(...want.map(Math.abs));
      for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) <= 4e-7 * max, `${name}[${i}]: ${got[i]} vs ${want[i]}`);
    }
  });

  it('a dora_scale that fits neither axis, or (IA)³ of the wrong size, is bad input naming the tensor', () => {
    const mod = 'lora_unet_conv_in';
    const bad = writeSafetensorsFile(path.join(root, 'bad', 'bad.safetensors'), [
      f16(`${mod}.lora_down.weight`, [2, 4, 3, 3], half(72, 20)),
      f16(`${mod}.lora_up.weight`, [8, 2, 1, 1], half(16, 21)),
      f32(`${mod}.dora_scale`, [1, 5, 1, 1], new Float32Array(5).fill(1)),
    ]);
    assertOneLineError(runCli(['merge', '--base', pipe, '--adapter', bad, '--out', path.join(root, 'x'), '--dtype', 'fp16']), 'lora_unet_conv_in.dora_scale');
    const ia3 = writeSafetensorsFile(path.join(root, 'bad-ia3', 'ia3.safetensors'), [f16(`${mod}.weight`, [7], half(7, 22))]);
    assertOneLineError(runCli(['merge', '--base', pipe, '--adapter', ia3, '--out', path.join(root, 'y'), '--dtype', 'fp16']), 'lora_unet_conv_in.weight', '(IA)³');
  });
});
