/**
 * A diffusers-named FLUX LoRA (`transformer.transformer_blocks.0.attn.to_q.lora_A.weight`, ai-toolkit's and
 * diffusers' own saving) on Black Forest Labs' single file, whose projections are fused
 * (`double_blocks.0.img_attn.qkv`, `single_blocks.0.linear1`): each module's delta lands on its rows of
 * the fused tensor, and the merge equals the merge onto the diffusers transformer, bit for bit.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { quietContext } from '../../src/engine/util/job';
import { randomF32, TestTensor, tmpDir, writeWeights } from './helpers/builders';
import { assertOneLineError, runCli } from './helpers/cli';
import { bflFromDiffusers, bflValues, fluxTensors, writeSafetensorsFile } from './helpers/diffusion';
import { readAll } from './helpers/tensors';
import { withKernels } from '../../src/engine/kernels/kernels';

const ctx = quietContext();
const kernels = new CpuKernels();

describe('diffusers-named FLUX LoRAs on a BFL single file', () => {
  const root = tmpDir();
  const H = 8;
  const C = 16;
  const seeded = (t: TestTensor, i: number): TestTensor => ({ ...t, data: randomF32(t.shape.reduce((a, b) => a * b, 1), 1000 + i, 0.5) });
  const diffusers = new Map(fluxTensors(H, 2, 2, C).map((t, i) => [t.name, seeded(t, i)]));
  const folder = path.join(root, 'transformer');
  writeWeights(folder, [...diffusers.values()], Infinity, 'diffusion_pytorch_model');
  const single = writeSafetensorsFile(path.join(root, 'flux1-dev.safetensors'), bflFromDiffusers(diffusers, 2, 2));

  /** A PEFT-keyed LoRA pair under `transformer.`, rank 2. */
  const lora = (module: string, seed: number): TestTensor[] => {
    const w = diffusers.get(`${module}.weight`)!;
    const [out, inn] = w.shape;
    return [
      { name: `transformer.${module}.lora_A.weight`, shape: [2, inn], data: randomF32(2 * inn, seed, 0.5) },
      { name: `transformer.${module}.lora_B.weight`, shape: [out, 2], data: randomF32(out * 2, seed + 1, 0.5) },
      { name: `transformer.${module}.alpha`, shape: [], data: new Float32Array([3]) },
    ];
  };
  const modules = [
    'transformer_blocks.0.attn.to_q',
    'transformer_blocks.0.attn.to_k',
    'transformer_blocks.0.attn.to_v',
    'transformer_blocks.0.attn.to_out.0',
    'transformer_blocks.1.attn.add_k_proj',
    'transformer_blocks.1.norm1.linear',
    'single_transformer_blocks.1.attn.to_q',
    'single_transformer_blocks.1.attn.to_k',
    'single_transformer_blocks.1.attn.to_v',
    'single_transformer_blocks.1.proj_mlp',
    'single_transformer_blocks.0.attn.to_v',
    'single_transformer_blocks.0.proj_out',
    'x_embedder',
  ];
  const file = writeSafetensorsFile(path.join(root, 'lora', 'pytorch_lora_weights.safetensors'), modules.flatMap((m, i) => lora(m, 10 + 2 * i)));

  const asBfl = (dir: string): Map<string, Float32Array> => bflValues(diffusers, dir, 2, 2);

  it('merges onto the BFL file as onto the diffusers transformer, each fused tensor row by row (bf16 and fp32)', async () => {
    for (const dtype of ['bf16', 'fp32'] as const) {
      await mergeJob({ base: folder, adapter: file, out: path.join(root, `d-${dtype}`), dtype, rule: 'peft' }, withKernels(ctx, kernels));
      const rep = await mergeJob({ base: single, adapter: file, out: path.join(root, `b-${dtype}`), dtype, rule: 'peft' }, withKernels(ctx, kernels));
      // qkv of block 0, txt qkv of block 1, linear1 of both single blocks, and 4 modules one to one.
      assert.equal(rep.loraTensors, 8);
      const want = asBfl(path.join(root, `d-${dtype}`));
      const got = readAll(path.join(root, `b-${dtype}`));
      assert.equal(got.size, want.size);
      for (const [name, w] of want) assert.ok(Buffer.from(got.get(name)!.buffer).equals(Buffer.from(w.buffer)), `${dtype} ${name}`);
    }
  });

  it('kohya names in the diffusers layout (lora_transformer_…_attn_to_q) resolve on the BFL file too', async () => {
    const kohya = writeSafetensorsFile(path.join(root, 'kohya', 'l.safetensors'), [
      { name: 'lora_transformer_single_transformer_blocks_0_attn_to_k.lora_down.weight', shape: [2, H], data: randomF32(2 * H, 90, 0.5) },
      { name: 'lora_transformer_single_transformer_blocks_0_attn_to_k.lora_up.weight', shape: [H, 2], data: randomF32(2 * H, 91, 0.5) },
    ]);
    await mergeJob({ base: folder, adapter: kohya, out: path.join(root, 'kd'), dtype: 'fp16', rule: 'peft' }, withKernels(ctx, kernels));
    const rep = await mergeJob({ base: single, adapter: kohya, out: path.join(root, 'kb'), dtype: 'fp16', rule: 'peft' }, withKernels(ctx, kernels));
    assert.equal(rep.loraTensors, 1);
    const got = readAll(path.join(root, 'kb'));
    for (const [name, w] of asBfl(path.join(root, 'kd'))) assert.ok(Buffer.from(got.get(name)!.buffer).equals(Buffer.from(w.buffer)), name);
  });

  it('a part of the wrong size, or two modules on the same rows, is bad input naming them', () => {
    const wide = writeSafetensorsFile(path.join(root, 'wide', 'l.safetensors'), [
      { name: 'transformer.single_transformer_blocks.0.proj_mlp.lora_A.weight', shape: [2, H], data: 1 },
      { name: 'transformer.single_transformer_blocks.0.proj_mlp.lora_B.weight', shape: [3 * H, 2], data: 2 },
    ]);
    assertOneLineError(runCli(['merge', '--base', single, '--adapter', wide, '--out', path.join(root, 'x'), '--dtype', 'bf16']), 'single_transformer_blocks.0.proj_mlp', 'single_blocks.0.linear1.weight');
    const twice = writeSafetensorsFile(path.join(root, 'twice', 'l.safetensors'), [
      { name: 'lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight', shape: [2, H], data: 1 },
      { name: 'lora_unet_transformer_blocks_0_attn_to_q.lora_up.weight', shape: [H, 2], data: 2 },
      { name: 'lora_transformer_transformer_blocks_0_attn_to_q.lora_down.weight', shape: [2, H], data: 3 },
      { name: 'lora_transformer_transformer_blocks_0_attn_to_q.lora_up.weight', shape: [H, 2], data: 4 },
    ]);
    assertOneLineError(runCli(['merge', '--base', single, '--adapter', twice, '--out', path.join(root, 'y'), '--dtype', 'bf16']), 'lora_transformer_transformer_blocks_0_attn_to_q', 'double_blocks.0.img_attn.qkv.weight');
  });
});
