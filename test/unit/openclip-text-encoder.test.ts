/**
 * LoRAs on SDXL's second text encoder and SD 2.x's text encoder (OpenCLIP ViT-bigG / ViT-H): kohya names
 * (`lora_te2_text_model_encoder_layers_0_self_attn_q_proj`, `lora_te_…`) and diffusers names
 * (`text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj`) in CLIPTextModel's layout, merged onto a
 * diffusers folder (q_proj, k_proj, v_proj apart) and onto the original single file, whose
 * MultiheadAttention stacks them by rows in `in_proj_weight` / `in_proj_bias`. Both merges must give the
 * same model, bit for bit, each in its own layout.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { censusJob } from '../../src/engine/jobs/census';
import { convertAdapterJob } from '../../src/engine/jobs/convertAdapter';
import { estimateDiffusion } from '../../src/engine/jobs/estimateDiffusion';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { LensError } from '../../src/engine/errors';
import { PrecisionReport } from '../../src/shared/jobs/reports/precision';
import { ValidateReport } from '../../src/shared/jobs/reports/validate';
import { quietContext } from '../../src/engine/util/job';
import { randomF32, TestTensor, tmpDir, writeWeights } from './helpers/builders';
import { assertOneLineError, runCli } from './helpers/cli';
import { ClipDims, clipTextTensors, openClipFromHf, prefixed, writeSafetensorsFile, writeSparse } from './helpers/diffusion';
import { concatF32, matmul, readAll } from './helpers/tensors';
import { withKernels } from '../../src/engine/kernels/kernels';

const ctx = quietContext();
const kernels = new CpuKernels();
const D: ClipDims = { hidden: 8, layers: 2, intermediate: 16, vocab: 12, positions: 5 };
const H = D.hidden;

/** CLIPTextModel tensors with seeded values (kept, to build the fused single file from). */
function clipWithValues(seed: number, projection: boolean): Map<string, TestTensor> {
  const list = clipTextTensors(D);
  if (projection) list.push({ name: 'text_projection.weight', shape: [H, H] });
  return new Map(list.map((t, i) => [t.name, { ...t, data: randomF32(t.shape.reduce((a, b) => a * b, 1), seed + i, 0.5) }]));
}

/** A kohya LoRA module (alpha 3, r 2: a scale that is not a power of two). */
function kohyaLora(name: string, out: number, inn: number, seed: number): TestTensor[] {
  return [
    { name: `${name}.lora_down.weight`, shape: [2, inn], data: randomF32(2 * inn, seed, 0.5) },
    { name: `${name}.lora_up.weight`, shape: [out, 2], data: randomF32(out * 2, seed + 1, 0.5) },
    { name: `${name}.alpha`, shape: [], data: new Float32Array([3]) },
  ];
}

/** A LyCORIS LoKr module: w1 [2, 2] whole, w2 = a @ b of [out/2, in/2]. */
function lokr(name: string, out: number, inn: number, seed: number): TestTensor[] {
  return [
    { name: `${name}.lokr_w1`, shape: [2, 2], data: randomF32(4, seed, 0.5) },
    { name: `${name}.lokr_w2_a`, shape: [out / 2, 2], data: randomF32(out, seed + 1, 0.5) },
    { name: `${name}.lokr_w2_b`, shape: [2, inn / 2], data: randomF32(inn, seed + 2, 0.5) },
    { name: `${name}.alpha`, shape: [], data: new Float32Array([2]) },
  ];
}

function assertSameBits(a: Float32Array | undefined, b: Float32Array | undefined, name: string): void {
  assert.ok(a && b, `${name} missing`);
  assert.ok(Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength)), name);
}

/** The merged OpenCLIP single file against the merged diffusers text encoder, tensor by tensor in the other layout. */
function assertSameModel(single: Map<string, Float32Array>, prefix: string, split: Map<string, Float32Array>, component: string): void {
  for (let i = 0; i < D.layers; i++) {
    const l = `${component}text_model.encoder.layers.${i}`;
    const r = `${prefix}transformer.resblocks.${i}`;
    const qkv = ['q_proj', 'k_proj', 'v_proj'];
    for (const p of ['weight', 'bias']) {
      assertSameBits(single.get(`${r}.attn.in_proj_${p}`), concatF32(qkv.map((x) => split.get(`${l}.self_attn.${x}.${p}`)!)), `${r}.attn.in_proj_${p}`);
      assertSameBits(single.get(`${r}.attn.out_proj.${p}`), split.get(`${l}.self_attn.out_proj.${p}`), `${r}.attn.out_proj.${p}`);
      assertSameBits(single.get(`${r}.mlp.c_fc.${p}`), split.get(`${l}.mlp.fc1.${p}`), `${r}.mlp.c_fc.${p}`);
      assertSameBits(single.get(`${r}.mlp.c_proj.${p}`), split.get(`${l}.mlp.fc2.${p}`), `${r}.mlp.c_proj.${p}`);
      assertSameBits(single.get(`${r}.ln_1.${p}`), split.get(`${l}.layer_norm1.${p}`), `${r}.ln_1.${p}`);
    }
  }
}

describe("SDXL's second text encoder (OpenCLIP ViT-bigG): kohya and diffusers LoRAs on both layouts", () => {
  const root = tmpDir();
  const te1 = clipWithValues(100, false);
  const te2 = clipWithValues(500, true);
  // diffusers folder: text_encoder/ and text_encoder_2/ in CLIPTextModel(WithProjection)'s layout.
  const pipe = path.join(root, 'sdxl');
  fs.mkdirSync(pipe, { recursive: true });
  fs.writeFileSync(
    path.join(pipe, 'model_index.json'),
    JSON.stringify({ _class_name: 'StableDiffusionXLPipeline', text_encoder: ['transformers', 'CLIPTextModel'], text_encoder_2: ['transformers', 'CLIPTextModelWithProjection'] }),
  );
  writeWeights(path.join(pipe, 'text_encoder'), [...te1.values()], Infinity, 'model');
  writeWeights(path.join(pipe, 'text_encoder_2'), [...te2.values()], Infinity, 'model');
  // The single file: te1 in transformers' names, te2 in OpenCLIP's, as SDXL's sd_xl_base_1.0.safetensors holds them.
  const TE2 = 'conditioner.embedders.1.model.';
  const single = path.join(root, 'sd_xl_base.safetensors');
  writeSafetensorsFile(single, [
    ...prefixed('conditioner.embedders.0.transformer.', [...te1.values()]),
    ...openClipFromHf(TE2, te2, D),
    { name: `${TE2}text_projection`, shape: [H, H], data: 1 },
    { name: `${TE2}logit_scale`, shape: [], data: new Float32Array([4.6]) },
  ]);

  const layer = (i: number, m: string): string => `lora_te2_text_model_encoder_layers_${i}_${m}`;
  // Layer 0: LoRA on q, k, v, out_proj and fc1; layer 1: LoRA on q and LoKr on v (k left alone); te1: one LoRA.
  const kohya = writeSafetensorsFile(
    path.join(root, 'kohya', 'sdxl_te2.safetensors'),
    [
      ...['q_proj', 'k_proj', 'v_proj', 'out_proj'].flatMap((p, j) => kohyaLora(layer(0, `self_attn_${p}`), H, H, 10 + 2 * j)),
      ...kohyaLora(layer(0, 'mlp_fc1'), D.intermediate, H, 20),
      ...kohyaLora(layer(1, 'self_attn_q_proj'), H, H, 30),
      ...lokr(layer(1, 'self_attn_v_proj'), H, H, 40),
      ...kohyaLora('lora_te1_text_model_encoder_layers_1_self_attn_k_proj', H, H, 50),
    ],
    { ss_network_module: 'networks.lora', ss_base_model_version: 'sdxl_base_v1-0' },
  );

  it('merges the same model onto the diffusers folder and the single file (fp32 and fp16)', async () => {
    for (const dtype of ['fp32', 'fp16'] as const) {
      const a = await mergeJob({ base: pipe, adapter: kohya, out: path.join(root, `pipe-${dtype}`), dtype, rule: 'peft' }, withKernels(ctx, kernels));
      const b = await mergeJob({ base: single, adapter: kohya, out: path.join(root, `single-${dtype}`), dtype, rule: 'peft' }, withKernels(ctx, kernels));
      // 8 split modules onto the folder; onto the file, q/k/v of a layer are one fused tensor each.
      assert.equal(a.loraTensors, 8);
      assert.equal(b.loraTensors, 5);
      assert.deepEqual(b.files, ['sd_xl_base.safetensors']);
      const split = readAll(path.join(root, `pipe-${dtype}`));
      const fused = readAll(path.join(root, `single-${dtype}`));
      assertSameModel(fused, TE2, split, 'text_encoder_2.');
      assertSameBits(fused.get('conditioner.embedders.0.transformer.text_model.encoder.layers.1.self_attn.k_proj.weight'), split.get('text_encoder.text_model.encoder.layers.1.self_attn.k_proj.weight'), 'te1 k_proj');
    }
  });

  it("the fused rows are each module's own delta: q by the LoRA formula, k untouched where no module adapts it", () => {
    const merged = readAll(path.join(root, 'single-fp32'));
    const w = te2.get('text_model.encoder.layers.1.self_attn.q_proj.weight')!.data as Float32Array;
    const [down, up] = kohyaLora(layer(1, 'self_attn_q_proj'), H, H, 30).map((t) => t.data as Float32Array);
    const d = matmul(up, down, H, 2, H);
    const want = w.map((x, i) => Math.fround(x + Math.fround(Math.fround(d[i]) * 1.5)));
    const inProj = merged.get(`${TE2}transformer.resblocks.1.attn.in_proj_weight`)!;
    assertSameBits(inProj.subarray(0, H * H), want, 'q rows');
    assertSameBits(inProj.subarray(H * H, 2 * H * H), te2.get('text_model.encoder.layers.1.self_attn.k_proj.weight')!.data as Float32Array, 'k rows');
  });

  it('diffusers-named modules (text_encoder_2.…q_proj.lora_A) merge onto the single file as onto the folder', async () => {
    const names = ['q_proj', 'v_proj'];
    const file = writeSafetensorsFile(
      path.join(root, 'diffusers', 'pytorch_lora_weights.safetensors'),
      names.flatMap((p, j) => [
        { name: `text_encoder_2.text_model.encoder.layers.1.self_attn.${p}.lora_A.weight`, shape: [2, H], data: randomF32(2 * H, 60 + j, 0.5) },
        { name: `text_encoder_2.text_model.encoder.layers.1.self_attn.${p}.lora_B.weight`, shape: [H, 2], data: randomF32(2 * H, 70 + j, 0.5) },
      ]),
    );
    await mergeJob({ base: pipe, adapter: file, out: path.join(root, 'd-pipe'), dtype: 'bf16', rule: 'peft' }, withKernels(ctx, kernels));
    const rep = await mergeJob({ base: single, adapter: file, out: path.join(root, 'd-single'), dtype: 'bf16', rule: 'peft' }, withKernels(ctx, kernels));
    assert.equal(rep.loraTensors, 1);
    assertSameModel(readAll(path.join(root, 'd-single')), TE2, readAll(path.join(root, 'd-pipe')), 'text_encoder_2.');
  });

  it('a LyCORIS full diff with diff_b lands on its rows of in_proj_weight and in_proj_bias', async () => {
    const file = writeSafetensorsFile(path.join(root, 'full', 'l.safetensors'), [
      { name: layer(0, 'self_attn_k_proj.diff'), shape: [H, H], data: randomF32(H * H, 80, 0.5) },
      { name: layer(0, 'self_attn_k_proj.diff_b'), shape: [H], data: randomF32(H, 81, 0.5) },
    ]);
    await mergeJob({ base: pipe, adapter: file, out: path.join(root, 'f-pipe'), dtype: 'fp16', rule: 'peft' }, withKernels(ctx, kernels));
    await mergeJob({ base: single, adapter: file, out: path.join(root, 'f-single'), dtype: 'fp16', rule: 'peft' }, withKernels(ctx, kernels));
    assertSameModel(readAll(path.join(root, 'f-single')), TE2, readAll(path.join(root, 'f-pipe')), 'text_encoder_2.');
  });

  it('estimate counts each stacked module; convert asks for the diffusers layout; a misfit is bad input naming it', async () => {
    const est = estimateDiffusion(single, kohya, ctx);
    assert.equal(est.modules.length, 8);
    assert.equal(est.trainableParams, est.adapterFileParams);
    assert.ok(est.modules.some((m) => m.name === `${TE2}transformer.resblocks.0.attn.in_proj[8:16]`));
    await assert.rejects(convertAdapterJob(
      { input: kohya, out: path.join(root, 'conv'), base: single },
      ctx,
    ), (e: unknown) => e instanceof LensError && /in_proj_weight/.test(e.message) && /diffusers layout/.test(e.message));
    const wide = writeSafetensorsFile(path.join(root, 'wide', 'l.safetensors'), kohyaLora(layer(0, 'self_attn_v_proj'), 2 * H, H, 90));
    assertOneLineError(runCli(['merge', '--base', single, '--adapter', wide, '--out', path.join(root, 'x'), '--dtype', 'fp16']), 'lora_te2_text_model_encoder_layers_0_self_attn_v_proj', 'in_proj_weight');
  });

  it('validate and precision on the single file: the stacked deltas compare exactly, and count the elements they hold', () => {
    const out = path.join(root, 'validate');
    const r = runCli(['validate', '--base', single, '--adapter', kohya, '--out', out, '--dtypes', 'fp32']);
    assert.equal(r.status, 0, r.stderr);
    const [fp32] = (JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8')) as ValidateReport).dtypes;
    assert.equal(fp32.status, 'PASS', fp32.verdict);
    assert.equal(fp32.compare.shared, 5);
    assert.equal(fp32.compare.perfectMatches, 5);
    assert.equal(fp32.compare.equivalent, true);
    const json = path.join(root, 'precision.json');
    assert.equal(runCli(['precision', '--base', single, '--adapter', kohya, '--dtypes', 'bf16', '--json', json]).status, 0);
    // 8 modules of 8·8 (fc1 8·16) delta elements: layer 1's k rows in in_proj hold none.
    const rep = JSON.parse(fs.readFileSync(json, 'utf8')) as PrecisionReport;
    assert.equal(rep.dtypes.bf16!.deltaElements, 7 * H * H + D.intermediate * H);
    assert.equal(rep.dtypes.bf16!.adaptedTensors, 5);
  });

  it("resolves every te2 module on SDXL's header-true text tower (32 resblocks, width 1280)", () => {
    const dims: ClipDims = { hidden: 1280, layers: 32, intermediate: 5120, vocab: 49408, positions: 77 };
    const hf = new Map(clipTextTensors(dims, 'F16').map((t) => [t.name, t]));
    const file = writeSparse(path.join(root, 'xl-header', 'sd_xl_base_1.0.safetensors'), openClipFromHf(TE2, hf, dims));
    const adapter: TestTensor[] = [];
    for (let i = 0; i < 32; i++) {
      for (const [m, o, n] of [['self_attn_q_proj', 1280, 1280], ['self_attn_k_proj', 1280, 1280], ['self_attn_v_proj', 1280, 1280], ['self_attn_out_proj', 1280, 1280], ['mlp_fc1', 5120, 1280], ['mlp_fc2', 1280, 5120]] as const) {
        adapter.push({ name: `${layer(i, m)}.lora_down.weight`, shape: [4, n], dtype: 'F16' }, { name: `${layer(i, m)}.lora_up.weight`, shape: [o, 4], dtype: 'F16' });
      }
    }
    const lora = writeSparse(path.join(root, 'xl-lora', 'l.safetensors'), adapter);
    const rep = censusJob({ path: file, adapter: lora }, ctx);
    assert.equal(rep.summary.loraTargetTensors, 32 * 4);
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  });
});

describe("SD 2.x's text encoder (OpenCLIP ViT-H, cond_stage_model.model.…)", () => {
  const root = tmpDir();
  const te = clipWithValues(900, false);
  const folder = path.join(root, 'text_encoder');
  writeWeights(folder, [...te.values()], Infinity, 'model');
  const single = path.join(root, 'v2-1_768-ema-pruned.safetensors');
  writeSafetensorsFile(single, openClipFromHf('cond_stage_model.model.', te, D));
  const file = writeSafetensorsFile(
    path.join(root, 'kohya', 'sd2.safetensors'),
    ['q_proj', 'k_proj', 'v_proj'].flatMap((p, j) => kohyaLora(`lora_te_text_model_encoder_layers_1_self_attn_${p}`, H, H, 200 + 2 * j)),
  );

  it('a kohya lora_te_ file merges onto the single file as onto the transformers text encoder', async () => {
    await mergeJob({ base: folder, adapter: file, out: path.join(root, 'a'), dtype: 'fp16', rule: 'peft' }, withKernels(ctx, kernels));
    const rep = await mergeJob({ base: single, adapter: file, out: path.join(root, 'b'), dtype: 'fp16', rule: 'peft' }, withKernels(ctx, kernels));
    assert.equal(rep.loraTensors, 1);
    assertSameModel(readAll(path.join(root, 'b')), 'cond_stage_model.model.', readAll(path.join(root, 'a')), '');
  });
});
