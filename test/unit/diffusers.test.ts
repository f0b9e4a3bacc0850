/**
 * Image-model bases as people have them: a diffusers pipeline folder (components prefixed `unet.`,
 * `text_encoder.`), a sharded component, a single-file checkpoint; their census (UNet blocks, attention
 * vs resnet vs time embedding, text encoder layers, FLUX double/single blocks, VAE); a merge written
 * back in the base's own layout and file names.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { classifyTensor } from '../../src/shared/census/classify';
import { closeCheckpoint, openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { censusJob } from '../../src/engine/jobs/census';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { quietContext } from '../../src/engine/util/job';
import { OUTPUT_MARKER } from '../../src/engine/util/outputDir';
import { peftConfig, randomF32, tmpDir, writeAdapter, writeWeights } from './helpers/builders';
import { clipTextTensors, SD15_UNET, sd15UnetTensors, writePipeline, writeSparse } from './helpers/diffusion';
import { readAll } from './helpers/tensors';
import { withKernels } from '../../src/engine/kernels/kernels';

const ctx = quietContext();
const kernels = new CpuKernels();
const SMALL_UNET = { channels: [8, 16, 32, 32] as [number, number, number, number], cross: 12, latent: 4 };
const SMALL_CLIP = { hidden: 12, layers: 2, intermediate: 24, vocab: 50, positions: 7 };

describe('Stable Diffusion 1.5 UNet at its true shapes (header-true sparse file)', () => {
  const root = tmpDir();
  const file = writeSparse(path.join(root, 'unet', 'diffusion_pytorch_model.safetensors'), sd15UnetTensors(SD15_UNET));

  it('686 tensors and 859,520,964 parameters, by category and block', () => {
    const r = censusJob({ path: path.dirname(file) }, ctx);
    assert.equal(r.summary.tensors, 686);
    assert.equal(r.summary.params, 859_520_964);
    assert.deepEqual(r.summary.categories, { attention: 224, mlp: 64, norm: 216, embedding: 0, final_norm: 2, other: 4, resnet: 172, time_embedding: 4 });
    assert.equal(r.summary.layers, 0);
    const blocks = r.perBlock.filter((b) => b.block !== null).map((b) => b.block);
    assert.deepEqual(blocks, ['down.0', 'down.1', 'down.2', 'down.3', 'up.0', 'up.1', 'up.2', 'up.3', 'mid']);
    assert.equal(r.perBlock.find((b) => b.block === 'mid')!.tensors, 46);
    const q = r.tensors.find((t) => t.name === 'up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k.weight')!;
    assert.deepEqual([q.category, q.component, q.block, q.projection, q.shape], ['attention', 'unet', 'up.1', 'to_k', [1280, 768]]);
  });
});

describe('classification of image-model names in every spelling', () => {
  const cases: Array<[string, string, string, string | null]> = [
    // diffusers pipeline folder (component prefix)
    ['unet.down_blocks.1.resnets.0.conv_shortcut.weight', 'resnet', 'unet', 'down.1'],
    ['unet.mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight', 'mlp', 'unet', 'mid'],
    ['unet.time_embedding.linear_1.weight', 'time_embedding', 'unet', null],
    ['text_encoder.text_model.encoder.layers.3.self_attn.q_proj.weight', 'attention', 'text_encoder', 'layers.3'],
    ['text_encoder_2.text_model.encoder.layers.30.mlp.fc2.weight', 'mlp', 'text_encoder_2', 'layers.30'],
    ['text_encoder.text_model.final_layer_norm.weight', 'final_norm', 'text_encoder', null],
    ['text_encoder.text_model.embeddings.token_embedding.weight', 'embedding', 'text_encoder', null],
    ['vae.decoder.up_blocks.0.resnets.0.conv1.weight', 'vae', 'vae', 'decoder'],
    // FLUX, diffusers and Black Forest Labs naming
    ['transformer.transformer_blocks.7.attn.add_q_proj.weight', 'attention', 'transformer', 'double.7'],
    ['transformer.single_transformer_blocks.12.proj_mlp.weight', 'mlp', 'transformer', 'single.12'],
    ['transformer.transformer_blocks.0.norm1_context.linear.weight', 'norm', 'transformer', 'double.0'],
    ['double_blocks.3.img_attn.qkv.weight', 'attention', 'transformer', 'double.3'],
    ['double_blocks.3.txt_mlp.0.weight', 'mlp', 'transformer', 'double.3'],
    ['single_blocks.37.linear1.weight', 'attention', 'transformer', 'single.37'],
    ['time_in.in_layer.weight', 'time_embedding', 'transformer', null],
    // single-file (original Stable Diffusion) checkpoints
    ['model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight', 'attention', 'unet', 'input.4'],
    ['model.diffusion_model.input_blocks.1.0.in_layers.2.weight', 'resnet', 'unet', 'input.1'],
    ['model.diffusion_model.middle_block.1.proj_in.weight', 'attention', 'unet', 'mid'],
    ['model.diffusion_model.time_embed.0.weight', 'time_embedding', 'unet', null],
    ['cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc1.weight', 'mlp', 'text_encoder', 'layers.11'],
    ['conditioner.embedders.1.model.transformer.resblocks.5.attn.in_proj_weight', 'attention', 'text_encoder_2', 'layers.5'],
    ['first_stage_model.encoder.down.0.block.0.conv1.weight', 'vae', 'vae', 'encoder'],
    // adapter keys: kohya, LyCORIS, PEFT on a UNet, the old attention-processor format
    ['lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_attn2_to_k.lora_down.weight', 'attention', 'unet', 'down.0'],
    ['lora_unet_up_blocks_1_resnets_2_conv1.lokr_w1_a', 'resnet', 'unet', 'up.1'],
    ['lora_te_text_model_encoder_layers_0_mlp_fc1.alpha', 'mlp', 'text_encoder', 'layers.0'],
    ['lora_te2_text_model_encoder_layers_5_self_attn_out_proj.hada_w1_a', 'attention', 'text_encoder_2', 'layers.5'],
    ['lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight', 'attention', 'transformer', 'double.0'],
    ['lora_unet_input_blocks_4_1_proj_in.lora_down.weight', 'attention', 'unet', 'input.4'],
    ['base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.lora_A.weight', 'attention', 'unet', 'down.0'],
    ['mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.up.weight', 'attention', 'unet', 'mid'],
  ];
  for (const [name, category, component, block] of cases) {
    it(name, () => {
      const c = classifyTensor(name);
      assert.deepEqual([c.category, c.component, c.block], [category, component, block]);
    });
  }
  it('language-model names keep their classes (GPT-2 under `transformer.` is not a FLUX transformer)', () => {
    assert.deepEqual(classifyTensor('transformer.h.0.attn.c_attn.weight'), { category: 'attention', layer: 0, projection: 'c_attn' });
    assert.deepEqual(classifyTensor('model.layers.2.mlp.up_proj.weight'), { category: 'mlp', layer: 2, projection: 'up_proj' });
  });
});

describe('a diffusers pipeline folder', () => {
  const root = tmpDir();
  const unet = sd15UnetTensors(SMALL_UNET);
  const te = clipTextTensors(SMALL_CLIP);
  const pipe = writePipeline(path.join(root, 'sd15'), unet, te, { unetShardBytes: 40_000 });

  it('is one checkpoint whose tensor names carry their component, from sharded and single files', () => {
    const c = openCheckpoint(pipe);
    try {
      assert.equal(c.kind, 'diffusers');
      assert.deepEqual(c.components!.map((x) => [x.name, x.stem, x.sharded]), [['text_encoder', 'model', false], ['unet', 'diffusion_pytorch_model', true]]);
      assert.equal(c.tensors.length, 686 + 4 + SMALL_CLIP.layers * 16);
      assert.ok(c.byName.has('unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight'));
      assert.ok(c.byName.has('text_encoder.text_model.encoder.layers.1.mlp.fc2.bias'));
      assert.ok(c.components![1].files.length > 1);
    } finally {
      closeCheckpoint(c);
    }
  });

  it('census: the text encoder and the UNet side by side', () => {
    const r = censusJob({ path: pipe }, ctx);
    assert.equal(r.kind, 'diffusers');
    const teBlocks = r.perBlock.filter((b) => b.component === 'text_encoder');
    assert.deepEqual(teBlocks.map((b) => [b.block, b.tensors]), [[null, 4], ['layers.0', 16], ['layers.1', 16]]);
    const te = r.tensors.filter((t) => t.component === 'text_encoder');
    const count = (c: string): number => te.filter((t) => t.category === c).length;
    assert.deepEqual([count('attention'), count('mlp'), count('norm'), count('embedding'), count('final_norm')], [16, 8, 8, 2, 2]);
    assert.equal(r.summary.tensors, 686 + 36);
  });

  it('merge writes a diffusers folder back: same components, file stems, shards, configs; W + s·B@A on the target', async () => {
    const module = 'down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k';
    const [out, inn, r] = [16, 12, 4];
    const A = randomF32(r * inn, 3, 0.5);
    const B = randomF32(out * r, 4, 0.5);
    const adapter = writeAdapter(path.join(root, 'lora'), peftConfig({ r, lora_alpha: 8, target_modules: ['to_k'], task_type: null, base_model_name_or_path: null }), [
      { name: `base_model.model.${module}.lora_A.weight`, shape: [r, inn], data: A },
      { name: `base_model.model.${module}.lora_B.weight`, shape: [out, r], data: B },
    ]);
    const dest = path.join(root, 'merged');
    const rep = await mergeJob({ base: pipe, adapter, out: dest, dtype: 'fp32', rule: 'peft', shardSize: 40_000 }, withKernels(ctx, kernels));
    assert.equal(rep.loraTensors, 1);
    assert.ok(rep.files.includes('text_encoder/model.safetensors'));
    assert.ok(rep.files.some((f) => /^unet\/diffusion_pytorch_model-00001-of-\d{5}\.safetensors$/.test(f)));
    for (const f of ['model_index.json', 'unet/config.json', 'unet/diffusion_pytorch_model.safetensors.index.json', 'text_encoder/config.json', 'tokenizer/vocab.json', 'tokenizer/merges.txt', 'scheduler/scheduler_config.json']) {
      assert.ok(fs.existsSync(path.join(dest, f)), f);
    }
    const before = readAll(pipe);
    const after = readAll(dest);
    assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort());
    const name = `unet.${module}.weight`;
    const W = before.get(name)!;
    const expect = new Float32Array(out * inn);
    for (let i = 0; i < out; i++) {
      for (let j = 0; j < inn; j++) {
        let acc = 0;
        for (let k = 0; k < r; k++) acc += B[i * r + k] * A[k * inn + j];
        expect[i * inn + j] = Math.fround(W[i * inn + j] + Math.fround(acc * 2));
      }
    }
    assert.deepEqual(after.get(name), expect);
    for (const [n, v] of before) if (n !== name) assert.deepEqual(after.get(n), v, n);
  });

  it('a single-file checkpoint merges into a file of the same name', async () => {
    const file = path.join(root, 'single', 'my-unet.safetensors');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    writeWeights(path.dirname(file), unet.slice(0, 40), Infinity, 'my-unet');
    const module = 'down_blocks.0.resnets.0.time_emb_proj';
    const adapter = writeAdapter(path.join(root, 'lora-single'), peftConfig({ r: 2, lora_alpha: 2, target_modules: ['time_emb_proj'], task_type: null }), [
      { name: `base_model.model.${module}.lora_A.weight`, shape: [2, 32] },
      { name: `base_model.model.${module}.lora_B.weight`, shape: [8, 2] },
    ]);
    const rep = await mergeJob({ base: file, adapter, out: path.join(root, 'merged-single'), dtype: 'bf16', rule: 'peft' }, withKernels(ctx, kernels));
    assert.deepEqual(rep.files, ['my-unet.safetensors']);
    assert.deepEqual(fs.readdirSync(path.join(root, 'merged-single')).filter((f) => f !== OUTPUT_MARKER), ['my-unet.safetensors']);
  });
});
