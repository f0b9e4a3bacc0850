/**
 * The original (LDM, single-file) and diffusers names of a Stable Diffusion UNet: the mapping on SD1.5's
 * header-true shapes (checked against names and shapes of the real v1-5 single-file checkpoint), kohya files
 * in either layout merged onto bases in the other, and the real LyCORIS LoKr resolved on a header-true
 * original single file.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { ldmToDiffusers } from '../../src/engine/checkpoint/unetLayout';
import { censusJob } from '../../src/engine/jobs/census';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { quietContext } from '../../src/engine/util/job';
import { FIXTURES, randomF32, TestTensor, tmpDir, writeWeights } from './helpers/builders';
import { assertOneLineError, runCli } from './helpers/cli';
import { clipTextTensors, ldmNames, prefixed, SD15_CLIP, SD15_UNET, sd15UnetTensors, writePipeline, writeSafetensorsFile, writeSparse } from './helpers/diffusion';
import { matmul, readAll } from './helpers/tensors';
import { withKernels } from '../../src/engine/kernels/kernels';

const ctx = quietContext();
const kernels = new CpuKernels();
const UNET = { channels: [8, 16, 32, 32] as [number, number, number, number], cross: 12, latent: 4 };
const CLIP = { hidden: 12, layers: 2, intermediate: 24, vocab: 50, positions: 7 };

describe('the original and diffusers layouts of a Stable Diffusion UNet', () => {
  const unet = sd15UnetTensors(SD15_UNET);
  const ldm = ldmNames(unet);

  it("maps all 686 of SD1.5's UNet tensors one to one, and back", () => {
    assert.equal(unet.length, 686);
    assert.equal(new Set(ldm.map((t) => t.name)).size, 686);
    for (const [i, t] of ldm.entries()) {
      const module = t.name.slice('model.diffusion_model.'.length).replace(/\.(weight|bias)$/, '');
      assert.equal(ldmToDiffusers(module), unet[i].name.replace(/\.(weight|bias)$/, ''), t.name);
    }
  });

  it('gives the names and shapes of the real v1-5 single-file checkpoint', () => {
    const shapes = new Map(ldm.map((t) => [t.name, t.shape.join(',')]));
    // From the header of v1-5-pruned-emaonly.safetensors.
    const truth: Array<[string, number[]]> = [
      ['time_embed.0.weight', [1280, 320]],
      ['input_blocks.0.0.weight', [320, 4, 3, 3]],
      ['input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight', [320, 768]],
      ['input_blocks.3.0.op.weight', [320, 320, 3, 3]],
      ['input_blocks.4.0.skip_connection.weight', [640, 320, 1, 1]],
      ['input_blocks.7.0.in_layers.2.weight', [1280, 640, 3, 3]],
      ['input_blocks.11.0.out_layers.3.weight', [1280, 1280, 3, 3]],
      ['middle_block.1.proj_in.weight', [1280, 1280, 1, 1]],
      ['middle_block.2.emb_layers.1.weight', [1280, 1280]],
      ['output_blocks.0.0.skip_connection.weight', [1280, 2560, 1, 1]],
      ['output_blocks.2.1.conv.weight', [1280, 1280, 3, 3]],
      ['output_blocks.5.2.conv.weight', [1280, 1280, 3, 3]],
      ['output_blocks.8.2.conv.weight', [640, 640, 3, 3]],
      ['output_blocks.11.1.transformer_blocks.0.ff.net.0.proj.weight', [2560, 320]],
      ['out.0.weight', [320]],
      ['out.2.weight', [4, 320, 3, 3]],
    ];
    for (const [name, shape] of truth) assert.equal(shapes.get(`model.diffusion_model.${name}`), shape.join(','), name);
  });

  it('the real kohya-named LyCORIS LoKr resolves every module on a header-true original single file', () => {
    const root = tmpDir();
    const file = path.join(root, 'v1-5-header-true.safetensors');
    writeSparse(file, [...ldmNames(sd15UnetTensors(SD15_UNET, 'F16')), ...prefixed('cond_stage_model.transformer.', clipTextTensors(SD15_CLIP, 'F16'))]);
    const lokr = path.join(FIXTURES, 'real-adapters-2', 'sd-lycoris-lokr-kohya-fp16', 'smart_falcon_4_lokr.safetensors');
    const r = censusJob({ path: file, adapter: lokr }, ctx);
    assert.equal(r.summary.loraTargetTensors, 350);
    assert.equal(r.tensors.filter((t) => t.loraTarget && t.name.startsWith('model.diffusion_model.')).length, 278);
    fs.rmSync(root, { recursive: true, force: true });
  });
});

describe('kohya files across layouts: merged exactly', () => {
  const root = tmpDir();
  const half = (n: number, seed: number): Float32Array => Float32Array.from(randomF32(n, seed, 0.5), (x) => Math.fround(x));
  const lora = (m: string, r: number, inShape: number[], out: number, seed: number): { tensors: TestTensor[]; delta: Float64Array } => {
    const inn = inShape.reduce((a, b) => a * b, 1);
    const down = half(r * inn, seed);
    const up = half(out * r, seed + 1);
    const conv = inShape.length > 1;
    return {
      tensors: [
        { name: `${m}.lora_down.weight`, shape: [r, ...inShape], data: down },
        { name: `${m}.lora_up.weight`, shape: conv ? [out, r, 1, 1] : [out, r], data: up },
      ],
      delta: matmul(up, down, out, r, inn),
    };
  };

  it('a diffusers-named kohya file onto an original single-file checkpoint, and an original-named one onto a diffusers folder', async () => {
    // An original single file of the small UNet and its text encoder.
    const single = path.join(root, 'single');
    writeWeights(single, [...ldmNames(sd15UnetTensors(UNET)), ...prefixed('cond_stage_model.transformer.', clipTextTensors(CLIP))], Infinity, 'tiny-v1-5');
    const singleFile = path.join(single, 'tiny-v1-5.safetensors');
    const pipe = writePipeline(path.join(root, 'pipe'), sd15UnetTensors(UNET), clipTextTensors(CLIP));
    const cases: Array<{ base: string; kohya: string; target: string; r: number; inShape: number[]; out: number }> = [
      // Diffusers names (kohya-ss today) on the single file: an upsampler, a resnet's skip, an attention projection.
      { base: singleFile, kohya: 'lora_unet_up_blocks_1_upsamplers_0_conv', target: 'model.diffusion_model.output_blocks.5.2.conv.weight', r: 2, inShape: [32, 3, 3], out: 32 },
      { base: singleFile, kohya: 'lora_unet_down_blocks_1_resnets_0_conv_shortcut', target: 'model.diffusion_model.input_blocks.4.0.skip_connection.weight', r: 2, inShape: [8, 1, 1], out: 16 },
      { base: singleFile, kohya: 'lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_v', target: 'model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_v.weight', r: 2, inShape: [12], out: 32 },
      // Original names (older kohya files) on the diffusers folder: a downsampler, the time embedding, an up block's resnet.
      { base: pipe, kohya: 'lora_unet_input_blocks_6_0_op', target: 'unet.down_blocks.1.downsamplers.0.conv.weight', r: 2, inShape: [16, 3, 3], out: 16 },
      { base: pipe, kohya: 'lora_unet_time_embed_2', target: 'unet.time_embedding.linear_2.weight', r: 2, inShape: [32], out: 32 },
      { base: pipe, kohya: 'lora_unet_output_blocks_4_0_in_layers_2', target: 'unet.up_blocks.1.resnets.1.conv1.weight', r: 2, inShape: [64, 3, 3], out: 32 },
    ];
    for (const [k, c] of cases.entries()) {
      const { tensors, delta } = lora(c.kohya, c.r, c.inShape, c.out, 10 * k + 1);
      const file = writeSafetensorsFile(path.join(root, `lora${k}`, 'l.safetensors'), tensors);
      const out = path.join(root, `merged${k}`);
      const rep = await mergeJob({ base: c.base, adapter: file, out, dtype: 'fp32', rule: 'peft' }, withKernels(ctx, kernels));
      assert.equal(rep.loraTensors, 1, c.kohya);
      const W = readAll(c.base).get(c.target)!;
      const want = W.map((w, i) => Math.fround(w + Math.fround(delta[i])));
      assert.ok(Buffer.from(readAll(out).get(c.target)!.buffer).equals(Buffer.from(want.buffer)), c.kohya);
    }
  });

  it('a module in neither layout is bad input naming it', () => {
    const pipe = writePipeline(path.join(root, 'pipe2'), sd15UnetTensors(UNET), clipTextTensors(CLIP));
    const { tensors } = lora('lora_unet_input_blocks_12_0_in_layers_2', 2, [32, 3, 3], 32, 99);
    const file = writeSafetensorsFile(path.join(root, 'stray', 'l.safetensors'), tensors);
    assertOneLineError(runCli(['merge', '--base', pipe, '--adapter', file, '--out', path.join(root, 'x'), '--dtype', 'fp16']), 'lora_unet_input_blocks_12_0_in_layers_2', 'original UNet layout');
  });
});
