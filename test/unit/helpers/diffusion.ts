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
import { concatF32, readAll } from './tensors';
import { diffusersToLdm } from '../../../src/engine/checkpoint/unetLayout';

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

/**
 * An OpenCLIP text tower as SD 2.x and SDXL single files hold it (under `cond_stage_model.model.` /
 * `conditioner.embedders.1.model.`), from a transformers CLIPTextModel(WithProjection) state dict with
 * values: MultiheadAttention's `in_proj_weight` / `in_proj_bias` are q_proj, k_proj, v_proj stacked by rows.
 */
export function openClipFromHf(prefix: string, hf: Map<string, TestTensor>, d: ClipDims): TestTensor[] {
  const t: TestTensor[] = [];
  const copy = (name: string, from: string): void => void t.push({ ...hf.get(from)!, name: prefix + name });
  const cat = (name: string, from: string[], shape: number[]): void => {
    const parts = from.map((n) => hf.get(n)!.data);
    const fused: TestTensor = { name: prefix + name, shape, dtype: hf.get(from[0])!.dtype };
    // Without values (a header-true sparse file) only the names and shapes matter.
    if (parts.every((p) => p instanceof Float32Array)) fused.data = concatF32(parts);
    t.push(fused);
  };
  copy('token_embedding.weight', 'text_model.embeddings.token_embedding.weight');
  t.push({ ...hf.get('text_model.embeddings.position_embedding.weight')!, name: `${prefix}positional_embedding` });
  for (let i = 0; i < d.layers; i++) {
    const l = `text_model.encoder.layers.${i}`;
    const r = `transformer.resblocks.${i}`;
    const qkv = ['q_proj', 'k_proj', 'v_proj'];
    cat(`${r}.attn.in_proj_weight`, qkv.map((p) => `${l}.self_attn.${p}.weight`), [3 * d.hidden, d.hidden]);
    cat(`${r}.attn.in_proj_bias`, qkv.map((p) => `${l}.self_attn.${p}.bias`), [3 * d.hidden]);
    for (const p of ['weight', 'bias']) {
      copy(`${r}.attn.out_proj.${p}`, `${l}.self_attn.out_proj.${p}`);
      copy(`${r}.ln_1.${p}`, `${l}.layer_norm1.${p}`);
      copy(`${r}.ln_2.${p}`, `${l}.layer_norm2.${p}`);
      copy(`${r}.mlp.c_fc.${p}`, `${l}.mlp.fc1.${p}`);
      copy(`${r}.mlp.c_proj.${p}`, `${l}.mlp.fc2.${p}`);
    }
  }
  copy('ln_final.weight', 'text_model.final_layer_norm.weight');
  copy('ln_final.bias', 'text_model.final_layer_norm.bias');
  return t;
}

/** FluxTransformer2DModel's tensors (diffusers names): hidden H, `double` and `single` blocks, latent channels C. */
export function fluxTensors(H: number, double: number, single: number, C: number, dtype: 'F32' | 'BF16' = 'F32'): TestTensor[] {
  const t: TestTensor[] = [];
  const lin = (m: string, o: number, i: number): void => void t.push({ name: `${m}.weight`, shape: [o, i], dtype }, { name: `${m}.bias`, shape: [o], dtype });
  lin('x_embedder', H, C);
  lin('context_embedder', H, 2 * H);
  for (const e of ['timestep_embedder', 'guidance_embedder']) {
    lin(`time_text_embed.${e}.linear_1`, H, 256);
    lin(`time_text_embed.${e}.linear_2`, H, H);
  }
  lin('time_text_embed.text_embedder.linear_1', H, 3 * H);
  lin('time_text_embed.text_embedder.linear_2', H, H);
  for (let n = 0; n < double; n++) {
    const b = `transformer_blocks.${n}`;
    for (const p of ['to_q', 'to_k', 'to_v', 'add_q_proj', 'add_k_proj', 'add_v_proj', 'to_out.0', 'to_add_out']) lin(`${b}.attn.${p}`, H, H);
    lin(`${b}.norm1.linear`, 6 * H, H);
    lin(`${b}.norm1_context.linear`, 6 * H, H);
    lin(`${b}.ff.net.0.proj`, 4 * H, H);
    lin(`${b}.ff.net.2`, H, 4 * H);
    lin(`${b}.ff_context.net.0.proj`, 4 * H, H);
    lin(`${b}.ff_context.net.2`, H, 4 * H);
  }
  for (let n = 0; n < single; n++) {
    const b = `single_transformer_blocks.${n}`;
    for (const p of ['to_q', 'to_k', 'to_v']) lin(`${b}.attn.${p}`, H, H);
    lin(`${b}.proj_mlp`, 4 * H, H);
    lin(`${b}.proj_out`, H, 5 * H);
    lin(`${b}.norm.linear`, 3 * H, H);
  }
  lin('norm_out.linear', 2 * H, H);
  lin('proj_out', C, H);
  return t;
}

/**
 * The same FLUX transformer as Black Forest Labs' single file names it (`double_blocks.N.img_attn.qkv`, …),
 * from diffusers-named tensors with values: fused projections stack their diffusers modules by rows (q, k,
 * v, then single blocks' proj_mlp); `final_layer.adaLN_modulation.1` is norm_out.linear with its two halves
 * swapped, as diffusers' conversion does.
 */
export function bflFromDiffusers(d: Map<string, TestTensor>, double: number, single: number): TestTensor[] {
  const t: TestTensor[] = [];
  const put = (bfl: string, from: string[], swapHalves = false): void => {
    for (const p of ['weight', 'bias']) {
      const parts = from.map((f) => d.get(`${f}.${p}`)!);
      const values = parts.map((x) => x.data as Float32Array);
      if (swapHalves) values.splice(0, 1, values[0].subarray(values[0].length / 2), values[0].subarray(0, values[0].length / 2));
      const data = concatF32(values);
      const rows = parts.reduce((a, x) => a + x.shape[0], 0);
      t.push({ name: `${bfl}.${p}`, shape: [rows, ...parts[0].shape.slice(1)], data, dtype: parts[0].dtype });
    }
  };
  put('img_in', ['x_embedder']);
  put('txt_in', ['context_embedder']);
  for (const [bfl, e] of [['time_in', 'timestep_embedder'], ['vector_in', 'text_embedder'], ['guidance_in', 'guidance_embedder']]) {
    put(`${bfl}.in_layer`, [`time_text_embed.${e}.linear_1`]);
    put(`${bfl}.out_layer`, [`time_text_embed.${e}.linear_2`]);
  }
  for (let n = 0; n < double; n++) {
    const b = `transformer_blocks.${n}`;
    const o = `double_blocks.${n}`;
    put(`${o}.img_attn.qkv`, ['to_q', 'to_k', 'to_v'].map((x) => `${b}.attn.${x}`));
    put(`${o}.img_attn.proj`, [`${b}.attn.to_out.0`]);
    put(`${o}.img_mlp.0`, [`${b}.ff.net.0.proj`]);
    put(`${o}.img_mlp.2`, [`${b}.ff.net.2`]);
    put(`${o}.img_mod.lin`, [`${b}.norm1.linear`]);
    put(`${o}.txt_attn.qkv`, ['add_q_proj', 'add_k_proj', 'add_v_proj'].map((x) => `${b}.attn.${x}`));
    put(`${o}.txt_attn.proj`, [`${b}.attn.to_add_out`]);
    put(`${o}.txt_mlp.0`, [`${b}.ff_context.net.0.proj`]);
    put(`${o}.txt_mlp.2`, [`${b}.ff_context.net.2`]);
    put(`${o}.txt_mod.lin`, [`${b}.norm1_context.linear`]);
  }
  for (let n = 0; n < single; n++) {
    const b = `single_transformer_blocks.${n}`;
    put(`single_blocks.${n}.linear1`, [...['to_q', 'to_k', 'to_v'].map((x) => `${b}.attn.${x}`), `${b}.proj_mlp`]);
    put(`single_blocks.${n}.linear2`, [`${b}.proj_out`]);
    put(`single_blocks.${n}.modulation.lin`, [`${b}.norm.linear`]);
  }
  put('final_layer.adaLN_modulation.1', ['norm_out.linear'], true);
  put('final_layer.linear', ['proj_out']);
  return t;
}

/**
 * A diffusers FLUX transformer's tensors read back from `dir` (a merge of it), as the BFL single file names
 * and stacks them: what a merge onto the BFL file built from `d` by bflFromDiffusers must equal.
 */
export function bflValues(d: Map<string, TestTensor>, dir: string, double: number, single: number): Map<string, Float32Array> {
  const m = readAll(dir);
  const withValues = new Map([...d].map(([n, t]) => [n, { ...t, data: m.get(n)! }]));
  return new Map(bflFromDiffusers(withValues, double, single).map((t) => [t.name, t.data as Float32Array]));
}

/** UNet tensors renamed to the original single-file layout (`model.diffusion_model.input_blocks…`), values kept. */
export function ldmNames(unet: TestTensor[]): TestTensor[] {
  const names = new Set(unet.map((t) => t.name));
  const has = (i: number): boolean => [...names].some((n) => n.startsWith(`up_blocks.${i}.attentions.`));
  return unet.map((t) => {
    const module = t.name.replace(/\.(weight|bias)$/, '');
    const ldm = diffusersToLdm(module, has);
    if (ldm === undefined) throw new Error(`no original name for ${t.name}`);
    return { ...t, name: `model.diffusion_model.${ldm}${t.name.slice(module.length)}` };
  });
}
