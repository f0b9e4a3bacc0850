/**
 * kohya-ss LoRA, LyCORIS (LoHa, LoKr, full diff) and diffusers LoRA files, each in its exact on-disk
 * layout, merged onto a Stable Diffusion 1.5-shaped diffusers pipeline (true names, small channels) and
 * compared bit for bit with a float64 reference of the format's own formula; names resolved against the
 * base or refused naming the module.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { closeCheckpoint, openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { censusJob } from '../../src/engine/jobs/census';
import { convertAdapterJob } from '../../src/engine/jobs/convertAdapter';
import { mergeJob } from '../../src/engine/jobs/merge';
import * as fs from 'node:fs';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { decodeF16Array, encodeF16 } from '../../src/shared/safetensors/half';
import { quietContext } from '../../src/engine/util/job';
import { assertOneLineError, runCli } from './helpers/cli';
import { randomF32, TestTensor, tmpDir, writeWeights } from './helpers/builders';
import { clipTextTensors, sd15UnetTensors, writePipeline, writeSafetensorsFile } from './helpers/diffusion';
import { readAll, matmul } from './helpers/tensors';
import { withKernels } from '../../src/engine/kernels/kernels';

const ctx = quietContext();
const kernels = new CpuKernels();
const UNET = { channels: [8, 16, 32, 32] as [number, number, number, number], cross: 12, latent: 4 };
const CLIP = { hidden: 12, layers: 2, intermediate: 24, vocab: 50, positions: 7 };

/** Values exactly representable at fp16 (what a kohya file stores). */
function half(n: number, seed: number, scale = 0.5): Float32Array {
  const h = encodeF16(randomF32(n, seed, scale), new Uint16Array(n));
  return decodeF16Array(h, new Float32Array(n));
}

const alphaTensor = (module: string, alpha: number): TestTensor => ({ name: `${module}.alpha`, dtype: 'F16', shape: [], data: new Float32Array([alpha]) });

describe('kohya-ss and LyCORIS files on a diffusers pipeline', () => {
  const root = tmpDir();
  const pipe = writePipeline(path.join(root, 'sd15'), sd15UnetTensors(UNET), clipTextTensors(CLIP));
  const base = readAll(pipe);
  /** Expected merged fp32 tensors, by base name. */
  const expected = new Map<string, Float32Array>();
  const tensors: TestTensor[] = [];
  const add = (base: string, delta: Float32Array): void => {
    const W = readAllCached(base);
    expected.set(base, W.map((w, i) => Math.fround(w + delta[i])));
  };
  const readAllCached = (name: string): Float32Array => base.get(name)!;

  // kohya LoRA on a Linear (alpha 2, r 4: scale 0.5).
  {
    const m = 'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q';
    const [r, out, inn] = [4, 8, 8];
    const down = half(r * inn, 1);
    const up = half(out * r, 2);
    tensors.push({ name: `${m}.lora_down.weight`, dtype: 'F16', shape: [r, inn], data: down }, { name: `${m}.lora_up.weight`, dtype: 'F16', shape: [out, r], data: up }, alphaTensor(m, 2));
    add('unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight', Float32Array.from(matmul(up, down, out, r, inn), (x) => x * 0.5));
  }
  // kohya LoCon on a 3x3 Conv2d: down [r, in, 3, 3], up [out, r, 1, 1], alpha 3 over r 4.
  {
    const m = 'lora_unet_down_blocks_1_resnets_0_conv1';
    const [r, out, inn] = [4, 16, 8 * 9];
    const down = half(r * inn, 3);
    const up = half(out * r, 4);
    tensors.push({ name: `${m}.lora_down.weight`, dtype: 'F16', shape: [r, 8, 3, 3], data: down }, { name: `${m}.lora_up.weight`, dtype: 'F16', shape: [out, r, 1, 1], data: up }, alphaTensor(m, 3));
    // torch's `(up @ down) * scale`: the fp32 product, then times the fp32 scale.
    add('unet.down_blocks.1.resnets.0.conv1.weight', Float32Array.from(matmul(up, down, out, r, inn), (x) => Math.fround(x) * 0.75));
  }
  // kohya LoRA on the text encoder, no alpha: scale 1.
  {
    const m = 'lora_te_text_model_encoder_layers_1_mlp_fc1';
    const [r, out, inn] = [2, 24, 12];
    const down = half(r * inn, 5);
    const up = half(out * r, 6);
    tensors.push({ name: `${m}.lora_down.weight`, dtype: 'F16', shape: [r, inn], data: down }, { name: `${m}.lora_up.weight`, dtype: 'F16', shape: [out, r], data: up });
    add('text_encoder.text_model.encoder.layers.1.mlp.fc1.weight', Float32Array.from(matmul(up, down, out, r, inn)));
  }
  // LyCORIS LoHa on a Linear (attn2.to_k takes the 12-wide text states): alpha 3, r 2.
  {
    const m = 'lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k';
    const [r, out, inn] = [2, 32, 12];
    const [w1a, w1b, w2a, w2b] = [half(out * r, 7), half(r * inn, 8), half(out * r, 9), half(r * inn, 10)];
    tensors.push(
      { name: `${m}.hada_w1_a`, dtype: 'F16', shape: [out, r], data: w1a },
      { name: `${m}.hada_w1_b`, dtype: 'F16', shape: [r, inn], data: w1b },
      { name: `${m}.hada_w2_a`, dtype: 'F16', shape: [out, r], data: w2a },
      { name: `${m}.hada_w2_b`, dtype: 'F16', shape: [r, inn], data: w2b },
      alphaTensor(m, 3),
    );
    const p1 = matmul(w1a, w1b, out, r, inn);
    const p2 = matmul(w2a, w2b, out, r, inn);
    add('unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight', Float32Array.from(p1, (x, i) => Math.fround(Math.fround(Math.fround(x) * Math.fround(p2[i])) * Math.fround(1.5))));
  }
  // LyCORIS LoKr on a Conv2d, both factors split (w1 [4, 2], w2 [4, 36]: kron [16, 72] = [16, 8·3·3]), alpha 1, r 2.
  {
    const m = 'lora_unet_down_blocks_1_resnets_0_conv2';
    const conv2 = { name: 'unet.down_blocks.1.resnets.0.conv2.weight', out: 16, inn: 16 * 9 };
    const [o1, i1, o2, i2, r] = [4, 4, 4, 36, 2];
    const [w1a, w1b, w2a, w2b] = [half(o1 * r, 11), half(r * i1, 12), half(o2 * r, 13), half(r * i2, 14)];
    tensors.push(
      { name: `${m}.lokr_w1_a`, dtype: 'F16', shape: [o1, r], data: w1a },
      { name: `${m}.lokr_w1_b`, dtype: 'F16', shape: [r, i1], data: w1b },
      { name: `${m}.lokr_w2_a`, dtype: 'F16', shape: [o2, r], data: w2a },
      { name: `${m}.lokr_w2_b`, dtype: 'F16', shape: [r, i2], data: w2b },
      alphaTensor(m, 1),
    );
    const w1 = Float32Array.from(matmul(w1a, w1b, o1, r, i1));
    const w2 = Float32Array.from(matmul(w2a, w2b, o2, r, i2));
    const d = new Float32Array(conv2.out * conv2.inn);
    for (let a = 0; a < o1; a++) for (let b = 0; b < i1; b++) for (let c = 0; c < o2; c++) for (let e = 0; e < i2; e++) {
      d[(a * o2 + c) * conv2.inn + b * i2 + e] = Math.fround(Math.fround(w1[a * i1 + b] * w2[c * i2 + e]) * 0.5);
    }
    add(conv2.name, d);
  }
  // LyCORIS LoKr on a Linear, both factors whole (lokr_w1, lokr_w2): scale 1 whatever alpha says.
  {
    const m = 'lora_te_text_model_encoder_layers_0_self_attn_v_proj';
    const [o1, i1, o2, i2] = [3, 2, 4, 6];
    const [w1, w2] = [half(o1 * i1, 15), half(o2 * i2, 16)];
    tensors.push({ name: `${m}.lokr_w1`, dtype: 'F16', shape: [o1, i1], data: w1 }, { name: `${m}.lokr_w2`, dtype: 'F16', shape: [o2, i2], data: w2 }, alphaTensor(m, 7));
    const d = new Float32Array(12 * 12);
    for (let a = 0; a < o1; a++)
      for (let b = 0; b < i1; b++)
        for (let c = 0; c < o2; c++) for (let e = 0; e < i2; e++) d[(a * o2 + c) * 12 + b * i2 + e] = Math.fround(w1[a * i1 + b] * w2[c * i2 + e]);
    add('text_encoder.text_model.encoder.layers.0.self_attn.v_proj.weight', d);
  }
  // LyCORIS full: diff on a weight and diff_b on its bias.
  {
    const m = 'lora_unet_conv_in';
    const diff = half(8 * 4 * 9, 17);
    const diffB = half(8, 18);
    tensors.push({ name: `${m}.diff`, dtype: 'F16', shape: [8, 4, 3, 3], data: diff }, { name: `${m}.diff_b`, dtype: 'F16', shape: [8], data: diffB });
    add('unet.conv_in.weight', diff);
    add('unet.conv_in.bias', diffB);
  }
  const file = writeSafetensorsFile(path.join(root, 'lora', 'mixed.safetensors'), tensors, {
    ss_network_module: 'lycoris.kohya',
    ss_network_dim: '4',
    ss_network_alpha: '2.0',
    ss_network_args: '{"algo": "lokr", "conv_dim": "4"}',
    ss_sd_model_name: 'v1-5-pruned-emaonly.safetensors',
    ss_tag_frequency: '{"10_cat": {"cat": 10, "sitting": 3}, "5_dog": {"dog": 5, "cat": 2}}',
    ss_resolution: '(512, 512)',
  });

  it('merges every module bit for bit as its format computes it, and nothing else', async () => {
    const out = path.join(root, 'merged');
    const rep = await mergeJob({ base: pipe, adapter: file, out, dtype: 'fp32', rule: 'peft' }, withKernels(ctx, kernels));
    assert.equal(rep.loraTensors, expected.size);
    const merged = readAll(out);
    for (const [name, want] of expected) assert.ok(Buffer.from(merged.get(name)!.buffer).equals(Buffer.from(want.buffer)), name);
    for (const [name, w] of base) if (!expected.has(name)) assert.ok(Buffer.from(merged.get(name)!.buffer).equals(Buffer.from(w.buffer)), name);
  });

  it('census of the file: its modules, methods and kohya training metadata', () => {
    const r = censusJob({ path: file }, ctx);
    assert.equal(r.adapter!.loraModules, 8);
    assert.equal(r.adapter!.method, 'kohya LoRA + LoHa + LoKr + full diff');
    assert.deepEqual([r.adapter!.r, r.adapter!.alpha], [4, 2]);
    const meta = r.trainingMetadata!;
    assert.equal(meta.baseModel, 'v1-5-pruned-emaonly.safetensors');
    assert.deepEqual(meta.networkArgs, { algo: 'lokr', conv_dim: '4' });
    assert.deepEqual(meta.topTags, [{ tag: 'cat', count: 12 }, { tag: 'dog', count: 5 }, { tag: 'sitting', count: 3 }]);
    const t = r.tensors.find((x) => x.name === 'lora_unet_down_blocks_1_resnets_0_conv1.lora_down.weight')!;
    assert.deepEqual([t.category, t.component, t.block, t.loraTarget, t.loraFactor], ['resnet', 'unet', 'down.1', false, true]);
  });

  it('census --adapter marks the base tensors the file adapts', () => {
    const r = censusJob({ path: pipe, adapter: file }, ctx);
    assert.deepEqual(r.tensors.filter((t) => t.loraTarget).map((t) => t.name).sort(), [...expected.keys()].sort());
  });

  it('a module the base does not have is bad input naming it; cloneofsimo, norm-tuning and OFT files are refused in one line', () => {
    const stray = writeSafetensorsFile(path.join(root, 'stray', 'stray.safetensors'), [
      { name: 'lora_unet_down_blocks_9_resnets_0_conv1.lora_down.weight', shape: [2, 8] },
      { name: 'lora_unet_down_blocks_9_resnets_0_conv1.lora_up.weight', shape: [8, 2] },
    ]);
    assertOneLineError(runCli(['merge', '--base', pipe, '--adapter', stray, '--out', path.join(root, 'x'), '--dtype', 'fp16']), 'lora_unet_down_blocks_9_resnets_0_conv1');
    const clone = writeSafetensorsFile(path.join(root, 'clone', 'lora.safetensors'), [{ name: 'unet:0:up', shape: [8, 2] }, { name: 'unet:0:down', shape: [2, 8] }]);
    assertOneLineError(runCli(['census', clone]), 'cloneofsimo');
    const norms = writeSafetensorsFile(path.join(root, 'norms', 'n.safetensors'), [
      { name: 'lora_unet_conv_norm_out.w_norm', shape: [8] },
      { name: 'lora_unet_conv_norm_out.b_norm', shape: [8] },
    ]);
    assertOneLineError(runCli(['census', norms]), 'lora_unet_conv_norm_out.', 'w_norm');
    // kohya-ss OFT (oft_blocks [blocks, size, size] + alpha) and LyCORIS BOFT ([m, blocks, size, size]).
    for (const shape of [[4, 2, 2], [2, 4, 2, 2]]) {
      const oft = writeSafetensorsFile(path.join(root, `oft${shape.length}`, 'o.safetensors'), [
        { name: 'lora_unet_down_blocks_0_attentions_0_proj_in.oft_blocks', shape },
        { name: 'lora_unet_down_blocks_0_attentions_0_proj_in.alpha', shape: [] },
      ]);
      assertOneLineError(runCli(['merge', '--base', pipe, '--adapter', oft, '--out', path.join(root, 'y'), '--dtype', 'fp16']), 'lora_unet_down_blocks_0_attentions_0_proj_in.oft_blocks', 'OFT / BOFT', 'not merged');
    }
  });
});

describe('diffusers LoRA files and single-file bases', () => {
  const root = tmpDir();
  const pipe = writePipeline(path.join(root, 'sd15'), sd15UnetTensors(UNET), clipTextTensors(CLIP));
  const base = readAll(pipe);

  it('the attention-processor format, `.lora.down`, `lora_linear_layer` and bare PEFT keys with alpha', async () => {
    const r = 2;
    const mods: Array<{ keys: [string, string]; alpha?: [string, number]; base: string; out: number; inn: number }> = [
      { keys: ['down_blocks.0.attentions.1.transformer_blocks.0.attn1.processor.to_out_lora.down.weight', 'down_blocks.0.attentions.1.transformer_blocks.0.attn1.processor.to_out_lora.up.weight'], base: 'unet.down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_out.0.weight', out: 8, inn: 8 },
      { keys: ['unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_v.lora.down.weight', 'unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_v.lora.up.weight'], alpha: ['unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_v.alpha', 1], base: 'unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_v.weight', out: 32, inn: 12 },
      { keys: ['text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight', 'text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.up.weight'], base: 'text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight', out: 12, inn: 12 },
      { keys: ['unet.up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2.lora_A.weight', 'unet.up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2.lora_B.weight'], base: 'unet.up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2.weight', out: 8, inn: 32 },
    ];
    const tensors: TestTensor[] = [];
    const expected = new Map<string, Float32Array>();
    mods.forEach((m, i) => {
      const down = randomF32(r * m.inn, 20 + i, 0.5);
      const up = randomF32(m.out * r, 40 + i, 0.5);
      tensors.push({ name: m.keys[0], shape: [r, m.inn], data: down }, { name: m.keys[1], shape: [m.out, r], data: up });
      if (m.alpha) tensors.push({ name: m.alpha[0], shape: [], data: new Float32Array([m.alpha[1]]) });
      const s = m.alpha ? m.alpha[1] / r : 1;
      const W = base.get(m.base)!;
      const d = matmul(up, down, m.out, r, m.inn);
      expected.set(m.base, W.map((w, j) => Math.fround(w + Math.fround(d[j] * s))));
    });
    const dir = path.join(root, 'diffusers-lora');
    writeWeights(dir, tensors, Infinity, 'pytorch_lora_weights');
    const rep = await mergeJob({ base: pipe, adapter: dir, out: path.join(root, 'merged'), dtype: 'fp32', rule: 'peft' }, withKernels(ctx, kernels));
    assert.equal(rep.loraTensors, 4);
    const merged = readAll(path.join(root, 'merged'));
    for (const [name, want] of expected) assert.ok(Buffer.from(merged.get(name)!.buffer).equals(Buffer.from(want.buffer)), name);
  });

  it('kohya text-encoder and diffusers-named UNet modules resolve in an original single-file checkpoint', async () => {
    const te = clipTextTensors(CLIP).map((t) => ({ ...t, name: `cond_stage_model.transformer.${t.name}` }));
    const unet = [{ name: 'model.diffusion_model.input_blocks.1.1.proj_in.weight', shape: [8, 8, 1, 1] }];
    const single = path.join(root, 'single');
    writeWeights(single, [...unet, ...te], Infinity, 'v1-5-tiny');
    const file = path.join(single, 'v1-5-tiny.safetensors');
    const m = 'lora_te_text_model_encoder_layers_1_self_attn_k_proj';
    const lora = writeSafetensorsFile(path.join(root, 'te-lora', 'te.safetensors'), [
      { name: `${m}.lora_down.weight`, shape: [2, 12] },
      { name: `${m}.lora_up.weight`, shape: [12, 2] },
    ]);
    const rep = await mergeJob({ base: file, adapter: lora, out: path.join(root, 'merged-single'), dtype: 'fp16', rule: 'peft' }, withKernels(ctx, kernels));
    assert.deepEqual([rep.loraTensors, rep.files], [1, ['v1-5-tiny.safetensors']]);
    const unetLora = writeSafetensorsFile(path.join(root, 'unet-lora', 'u.safetensors'), [
      { name: 'lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight', shape: [2, 8, 1, 1] },
      { name: 'lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight', shape: [8, 2, 1, 1] },
    ]);
    const unetRep = await mergeJob(
      { base: file, adapter: unetLora, out: path.join(root, 'merged-unet'), dtype: 'fp16', rule: 'peft' },
      withKernels(ctx, kernels),
    );
    assert.equal(unetRep.loraTensors, 1);
  });
});

describe('convert: kohya and LyCORIS files to PEFT adapter folders with the same merge', () => {
  const root = tmpDir();
  const pipe = writePipeline(path.join(root, 'sd15'), sd15UnetTensors(UNET), clipTextTensors(CLIP));
  const lora = (m: string, r: number, inShape: number[], out: number, alpha: number | undefined, seed: number): TestTensor[] => {
    const inn = inShape.reduce((a, b) => a * b, 1);
    const conv = inShape.length > 1;
    return [
      { name: `${m}.lora_down.weight`, dtype: 'F16', shape: [r, ...inShape], data: half(r * inn, seed) },
      { name: `${m}.lora_up.weight`, dtype: 'F16', shape: conv ? [out, r, 1, 1] : [out, r], data: half(out * r, seed + 1) },
      ...(alpha === undefined ? [] : [alphaTensor(m, alpha)]),
    ];
  };

  async function sameMerge(file: string, name: string): Promise<Record<string, unknown>> {
    const peft = path.join(root, `${name}-peft`);
    const rep = await convertAdapterJob({ input: file, out: peft, base: pipe }, ctx);
    const a = path.join(root, `${name}-merged-original`);
    const b = path.join(root, `${name}-merged-converted`);
    await mergeJob({ base: pipe, adapter: file, out: a, dtype: 'fp32', rule: 'peft' }, withKernels(ctx, kernels));
    await mergeJob({ base: pipe, adapter: peft, out: b, dtype: 'fp32', rule: 'peft' }, withKernels(ctx, kernels));
    for (const f of ['unet/diffusion_pytorch_model.safetensors', 'text_encoder/model.safetensors']) {
      assert.ok(fs.readFileSync(path.join(a, f)).equals(fs.readFileSync(path.join(b, f))), f);
    }
    assert.equal(rep.modules, censusJob({ path: peft }, ctx).adapter!.loraModules);
    return JSON.parse(fs.readFileSync(path.join(peft, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  }

  it('kohya LoRA and LoCon (ranks and alphas differing per module, one without alpha) -> PEFT LORA', async () => {
    const file = writeSafetensorsFile(path.join(root, 'k', 'k.safetensors'), [
      ...lora('lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k', 4, [12], 8, 2, 1),
      ...lora('lora_unet_up_blocks_2_resnets_1_conv2', 4, [16, 3, 3], 16, 4, 3),
      ...lora('lora_unet_mid_block_attentions_0_proj_out', 2, [32, 1, 1], 32, 1, 5),
      ...lora('lora_te_text_model_encoder_layers_0_mlp_fc2', 4, [24], 12, undefined, 7),
    ]);
    const cfg = await sameMerge(file, 'lora');
    assert.deepEqual([cfg.peft_type, cfg.r, cfg.lora_alpha], ['LORA', 4, 4]);
    assert.deepEqual(cfg.rank_pattern, { 'unet.mid_block.attentions.0.proj_out': 2 });
    assert.deepEqual(cfg.alpha_pattern, { 'unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k': 2, 'unet.mid_block.attentions.0.proj_out': 1 });
  });

  it('LyCORIS Tucker LoCon -> PEFT LORA with Conv2d-shaped factors (A the 3x3 kernel, B 1x1)', async () => {
    const m = 'lora_unet_up_blocks_2_resnets_1_conv2';
    const file = writeSafetensorsFile(path.join(root, 'tucker', 'tucker.safetensors'), [
      { name: `${m}.lora_down.weight`, dtype: 'F16', shape: [4, 16, 1, 1], data: half(64, 40) },
      { name: `${m}.lora_mid.weight`, dtype: 'F16', shape: [4, 4, 3, 3], data: half(144, 41) },
      { name: `${m}.lora_up.weight`, dtype: 'F16', shape: [16, 4, 1, 1], data: half(64, 42) },
      alphaTensor(m, 2),
    ]);
    await sameMerge(file, 'tucker');
    const c = openCheckpoint(path.join(root, 'tucker-peft'));
    const shapes = Object.fromEntries(c.tensors.map((t) => [t.name.replace(/^.*\.(lora_[AB])\.weight$/, '$1'), t.shape]));
    closeCheckpoint(c);
    assert.deepEqual(shapes, { lora_A: [4, 16, 3, 3], lora_B: [16, 4, 1, 1] });
  });

  it('LyCORIS LoKr (split and whole factors) -> PEFT LOKR', async () => {
    const m1 = 'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_2';
    const m2 = 'lora_te_text_model_encoder_layers_1_self_attn_out_proj';
    const file = writeSafetensorsFile(path.join(root, 'kr', 'kr.safetensors'), [
      { name: `${m1}.lokr_w1_a`, dtype: 'F16', shape: [2, 2], data: half(4, 30) },
      { name: `${m1}.lokr_w1_b`, dtype: 'F16', shape: [2, 4], data: half(8, 31) },
      { name: `${m1}.lokr_w2_a`, dtype: 'F16', shape: [4, 2], data: half(8, 32) },
      { name: `${m1}.lokr_w2_b`, dtype: 'F16', shape: [2, 8], data: half(16, 33) },
      alphaTensor(m1, 3),
      { name: `${m2}.lokr_w1`, dtype: 'F16', shape: [3, 3], data: half(9, 34) },
      { name: `${m2}.lokr_w2`, dtype: 'F16', shape: [4, 4], data: half(16, 35) },
      alphaTensor(m2, 4),
    ]);
    const cfg = await sameMerge(file, 'lokr');
    assert.equal(cfg.peft_type, 'LOKR');
  });
});
