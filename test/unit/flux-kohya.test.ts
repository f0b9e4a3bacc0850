/**
 * kohya-ss FLUX LoRAs (Black Forest Labs module names: `lora_unet_double_blocks_0_img_attn_qkv`,
 * `…_single_blocks_0_linear1`) on a diffusers FluxTransformer2DModel, whose fused projections are separate
 * modules (to_q, to_k, to_v, proj_mlp): each takes its rows of lora_up; renamed modules resolve as they are.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { censusJob } from '../../src/engine/jobs/census';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { quietContext } from '../../src/engine/util/job';
import { randomF32, TestTensor, tmpDir, writeWeights } from './helpers/builders';
import { assertOneLineError, runCli } from './helpers/cli';
import { fluxTensors, writeSafetensorsFile, writeSparse } from './helpers/diffusion';
import { matmul, readAll } from './helpers/tensors';
import { withKernels } from '../../src/engine/kernels/kernels';

const ctx = quietContext();
const kernels = new CpuKernels();

describe('kohya FLUX LoRAs on a diffusers FLUX transformer', () => {
  const root = tmpDir();
  const H = 8;
  const base = path.join(root, 'flux', 'transformer');
  writeWeights(base, fluxTensors(H, 2, 2, 16), Infinity, 'diffusion_pytorch_model');
  const W = readAll(base);
  const r = 2;
  const tensors: TestTensor[] = [];
  /** The expected merged tensors, by base name. */
  const expected = new Map<string, Float32Array>();
  /** A kohya LoRA (alpha 1, scale 1 / r) whose up rows stack onto `targets` in order. */
  const lora = (m: string, inn: number, targets: string[], seed: number): void => {
    const out = targets.reduce((a, t) => a + W.get(`${t}.weight`)!.length / inn, 0);
    const down = randomF32(r * inn, seed, 0.5);
    const up = randomF32(out * r, seed + 1, 0.5);
    tensors.push({ name: `${m}.lora_down.weight`, shape: [r, inn], data: down }, { name: `${m}.lora_up.weight`, shape: [out, r], data: up }, { name: `${m}.alpha`, shape: [], data: new Float32Array([1]) });
    const d = matmul(up, down, out, r, inn);
    let at = 0;
    for (const t of targets) {
      const w = W.get(`${t}.weight`)!;
      expected.set(`${t}.weight`, w.map((x, i) => Math.fround(x + Math.fround(d[at + i] * 0.5))));
      at += w.length;
    }
  };
  lora('lora_unet_double_blocks_1_img_attn_qkv', H, ['transformer_blocks.1.attn.to_q', 'transformer_blocks.1.attn.to_k', 'transformer_blocks.1.attn.to_v'], 1);
  lora('lora_unet_double_blocks_0_txt_attn_qkv', H, ['transformer_blocks.0.attn.add_q_proj', 'transformer_blocks.0.attn.add_k_proj', 'transformer_blocks.0.attn.add_v_proj'], 3);
  lora('lora_unet_double_blocks_0_txt_attn_proj', H, ['transformer_blocks.0.attn.to_add_out'], 5);
  lora('lora_unet_single_blocks_1_linear1', H, ['single_transformer_blocks.1.attn.to_q', 'single_transformer_blocks.1.attn.to_k', 'single_transformer_blocks.1.attn.to_v', 'single_transformer_blocks.1.proj_mlp'], 7);
  lora('lora_unet_single_blocks_0_linear2', 5 * H, ['single_transformer_blocks.0.proj_out'], 9);
  lora('lora_unet_img_in', 16, ['x_embedder'], 11);
  const file = writeSafetensorsFile(path.join(root, 'lora', 'flux_lora.safetensors'), tensors, { ss_network_module: 'networks.lora_flux' });

  it('merges each fused projection onto its stacked modules, and the renamed ones, bit for bit', async () => {
    const out = path.join(root, 'merged');
    const rep = await mergeJob({ base, adapter: file, out, dtype: 'fp32', rule: 'peft' }, withKernels(ctx, kernels));
    assert.equal(rep.loraTensors, expected.size);
    assert.equal(expected.size, 13);
    const merged = readAll(out);
    for (const [name, want] of expected) assert.ok(Buffer.from(merged.get(name)!.buffer).equals(Buffer.from(want.buffer)), name);
    for (const [name, w] of W) if (!expected.has(name)) assert.ok(Buffer.from(merged.get(name)!.buffer).equals(Buffer.from(w.buffer)), name);
  });

  it("resolves on FLUX.1-dev's header-true shapes (H 3072, 19 double and 38 single blocks)", () => {
    const dev = path.join(root, 'dev');
    writeSparse(path.join(dev, 'diffusion_pytorch_model.safetensors'), fluxTensors(3072, 19, 38, 64, 'BF16'));
    const adapter: TestTensor[] = [];
    for (let n = 0; n < 19; n++) adapter.push({ name: `lora_unet_double_blocks_${n}_img_attn_qkv.lora_down.weight`, shape: [16, 3072], dtype: 'BF16' }, { name: `lora_unet_double_blocks_${n}_img_attn_qkv.lora_up.weight`, shape: [9216, 16], dtype: 'BF16' });
    for (let n = 0; n < 38; n++) adapter.push({ name: `lora_unet_single_blocks_${n}_linear1.lora_down.weight`, shape: [16, 3072], dtype: 'BF16' }, { name: `lora_unet_single_blocks_${n}_linear1.lora_up.weight`, shape: [21504, 16], dtype: 'BF16' });
    const lora = writeSparse(path.join(root, 'dev-lora', 'l.safetensors'), adapter);
    const rep = censusJob({ path: dev, adapter: lora }, ctx);
    assert.equal(rep.summary.loraTargetTensors, 19 * 3 + 38 * 4);
    fs.rmSync(dev, { recursive: true, force: true });
  });

  it('a fused (IA)³, or a fused delta of the wrong size, is bad input naming it', () => {
    const ia3 = writeSafetensorsFile(path.join(root, 'ia3', 'l.safetensors'), [{ name: 'lora_unet_double_blocks_0_img_attn_qkv.weight', shape: [24] }]);
    assertOneLineError(runCli(['merge', '--base', base, '--adapter', ia3, '--out', path.join(root, 'x'), '--dtype', 'bf16']), 'lora_unet_double_blocks_0_img_attn_qkv', 'IA³', 'not supported');
    const wide = writeSafetensorsFile(path.join(root, 'wide', 'l.safetensors'), [
      { name: 'lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight', shape: [2, 8] },
      { name: 'lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight', shape: [25, 2] },
    ]);
    assertOneLineError(runCli(['merge', '--base', base, '--adapter', wide, '--out', path.join(root, 'y'), '--dtype', 'bf16']), 'lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight', 'split');
  });
});
