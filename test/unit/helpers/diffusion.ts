/**
 * Image-model test data with the true tensor names and shapes of diffusers' UNet2DConditionModel (Stable
 * Diffusion 1.5: 686 tensors, 859,520,964 parameters at its real channel counts) and transformers'
 * CLIPTextModel (196 tensors), at any channel counts; written as a diffusers pipeline folder, or as a
 * header-true sparse file (the real shapes, the data a hole of zeros) when only names and shapes matter.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Dtype } from '../../../src/shared/safetensors/dtypes';
import { buildHeader, SafetensorsWriter } from '../../../src/engine/safetensors/writer';
import { TestTensor, tensorBytes, writeWeights } from './builders';

export interface UnetDims {
  /** block_out_channels (SD1.5: 320, 640, 1280, 1280). */
  channels: [number, number, number, number];
  /** cross_attention_dim (SD1.5: 768, the CLIP text encoder's width). */
  cross: number;
  /** Input and output latent channels (4). */
  latent: number;
}

export const SD15_UNET: UnetDims = { channels: [320, 640, 1280, 1280], cross: 768, latent: 4 };

/** UNet2DConditionModel with SD1.5's block types (CrossAttnDown ×3, Down, Up, CrossAttnUp ×3), layers_per_block 2, conv proj_in/out. */
export function sd15UnetTensors(d: UnetDims, dtype: Dtype = 'F32'): TestTensor[] {
  const t: TestTensor[] = [];
  const add = (name: string, shape: number[]): void => void t.push({ name, shape, dtype });
  const lin = (m: string, o: number, i: number, bias = true): void => {
    add(`${m}.weight`, [o, i]);
    if (bias) add(`${m}.bias`, [o]);
  };
  const conv = (m: string, o: number, i: number, k: number): void => {
    add(`${m}.weight`, [o, i, k, k]);
    add(`${m}.bias`, [o]);
  };
  const norm = (m: string, c: number): void => {
    add(`${m}.weight`, [c]);
    add(`${m}.bias`, [c]);
  };
  const temb = 4 * d.channels[0];
  const resnet = (m: string, cin: number, cout: number): void => {
    norm(`${m}.norm1`, cin);
    conv(`${m}.conv1`, cout, cin, 3);
    lin(`${m}.time_emb_proj`, cout, temb);
    norm(`${m}.norm2`, cout);
    conv(`${m}.conv2`, cout, cout, 3);
    if (cin !== cout) conv(`${m}.conv_shortcut`, cout, cin, 1);
  };
  const transformer = (m: string, c: number): void => {
    norm(`${m}.norm`, c);
    conv(`${m}.proj_in`, c, c, 1);
    const b = `${m}.transformer_blocks.0`;
    norm(`${b}.norm1`, c);
    for (const p of ['to_q', 'to_k', 'to_v']) lin(`${b}.attn1.${p}`, c, c, false);
    lin(`${b}.attn1.to_out.0`, c, c);
    norm(`${b}.norm2`, c);
    lin(`${b}.attn2.to_q`, c, c, false);
    lin(`${b}.attn2.to_k`, c, d.cross, false);
    lin(`${b}.attn2.to_v`, c, d.cross, false);
    lin(`${b}.attn2.to_out.0`, c, c);
    norm(`${b}.norm3`, c);
    lin(`${b}.ff.net.0.proj`, 8 * c, c);
    lin(`${b}.ff.net.2`, c, 4 * c);
    conv(`${m}.proj_out`, c, c, 1);
  };
  const ch = d.channels;
  conv('conv_in', ch[0], d.latent, 3);
  lin('time_embedding.linear_1', temb, ch[0]);
  lin('time_embedding.linear_2', temb, temb);
  let prev = ch[0];
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 2; j++) {
      resnet(`down_blocks.${i}.resnets.${j}`, j === 0 ? prev : ch[i], ch[i]);
      if (i < 3) transformer(`down_blocks.${i}.attentions.${j}`, ch[i]);
    }
    if (i < 3) conv(`down_blocks.${i}.downsamplers.0.conv`, ch[i], ch[i], 3);
    prev = ch[i];
  }
  const rev = [...ch].reverse();
  for (let i = 0; i < 4; i++) {
    const out = rev[i];
    const skipIn = rev[Math.min(i + 1, 3)];
    for (let j = 0; j < 3; j++) {
      const resIn = j === 0 ? (i === 0 ? rev[0] : rev[i - 1]) : out;
      resnet(`up_blocks.${i}.resnets.${j}`, resIn + (j === 2 ? skipIn : out), out);
      if (i > 0) transformer(`up_blocks.${i}.attentions.${j}`, out);
    }
    if (i < 3) conv(`up_blocks.${i}.upsamplers.0.conv`, out, out, 3);
  }
  resnet('mid_block.resnets.0', ch[3], ch[3]);
  transformer('mid_block.attentions.0', ch[3]);
  resnet('mid_block.resnets.1', ch[3], ch[3]);
  norm('conv_norm_out', ch[0]);
  conv('conv_out', d.latent, ch[0], 3);
  return t;
}

export interface ClipDims {
  hidden: number;
  layers: number;
  intermediate: number;
  vocab: number;
  positions: number;
}

/** SD1.5's text encoder: CLIP ViT-L/14's text model. */
export const SD15_CLIP: ClipDims = { hidden: 768, layers: 12, intermediate: 3072, vocab: 49408, positions: 77 };

/** transformers' CLIPTextModel state dict (`text_model.…`). */
export function clipTextTensors(d: ClipDims, dtype: Dtype = 'F32'): TestTensor[] {
  const t: TestTensor[] = [];
  const add = (name: string, shape: number[]): void => void t.push({ name, shape, dtype });
  add('text_model.embeddings.token_embedding.weight', [d.vocab, d.hidden]);
  add('text_model.embeddings.position_embedding.weight', [d.positions, d.hidden]);
  for (let i = 0; i < d.layers; i++) {
    const l = `text_model.encoder.layers.${i}`;
    for (const p of ['k_proj', 'v_proj', 'q_proj', 'out_proj']) {
      add(`${l}.self_attn.${p}.weight`, [d.hidden, d.hidden]);
      add(`${l}.self_attn.${p}.bias`, [d.hidden]);
    }
    add(`${l}.layer_norm1.weight`, [d.hidden]);
    add(`${l}.layer_norm1.bias`, [d.hidden]);
    add(`${l}.mlp.fc1.weight`, [d.intermediate, d.hidden]);
    add(`${l}.mlp.fc1.bias`, [d.intermediate]);
    add(`${l}.mlp.fc2.weight`, [d.hidden, d.intermediate]);
    add(`${l}.mlp.fc2.bias`, [d.hidden]);
    add(`${l}.layer_norm2.weight`, [d.hidden]);
    add(`${l}.layer_norm2.bias`, [d.hidden]);
  }
  add('text_model.final_layer_norm.weight', [d.hidden]);
  add('text_model.final_layer_norm.bias', [d.hidden]);
  return t;
}

/**
 * A diffusers Stable Diffusion pipeline folder: model_index.json, unet/ and text_encoder/ with weights
 * and configs, and the weightless tokenizer/ and scheduler/ folders. `sharded`: unet weights in shards.
 */
export function writePipeline(dir: string, unet: TestTensor[], textEncoder: TestTensor[], opts: { unetShardBytes?: number } = {}): string {
  fs.mkdirSync(dir, { recursive: true });
  const index = {
    _class_name: 'StableDiffusionPipeline',
    _diffusers_version: '0.30.0',
    feature_extractor: [null, null],
    requires_safety_checker: false,
    safety_checker: [null, null],
    scheduler: ['diffusers', 'PNDMScheduler'],
    text_encoder: ['transformers', 'CLIPTextModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    unet: ['diffusers', 'UNet2DConditionModel'],
  };
  fs.writeFileSync(path.join(dir, 'model_index.json'), JSON.stringify(index, null, 2));
  writeWeights(path.join(dir, 'unet'), unet, opts.unetShardBytes ?? Infinity, 'diffusion_pytorch_model');
  fs.writeFileSync(path.join(dir, 'unet', 'config.json'), JSON.stringify({ _class_name: 'UNet2DConditionModel', cross_attention_dim: 768, layers_per_block: 2 }));
  writeWeights(path.join(dir, 'text_encoder'), textEncoder, Infinity, 'model');
  fs.writeFileSync(path.join(dir, 'text_encoder', 'config.json'), JSON.stringify({ architectures: ['CLIPTextModel'], model_type: 'clip_text_model', torch_dtype: 'float32' }));
  fs.mkdirSync(path.join(dir, 'tokenizer'));
  fs.writeFileSync(path.join(dir, 'tokenizer', 'vocab.json'), '{}');
  fs.writeFileSync(path.join(dir, 'tokenizer', 'merges.txt'), '#version: 0.2\n');
  fs.mkdirSync(path.join(dir, 'scheduler'));
  fs.writeFileSync(path.join(dir, 'scheduler', 'scheduler_config.json'), JSON.stringify({ _class_name: 'PNDMScheduler' }));
  return dir;
}

/** A safetensors file with the true header and all-zero data left as a hole (a few KB on disk whatever its size). */
export function writeSparse(file: string, tensors: TestTensor[]): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const { header, sizes } = buildHeader(tensors.map((t) => ({ name: t.name, dtype: t.dtype ?? 'F32', shape: t.shape })));
  fs.writeFileSync(file, header);
  fs.truncateSync(file, header.length + sizes.reduce((a, b) => a + b, 0));
  return file;
}

/** An SD1.5 diffusers folder (UNet + CLIP text encoder, fp16) with true headers and sparse data. */
export function writeSparseSd15(dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'model_index.json'), JSON.stringify({ _class_name: 'StableDiffusionPipeline', text_encoder: ['transformers', 'CLIPTextModel'], unet: ['diffusers', 'UNet2DConditionModel'] }));
  writeSparse(path.join(dir, 'unet', 'diffusion_pytorch_model.safetensors'), sd15UnetTensors(SD15_UNET, 'F16'));
  writeSparse(path.join(dir, 'text_encoder', 'model.safetensors'), clipTextTensors(SD15_CLIP, 'F16'));
  return dir;
}

/** Tensors renamed under a prefix (`model.diffusion_model.`, `unet.`). */
export function prefixed(prefix: string, tensors: TestTensor[]): TestTensor[] {
  return tensors.map((t) => ({ ...t, name: prefix + t.name }));
}

/** One .safetensors file with its own `__metadata__` (a kohya LoRA's `ss_*` fields). */
export function writeSafetensorsFile(file: string, tensors: TestTensor[], metadata: Record<string, string> = { format: 'pt' }): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const w = new SafetensorsWriter(file, tensors.map((t) => ({ name: t.name, dtype: t.dtype ?? 'F32', shape: t.shape })), metadata);
  for (const t of tensors) w.write(t.name, tensorBytes(t));
  w.finish();
  return file;
}
