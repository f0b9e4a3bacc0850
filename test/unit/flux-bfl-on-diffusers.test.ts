/**
 * FLUX LoRAs in Black Forest Labs' module names, as people save them — ComfyUI's and ai-toolkit's
 * `diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight`, ComfyUI's LoRA extraction
 * (`….lora_down.weight` / `.lora_up.weight`), `transformer.double_blocks…`, kohya-ss's
 * `lora_unet_double_blocks_0_img_attn_qkv` — on a diffusers FluxTransformer2DModel folder, whose fused BFL
 * projections are separate modules: each takes its row block of the fused delta, so the merge equals the
 * merge onto the BFL single file bit for bit. LyCORIS methods on a fused projection split the same way
 * (their output-side factors' rows; a LoKr its rows of the Kronecker product), or are refused in one line.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { adapterLayout } from '../../src/engine/checkpoint/adapter';
import { closeCheckpoint, openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { censusJob } from '../../src/engine/jobs/census';
import { convertAdapterJob } from '../../src/engine/jobs/convertAdapter';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { withKernels } from '../../src/engine/kernels/kernels';
import { assertLowRank } from '../../src/engine/unmerge/lora';
import { quietContext } from '../../src/engine/util/job';
import { randomF32, TestTensor, tmpDir, writeWeights } from './helpers/builders';
import { assertOneLineError, runCli } from './helpers/cli';
import { bflFromDiffusers, bflValues, fluxTensors, writeSafetensorsFile } from './helpers/diffusion';
import { readAll } from './helpers/tensors';

const ctx = quietContext();
const kernels = new CpuKernels();

describe('BFL-named FLUX LoRAs (ComfyUI, ai-toolkit, kohya) on a diffusers FLUX transformer folder', () => {
  const root = tmpDir();
  const H = 8;
  const C = 16;
  const seeded = (t: TestTensor, i: number): TestTensor => ({ ...t, data: randomF32(t.shape.reduce((a, b) => a * b, 1), 500 + i, 0.5) });
  const diffusers = new Map(fluxTensors(H, 2, 2, C).map((t, i) => [t.name, seeded(t, i)]));
  const folder = path.join(root, 'FLUX.1-dev', 'transformer');
  // Sharded, as diffusers saves FLUX.1-dev's transformer (diffusion_pytorch_model-0000N-of-0000M.safetensors).
  writeWeights(folder, [...diffusers.values()], 6000, 'diffusion_pytorch_model');
  const bfl = bflFromDiffusers(diffusers, 2, 2);
  const single = writeSafetensorsFile(path.join(root, 'flux1-dev.safetensors'), bfl);
  const shape = new Map(bfl.map((t) => [t.name.replace(/\.weight$/, ''), t.shape]));

  /** BFL module -> how many diffusers tensors it is (fused projections several). */
  const modules: Array<[string, number]> = [
    ['double_blocks.0.img_attn.qkv', 3],
    ['double_blocks.1.txt_attn.qkv', 3],
    ['double_blocks.0.img_attn.proj', 1],
    ['double_blocks.1.img_mlp.0', 1],
    ['double_blocks.0.txt_mod.lin', 1],
    ['single_blocks.0.linear1', 4],
    ['single_blocks.1.linear1', 4],
    ['single_blocks.1.linear2', 1],
    ['img_in', 1],
    ['time_in.in_layer', 1],
  ];
  const kohya = (m: string): string => `lora_unet_${m.replace(/\./g, '_')}`;
  /** The naming forms, each a module's key prefix, its down / up tails, and whether it saves alpha. */
  const forms: Array<{ form: string; key: (m: string) => string; down: string; up: string; alpha: boolean }> = [
    { form: 'ComfyUI / ai-toolkit (diffusion_model., lora_A/B)', key: (m) => `diffusion_model.${m}`, down: 'lora_A.weight', up: 'lora_B.weight', alpha: true },
    { form: 'ComfyUI LoRA extraction (diffusion_model., lora_down/up, no alpha)', key: (m) => `diffusion_model.${m}`, down: 'lora_down.weight', up: 'lora_up.weight', alpha: false },
    { form: 'transformer. prefix (lora_A/B)', key: (m) => `transformer.${m}`, down: 'lora_A.weight', up: 'lora_B.weight', alpha: false },
    { form: 'kohya-ss (lora_unet_…)', key: kohya, down: 'lora_down.weight', up: 'lora_up.weight', alpha: true },
  ];
  const loraFile = (dir: string, f: (typeof forms)[number]): string =>
    writeSafetensorsFile(
      path.join(root, dir, 'flux_lora.safetensors'),
      modules.flatMap(([m], i) => {
        const [out, inn] = shape.get(m)!;
        const r = 2 + (i % 3);
        return [
          { name: `${f.key(m)}.${f.down}`, shape: [r, inn], data: randomF32(r * inn, 40 + 2 * i, 0.5) },
          { name: `${f.key(m)}.${f.up}`, shape: [out, r], data: randomF32(out * r, 41 + 2 * i, 0.5) },
          ...(f.alpha ? [{ name: `${f.key(m)}.alpha`, shape: [], data: new Float32Array([r + 1.5]) }] : []),
        ];
      }),
    );

  /** Merges `adapter` onto the folder and onto the single file at `dtype`; asserts the two merged models equal bit for bit. */
  const sameMerge = async (adapter: string, dtype: 'fp32' | 'bf16' | 'fp16', tag: string): Promise<{ folder: number; single: number }> => {
    const d = await mergeJob({ base: folder, adapter, out: path.join(root, `${tag}-d-${dtype}`), dtype, rule: 'peft' }, withKernels(ctx, kernels));
    const b = await mergeJob({ base: single, adapter, out: path.join(root, `${tag}-b-${dtype}`), dtype, rule: 'peft' }, withKernels(ctx, kernels));
    const want = readAll(path.join(root, `${tag}-b-${dtype}`));
    const got = bflValues(diffusers, path.join(root, `${tag}-d-${dtype}`), 2, 2);
    assert.equal(got.size, want.size);
    for (const [name, w] of want) assert.ok(Buffer.from(got.get(name)!.buffer).equals(Buffer.from(w.buffer)), `${tag} ${dtype} ${name}`);
    return { folder: d.loraTensors, single: b.loraTensors };
  };

  for (const [i, f] of forms.entries()) {
    it(`${f.form}: merges onto the diffusers folder as onto the BFL file, bit for bit (fp32, bf16)`, async () => {
      const file = loraFile(`form${i}`, f);
      for (const dtype of ['fp32', 'bf16'] as const) {
        const n = await sameMerge(file, dtype, `form${i}`);
        assert.deepEqual(n, { folder: modules.reduce((a, [, k]) => a + k, 0), single: modules.length });
      }
      // census counts the targets on each base, and the adapter's trained elements once (a fused up's rows are split, its down shared).
      const trained = modules.reduce((a, [m], j) => a + (2 + (j % 3)) * shape.get(m)!.reduce((x, y) => x + y, 0), 0);
      for (const [base, targets] of [[folder, modules.reduce((a, [, k]) => a + k, 0)], [single, modules.length]] as const) {
        const rep = censusJob({ path: base, adapter: file }, ctx);
        assert.equal(rep.summary.loraTargetTensors, targets, base);
        assert.equal(rep.adapter!.loraParams, trained, base);
      }
    });
  }

  it('on the diffusers pipeline folder (model_index.json beside transformer/), the transformer merges as its folder alone does', async () => {
    const pipeline = path.join(root, 'pipeline');
    writeWeights(path.join(pipeline, 'transformer'), [...diffusers.values()], Infinity, 'diffusion_pytorch_model');
    fs.writeFileSync(path.join(pipeline, 'model_index.json'), JSON.stringify({ _class_name: 'FluxPipeline', _diffusers_version: '0.30.0', transformer: ['diffusers', 'FluxTransformer2DModel'] }));
    for (const [i, f] of [forms[0], forms[3]].entries()) {
      const file = loraFile(`pipe${i}`, f);
      await mergeJob({ base: pipeline, adapter: file, out: path.join(root, `pipe${i}-p`), dtype: 'bf16', rule: 'peft' }, withKernels(ctx, kernels));
      await mergeJob({ base: folder, adapter: file, out: path.join(root, `pipe${i}-t`), dtype: 'bf16', rule: 'peft' }, withKernels(ctx, kernels));
      const got = readAll(path.join(root, `pipe${i}-p`, 'transformer'));
      const want = readAll(path.join(root, `pipe${i}-t`));
      assert.equal(got.size, want.size);
      for (const [name, w] of want) assert.ok(Buffer.from(got.get(name)!.buffer).equals(Buffer.from(w.buffer)), `${f.form} ${name}`);
    }
  });

  it('converted against the diffusers folder, a ComfyUI-named file is a PEFT adapter of to_q, to_k, … whose merge has the same bytes', async () => {
    const file = loraFile('convert', forms[0]);
    const peft = path.join(root, 'convert-peft');
    const rep = await convertAdapterJob({ input: file, out: peft, base: folder }, ctx);
    assert.equal(rep.modules, modules.reduce((a, [, k]) => a + k, 0));
    await mergeJob({ base: folder, adapter: peft, out: path.join(root, 'convert-merged'), dtype: 'fp32', rule: 'peft' }, withKernels(ctx, kernels));
    await mergeJob({ base: folder, adapter: file, out: path.join(root, 'convert-direct'), dtype: 'fp32', rule: 'peft' }, withKernels(ctx, kernels));
    const got = readAll(path.join(root, 'convert-merged'));
    for (const [name, w] of readAll(path.join(root, 'convert-direct'))) assert.ok(Buffer.from(got.get(name)!.buffer).equals(Buffer.from(w.buffer)), name);
  });

  it('LyCORIS LoHa, LoKr, full diffs and DoRA per output row on fused projections split by rows as well, in kohya and ComfyUI naming', async () => {
    const R = (n: number, s: number): Float32Array => randomF32(n, s, 0.5);
    const lyco = (key: (m: string) => string): TestTensor[] => [
      // LoHa on img qkv [24, 8]: hada_w1_a / hada_w2_a [out, r] hold the rows.
      { name: `${key('double_blocks.0.img_attn.qkv')}.hada_w1_a`, shape: [3 * H, 2], data: R(6 * H, 1) },
      { name: `${key('double_blocks.0.img_attn.qkv')}.hada_w1_b`, shape: [2, H], data: R(2 * H, 2) },
      { name: `${key('double_blocks.0.img_attn.qkv')}.hada_w2_a`, shape: [3 * H, 2], data: R(6 * H, 3) },
      { name: `${key('double_blocks.0.img_attn.qkv')}.hada_w2_b`, shape: [2, H], data: R(2 * H, 4) },
      { name: `${key('double_blocks.0.img_attn.qkv')}.alpha`, shape: [], data: new Float32Array([3]) },
      // LoKr on txt qkv: kron(w1 [3, 2], w2 [8, 4]), each part's 8 rows one row of w1.
      { name: `${key('double_blocks.1.txt_attn.qkv')}.lokr_w1`, shape: [3, 2], data: R(6, 5) },
      { name: `${key('double_blocks.1.txt_attn.qkv')}.lokr_w2`, shape: [H, 4], data: R(4 * H, 6) },
      // LoKr with a factored w1 on linear1 [56, 8]: w1 = w1_a [4, 2] @ w1_b [2, 2], w2 [14, 4], whose runs of
      // 14 rows straddle to_q, to_k, to_v (8 rows each) and proj_mlp, as LyCORIS's factorization(21504) = 128 × 168 does on FLUX.1.
      { name: `${key('single_blocks.0.linear1')}.lokr_w1_a`, shape: [4, 2], data: R(8, 7) },
      { name: `${key('single_blocks.0.linear1')}.lokr_w1_b`, shape: [2, 2], data: R(4, 8) },
      { name: `${key('single_blocks.0.linear1')}.lokr_w2`, shape: [14, 4], data: R(56, 9) },
      { name: `${key('single_blocks.0.linear1')}.alpha`, shape: [], data: new Float32Array([1]) },
      // A full diff with its bias on the other single block's linear1.
      { name: `${key('single_blocks.1.linear1')}.diff`, shape: [7 * H, H], data: R(7 * H * H, 10) },
      { name: `${key('single_blocks.1.linear1')}.diff_b`, shape: [7 * H], data: R(7 * H, 11) },
      // LyCORIS DoRA per output row (wd_on_output) on img qkv of block 1: each part takes its rows of dora_scale.
      { name: `${key('double_blocks.1.img_attn.qkv')}.lora_down.weight`, shape: [2, H], data: R(2 * H, 14) },
      { name: `${key('double_blocks.1.img_attn.qkv')}.lora_up.weight`, shape: [3 * H, 2], data: R(6 * H, 15) },
      { name: `${key('double_blocks.1.img_attn.qkv')}.dora_scale`, shape: [3 * H, 1], data: randomF32(3 * H, 16, 0.5).map((x) => 1 + x) },
      // And a LoRA on a renamed module beside them.
      { name: `${key('double_blocks.1.img_mlp.0')}.lora_down.weight`, shape: [2, H], data: R(2 * H, 12) },
      { name: `${key('double_blocks.1.img_mlp.0')}.lora_up.weight`, shape: [4 * H, 2], data: R(8 * H, 13) },
    ];
    for (const [tag, key] of [['lyco-kohya', kohya], ['lyco-comfy', (m: string) => `diffusion_model.${m}`]] as const) {
      const file = writeSafetensorsFile(path.join(root, tag, 'l.safetensors'), lyco(key));
      for (const dtype of ['fp32', 'bf16'] as const) assert.deepEqual(await sameMerge(file, dtype, tag), { folder: 3 + 3 + 4 + 4 + 4 + 3 + 1, single: 7 });
    }
  });

  it('a dora_scale per input channel, a delta of the wrong size, or converting a LoKr split by rows to PEFT, is refused in one line naming it', () => {
    const dora = writeSafetensorsFile(path.join(root, 'dora-in', 'l.safetensors'), [
      { name: 'lora_unet_single_blocks_0_linear1.lora_down.weight', shape: [2, H], data: 1 },
      { name: 'lora_unet_single_blocks_0_linear1.lora_up.weight', shape: [7 * H, 2], data: 2 },
      { name: 'lora_unet_single_blocks_0_linear1.dora_scale', shape: [1, H], data: 3 },
    ]);
    assertOneLineError(runCli(['merge', '--base', folder, '--adapter', dora, '--out', path.join(root, 'z'), '--dtype', 'bf16']), 'lora_unet_single_blocks_0_linear1.dora_scale', 'input channel', 'proj_mlp');
    const lokr = writeSafetensorsFile(path.join(root, 'lokr', 'l.safetensors'), [
      { name: 'lora_unet_double_blocks_0_img_attn_qkv.lokr_w1', shape: [4, 2], data: 1 },
      { name: 'lora_unet_double_blocks_0_img_attn_qkv.lokr_w2', shape: [6, 4], data: 2 },
    ]);
    assertOneLineError(runCli(['convert', '--in', lokr, '--out', path.join(root, 'x'), '--base', folder]), 'transformer_blocks.0.attn.to_q', 'LoKr', 'BFL single file');
    const wide = writeSafetensorsFile(path.join(root, 'wide', 'l.safetensors'), [
      { name: 'diffusion_model.single_blocks.0.linear1.lora_A.weight', shape: [2, H], data: 1 },
      { name: 'diffusion_model.single_blocks.0.linear1.lora_B.weight', shape: [6 * H, 2], data: 2 },
    ]);
    assertOneLineError(runCli(['merge', '--base', folder, '--adapter', wide, '--out', path.join(root, 'y'), '--dtype', 'bf16']), 'diffusion_model.single_blocks.0.linear1.lora_B.weight', 'proj_mlp');
  });

  it('UNMERGE refuses a fused tensor that several modules stack onto by naming it and saying why', () => {
    const parts = writeSafetensorsFile(
      path.join(root, 'parts', 'pytorch_lora_weights.safetensors'),
      ['to_q', 'to_k', 'to_v'].flatMap((p, i) => [
        { name: `transformer.transformer_blocks.0.attn.${p}.lora_A.weight`, shape: [2, H], data: randomF32(2 * H, 70 + i) },
        { name: `transformer.transformer_blocks.0.attn.${p}.lora_B.weight`, shape: [H, 2], data: randomF32(2 * H, 80 + i) },
      ]),
    );
    const adapter = openCheckpoint(parts);
    const base = openCheckpoint(single);
    try {
      const [m] = adapterLayout(adapter, base).modules;
      assert.throws(
        () => assertLowRank(adapter, m),
        (e: Error) => /double_blocks\.0\.img_attn\.qkv/.test(e.message) && /transformer\.transformer_blocks\.0\.attn\.to_q/.test(e.message) && !/stacked\)/.test(e.message) && !e.message.includes('\n'),
      );
    } finally {
      closeCheckpoint(adapter);
      closeCheckpoint(base);
    }
  });
});
