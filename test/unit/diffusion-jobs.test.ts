/**
 * extract, precision and validate on image-model files, through the CLI: a kohya LoRA / LoCon file and a
 * LyCORIS LoHa file on a small Stable Diffusion base held two ways, a diffusers folder and the original
 * single file with the same values. Each report names the base's own tensors, and every figure is the same
 * in both layouts (and the one a test computes from the merged weights).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { ExtractReport } from '../../src/shared/jobs/reports/extract';
import { PrecisionReport } from '../../src/shared/jobs/reports/precision';
import { ValidateReport } from '../../src/shared/jobs/reports/validate';
import { randomF32, TestTensor, tmpDir, writeWeights } from './helpers/builders';
import { runCli } from './helpers/cli';
import { clipTextTensors, ldmNames, prefixed, sd15UnetTensors, writePipeline, writeSafetensorsFile } from './helpers/diffusion';
import { readAll } from './helpers/tensors';

const UNET = { channels: [8, 16, 32, 32] as [number, number, number, number], cross: 12, latent: 4 };
const CLIP = { hidden: 12, layers: 2, intermediate: 24, vocab: 50, positions: 7 };

/** Tensors with seeded values, so that both layouts hold the same numbers. */
function seeded(tensors: TestTensor[], seed: number): TestTensor[] {
  return tensors.map((t, i) => ({ ...t, data: randomF32(t.shape.reduce((a, b) => a * b, 1), seed + i, 0.5) }));
}

/** The single file's name of a diffusers-folder tensor. */
function singleName(name: string, unet: TestTensor[], ldm: TestTensor[]): string {
  if (name.startsWith('text_encoder.')) return `cond_stage_model.transformer.${name.slice('text_encoder.'.length)}`;
  return ldm[unet.findIndex((t) => `unet.${t.name}` === name)].name;
}

function cli(args: string[]): void {
  const r = runCli(args);
  assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
}

function json<T>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

describe('extract, precision and validate on kohya and LyCORIS files, on a diffusers folder and an original single file', () => {
  const root = tmpDir();
  const unet = seeded(sd15UnetTensors(UNET), 1);
  const te = seeded(clipTextTensors(CLIP), 5000);
  const ldm = ldmNames(unet);
  const pipe = writePipeline(path.join(root, 'pipe'), unet, te);
  const single = path.join(root, 'single');
  writeWeights(single, [...ldm, ...prefixed('cond_stage_model.transformer.', te)], Infinity, 'tiny-v1-5');
  const singleFile = path.join(single, 'tiny-v1-5.safetensors');
  const bases = { folder: pipe, single: singleFile };

  // kohya LoRA / LoCon: a 3x3 resnet conv, an attention projection, a 1x1 proj_in, a text encoder q_proj.
  const kohyaModules: Array<[string, string, number, number[]]> = [
    ['lora_unet_down_blocks_1_resnets_0_conv1', 'unet.down_blocks.1.resnets.0.conv1.weight', 16, [8, 3, 3]],
    ['lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_attn1_to_q', 'unet.up_blocks.1.attentions.2.transformer_blocks.0.attn1.to_q.weight', 32, [32]],
    ['lora_unet_mid_block_attentions_0_proj_in', 'unet.mid_block.attentions.0.proj_in.weight', 32, [32, 1, 1]],
    ['lora_te_text_model_encoder_layers_1_self_attn_q_proj', 'text_encoder.text_model.encoder.layers.1.self_attn.q_proj.weight', 12, [12]],
  ];
  const kohya = writeSafetensorsFile(
    path.join(root, 'kohya', 'locon.safetensors'),
    kohyaModules.flatMap(([m, , out, inShape], k) => {
      const inn = inShape.reduce((a, b) => a * b, 1);
      return [
        { name: `${m}.lora_down.weight`, shape: [2, ...inShape], data: randomF32(2 * inn, 10 + k, 0.5) },
        { name: `${m}.lora_up.weight`, shape: inShape.length > 1 ? [out, 2, 1, 1] : [out, 2], data: randomF32(2 * out, 20 + k, 0.5) },
        { name: `${m}.alpha`, shape: [], data: new Float32Array([1]) },
      ];
    }),
    { ss_network_module: 'lycoris.kohya', ss_network_args: '{"algo": "locon"}' },
  );
  // LyCORIS LoHa on a feed-forward projection and the text encoder's fc1.
  const lohaModules: Array<[string, string, number, number]> = [
    ['lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_ff_net_0_proj', 'unet.down_blocks.0.attentions.1.transformer_blocks.0.ff.net.0.proj.weight', 64, 8],
    ['lora_te_text_model_encoder_layers_0_mlp_fc1', 'text_encoder.text_model.encoder.layers.0.mlp.fc1.weight', 24, 12],
  ];
  const loha = writeSafetensorsFile(
    path.join(root, 'loha', 'loha.safetensors'),
    lohaModules.flatMap(([m, , out, inn], k) => [
      { name: `${m}.hada_w1_a`, shape: [out, 2], data: randomF32(2 * out, 30 + k, 0.5) },
      { name: `${m}.hada_w1_b`, shape: [2, inn], data: randomF32(2 * inn, 40 + k, 0.5) },
      { name: `${m}.hada_w2_a`, shape: [out, 2], data: randomF32(2 * out, 50 + k, 0.5) },
      { name: `${m}.hada_w2_b`, shape: [2, inn], data: randomF32(2 * inn, 60 + k, 0.5) },
      { name: `${m}.alpha`, shape: [], data: new Float32Array([3]) },
    ]),
  );

  it('extract: the task vector of the fp32 merge names the base own tensors, with the norms of merged - base', () => {
    const norms: Record<string, Map<string, number>> = {};
    for (const [layout, base] of Object.entries(bases)) {
      const merged = path.join(root, `merged-${layout}`);
      cli(['merge', '--base', base, '--adapter', kohya, '--out', merged, '--dtype', 'fp32']);
      const tv = path.join(root, `tv-${layout}.safetensors`);
      cli(['extract', '--base', base, '--finetuned', merged, '--out', tv, '--json', path.join(root, `extract-${layout}.json`)]);
      const rep = json<ExtractReport>(path.join(root, `extract-${layout}.json`));
      assert.equal(rep.summary.nonzeroTensors, kohyaModules.length, layout);
      const W = readAll(base);
      const M = readAll(merged);
      const T = readAll(tv);
      norms[layout] = new Map();
      for (const [, target] of kohyaModules) {
        const name = layout === 'folder' ? target : singleName(target, unet, ldm);
        const w = W.get(name)!;
        const m = M.get(name)!;
        let sq = 0;
        let nonzero = 0;
        for (let i = 0; i < w.length; i++) {
          const d = Math.fround(m[i] - w[i]);
          assert.equal(T.get(name)![i], d, `${name}[${i}]`);
          sq += d * d;
          if (d !== 0) nonzero++;
        }
        const t = rep.tensors.find((x) => x.name === name)!;
        assert.ok(t, `${layout}: ${name} in the report`);
        assert.equal(t.nonzeroElements, nonzero, name);
        assert.ok(Math.abs(t.l2Norm - Math.sqrt(sq)) <= 1e-12 * Math.sqrt(sq), name);
        norms[layout].set(target, t.l2Norm);
      }
    }
    assert.deepEqual([...norms.single], [...norms.folder]);
  });

  it('precision: the same delta elements, losses and errors in both layouts, reported under each base own names', () => {
    const reps: Record<string, PrecisionReport> = {};
    for (const [layout, base] of Object.entries(bases)) {
      const out = path.join(root, `precision-${layout}.json`);
      cli(['precision', '--base', base, '--adapter', loha, '--dtypes', 'fp16,bf16', '--json', out]);
      reps[layout] = json<PrecisionReport>(out);
    }
    const elements = lohaModules.reduce((a, [, , out, inn]) => a + out * inn, 0);
    for (const dtype of ['fp16', 'bf16'] as const) {
      const [f, s] = [reps.folder.dtypes[dtype]!, reps.single.dtypes[dtype]!];
      assert.equal(f.adaptedTensors, lohaModules.length);
      assert.equal(s.adaptedTensors, lohaModules.length);
      assert.equal(f.deltaElements, elements);
      assert.equal(s.deltaElements, elements);
      assert.equal(s.lostElements, f.lostElements, dtype);
      assert.ok(f.lostElements > 0 && f.lostElements < elements, `${dtype}: some, not all, delta elements are swallowed`);
      for (const [, target] of lohaModules) {
        const a = reps.folder.tensors.find((t) => t.name === target && t.dtype === dtype)!;
        const b = reps.single.tensors.find((t) => t.name === singleName(target, unet, ldm) && t.dtype === dtype)!;
        assert.ok(a && b && a.loraTarget && b.loraTarget, target);
        assert.deepEqual([b.lostElements, b.deltaSq, b.recoveredErrSq, b.changedElements], [a.lostElements, a.deltaSq, a.recoveredErrSq, a.changedElements], `${dtype} ${target}`);
      }
    }
  });

  it('validate: fp32 merges exactly (compare equivalent on every adapted tensor), fp16 an expected loss, no model kept', () => {
    for (const [layout, base] of Object.entries(bases)) {
      for (const [adapter, count] of [[kohya, kohyaModules.length], [loha, lohaModules.length]] as const) {
        const out = path.join(root, `validate-${layout}-${path.basename(adapter, '.safetensors')}`);
        cli(['validate', '--base', base, '--adapter', adapter, '--out', out, '--dtypes', 'fp32,fp16']);
        const rep = json<ValidateReport>(path.join(out, 'summary.json'));
        const [fp32, fp16] = rep.dtypes;
        assert.equal(fp32.status, 'PASS', `${layout} ${adapter}: ${fp32.verdict}`);
        assert.equal(fp32.merge.loraTensors, count);
        assert.equal(fp32.extract.nonzeroTensors, count);
        assert.equal(fp32.compare.shared, count);
        assert.equal(fp32.compare.perfectMatches, count);
        assert.equal(fp32.compare.taskVectorOnly, 0);
        assert.equal(fp32.compare.equivalent, true);
        // From an fp32 base every tensor changes at fp16 (the cast): a loss the report names, not a failure.
        assert.equal(fp16.status, 'EXPECTED-LOSS', `${layout} ${adapter}: ${fp16.verdict}`);
        assert.equal(fp16.merge.loraTensors, count);
        const files = fs.readdirSync(out, { recursive: true }).map(String);
        assert.ok(!files.some((f) => f.endsWith('.safetensors')), `${out} keeps no model: ${files.join(', ')}`);
      }
    }
  });
});
