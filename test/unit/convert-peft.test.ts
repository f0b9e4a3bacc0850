/**
 * `convert` of mlx-lm, AdaLoRA, VeRA and old MergedLinear adapters (each in its exact on-disk layout; the
 * mlx-lm one real) into a PEFT LoRA folder, checked as the kohya convert is: the fp32 merge of the
 * converted folder against the same base has the same bytes as the merge of the original. AdaLoRA is
 * the exception the converter states: PEFT rounds its delta three times, so one ulp is allowed there,
 * and the number of elements that differ is asserted small rather than hidden.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { closeCheckpoint, openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { alphaFor } from '../../src/engine/jobs/convertAdapter';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { quietContext } from '../../src/engine/util/job';
import { OUTPUT_MARKER } from '../../src/engine/util/outputDir';
import { assertOneLineError, runCli } from './helpers/cli';
import { FIXTURES, randomF32, rng, tmpDir, writeAdapter, writeModel, writeWeights } from './helpers/builders';
import { readAll } from './helpers/tensors';
import { withKernels } from '../../src/engine/kernels/kernels';

const kernels = new CpuKernels();
const root = tmpDir();
const P = 'base_model.model.';
let n = 0;

/** The fp32 merged tensors of `adapter` on `base`, as raw bytes by name. */
async function mergedBytes(base: string, adapter: string): Promise<Map<string, Buffer>> {
  const out = path.join(root, `merged${n++}`);
  await mergeJob({ base, adapter, out, dtype: 'fp32', rule: 'peft' }, withKernels(quietContext(), kernels));
  const c = openCheckpoint(out);
  try {
    return new Map(c.tensors.map((t) => [t.name, Buffer.from(c.handles.readBytesSync(t, new Uint8Array(t.byteLength)))]));
  } finally {
    closeCheckpoint(c);
  }
}

/** Elements whose fp32 bits differ between two merges, and the largest distance in ulps. */
function ulpDiff(a: Map<string, Buffer>, b: Map<string, Buffer>): { differ: number; maxUlp: number } {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  let differ = 0;
  let maxUlp = 0;
  for (const [name, x] of a) {
    const y = b.get(name)!;
    const xi = new Int32Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.length));
    const yi = new Int32Array(y.buffer.slice(y.byteOffset, y.byteOffset + y.length));
    for (let i = 0; i < xi.length; i++) {
      if (xi[i] === yi[i]) continue;
      differ++;
      maxUlp = Math.max(maxUlp, Math.abs(xi[i] - yi[i]));
    }
  }
  return { differ, maxUlp };
}

/** convert through the CLI into a fresh folder; returns it and its config. */
function convert(input: string, base?: string): { dir: string; config: Record<string, unknown> } {
  const dir = path.join(root, `peft${n++}`);
  const r = runCli(['convert', '--in', input, '--out', dir, ...(base ? ['--base', base] : [])]);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f !== OUTPUT_MARKER).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
  return { dir, config: JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown> };
}

function keys(dir: string): string[] {
  const c = openCheckpoint(dir);
  try {
    return c.tensors.map((t) => t.name).sort();
  } finally {
    closeCheckpoint(c);
  }
}

describe('convert of mlx-lm, AdaLoRA, VeRA and MergedLinear adapters to PEFT LoRA', () => {
  it('alphaFor: PEFT\'s fp32 scale f(alpha / r) is f(scale) for any scale and rank', () => {
    const r = rng(7);
    for (let i = 0; i < 20000; i++) {
      const scale = Math.abs(r()) * 10 ** Math.round(r() * 4);
      const rank = 1 + Math.floor(Math.abs(r()) * 300);
      assert.equal(Math.fround(alphaFor(scale, rank) / rank), Math.fround(scale), `scale ${scale}, rank ${rank}`);
    }
  });

  it('the real mlx-lm Qwen2.5-0.5B adapter: factors transposed under PEFT keys, r 8 and alpha 80 (scale 10), the same fp32 merge bit for bit', async () => {
    const mlx = path.join(FIXTURES, 'real-adapters-2', 'mlx-lm-qwen2.5-0.5b-lora');
    const shapes: Array<[string, number, number]> = [];
    for (let l = 20; l < 24; l++) shapes.push([`model.layers.${l}.self_attn.q_proj`, 896, 896], [`model.layers.${l}.self_attn.v_proj`, 128, 896]);
    const base = writeModel(path.join(root, 'qwen'), { model_type: 'qwen2', architectures: ['Qwen2ForCausalLM'] }, shapes.map(([m, out, inn], i) => ({ name: `${m}.weight`, shape: [out, inn], data: randomF32(out * inn, 500 + i, 0.05) })));
    const { dir, config } = convert(mlx);
    assert.deepEqual([config.peft_type, config.r, config.lora_alpha, config.rank_pattern, config.alpha_pattern, config.use_dora], ['LORA', 8, 80, {}, {}, false]);
    assert.deepEqual((config.target_modules as string[]).slice().sort(), shapes.map(([m]) => m).sort());
    assert.deepEqual(keys(dir), shapes.flatMap(([m]) => [`${P}${m}.lora_A.weight`, `${P}${m}.lora_B.weight`]).sort());
    // lora_A [r, in] is mlx-lm's lora_a [in, r] transposed.
    const orig = readAll(mlx);
    const conv = readAll(dir);
    const a = orig.get('model.layers.21.self_attn.v_proj.lora_a')!;
    const A = conv.get(`${P}model.layers.21.self_attn.v_proj.lora_A.weight`)!;
    assert.equal(A[3 * 896 + 17], a[17 * 8 + 3]);
    const d = ulpDiff(await mergedBytes(base, mlx), await mergedBytes(base, dir));
    assert.deepEqual(d, { differ: 0, maxUlp: 0 });
  });

  it('mlx-lm with a scale that is no power of two and rank 6 (alpha chosen so that f(alpha / r) = f(scale)): bit for bit', async () => {
    const base = writeModel(path.join(root, 'small'), { model_type: 'llama' }, [{ name: 'model.layers.0.mlp.up_proj.weight', shape: [10, 12], data: 1 }]);
    const mlx = path.join(root, 'mlx-odd');
    writeWeights(mlx, [
      { name: 'model.layers.0.mlp.up_proj.lora_a', shape: [12, 6], data: 2 },
      { name: 'model.layers.0.mlp.up_proj.lora_b', shape: [6, 10], data: 3 },
    ], Infinity, 'adapters');
    fs.writeFileSync(path.join(mlx, 'adapter_config.json'), JSON.stringify({ fine_tune_type: 'lora', num_layers: 1, lora_parameters: { rank: 6, scale: 0.7, dropout: 0 } }));
    const { dir, config } = convert(mlx);
    assert.equal(config.r, 6);
    assert.equal(Math.fround((config.lora_alpha as number) / 6), Math.fround(0.7));
    assert.deepEqual(ulpDiff(await mergedBytes(base, mlx), await mergedBytes(base, dir)), { differ: 0, maxUlp: 0 });
  });

  it('mlx-lm DoRA (fine_tune_type dora, magnitude m): a PEFT DoRA adapter (use_dora, lora_magnitude_vector), bit for bit', async () => {
    const base = writeModel(path.join(root, 'dora-base'), { model_type: 'llama' }, [{ name: 'model.layers.0.self_attn.v_proj.weight', shape: [6, 12], data: 4 }]);
    const mlx = path.join(root, 'mlx-dora');
    writeWeights(mlx, [
      { name: 'model.layers.0.self_attn.v_proj.lora_a', shape: [12, 4], data: 5 },
      { name: 'model.layers.0.self_attn.v_proj.lora_b', shape: [4, 6], data: 6 },
      { name: 'model.layers.0.self_attn.v_proj.m', shape: [6], data: 7 },
    ], Infinity, 'adapters');
    fs.writeFileSync(path.join(mlx, 'adapter_config.json'), JSON.stringify({ fine_tune_type: 'dora', num_layers: 1, lora_parameters: { rank: 4, scale: 20, dropout: 0 } }));
    const { dir, config } = convert(mlx);
    assert.deepEqual([config.use_dora, config.r, config.lora_alpha], [true, 4, 80]);
    assert.ok(keys(dir).includes(`${P}model.layers.0.self_attn.v_proj.lora_magnitude_vector`));
    assert.deepEqual(ulpDiff(await mergedBytes(base, mlx), await mergedBytes(base, dir)), { differ: 0, maxUlp: 0 });
  });

  const L = 'model.layers.0';
  const llama = writeModel(path.join(root, 'llama'), { model_type: 'llama' }, [
    { name: `${L}.self_attn.q_proj.weight`, shape: [8, 6], data: 11 },
    { name: `${L}.self_attn.k_proj.weight`, shape: [4, 6], data: 12 },
    { name: `${L}.mlp.up_proj.weight`, shape: [10, 6], data: 13 },
  ]);

  it('AdaLoRA (A ⊙ E folded into lora_A, ranks as saved): one LoRA scale per module, within one ulp of PEFT\'s three roundings', async (t) => {
    const ada = writeAdapter(path.join(root, 'adalora'), { peft_type: 'ADALORA', init_r: 4, target_r: 3, r: 8, lora_alpha: 32, target_modules: ['q_proj', 'up_proj'], rank_pattern: {}, fan_in_fan_out: false, task_type: 'CAUSAL_LM' }, [
      { name: `${P}${L}.self_attn.q_proj.lora_A`, shape: [3, 6], data: 21 },
      { name: `${P}${L}.self_attn.q_proj.lora_B`, shape: [8, 3], data: 22 },
      { name: `${P}${L}.self_attn.q_proj.lora_E`, shape: [3, 1], data: 23 },
      { name: `${P}${L}.mlp.up_proj.lora_A`, shape: [2, 6], data: 24 },
      { name: `${P}${L}.mlp.up_proj.lora_B`, shape: [10, 2], data: 25 },
      { name: `${P}${L}.mlp.up_proj.lora_E`, shape: [2, 1], data: 26 },
    ]);
    const { dir, config } = convert(ada);
    // Ranks 3 and 2 (one module each: the smaller is r, the other a pattern).
    assert.deepEqual([config.peft_type, config.r, config.rank_pattern], ['LORA', 2, { [`${L}.self_attn.q_proj`]: 3 }]);
    // PEFT's fp32 scale f(alpha / r) is the one a single rounding of 32 / f(r + 1e-5) gives.
    const alphaQ = (config.alpha_pattern as Record<string, number>)[`${L}.self_attn.q_proj`];
    assert.equal(Math.fround(alphaQ / 3), Math.fround(32 / Math.fround(3 + Math.fround(1e-5))));
    assert.equal(Math.fround((config.lora_alpha as number) / 2), Math.fround(32 / Math.fround(2 + Math.fround(1e-5))));
    const d = ulpDiff(await mergedBytes(llama, ada), await mergedBytes(llama, dir));
    t.diagnostic(`AdaLoRA converted: ${d.differ} of 108 adapted elements differ from the original's fp32 merge, by at most ${d.maxUlp} ulp`);
    assert.ok(d.maxUlp <= 1, `${d.differ} elements differ, by up to ${d.maxUlp} ulp`);
    assert.ok(d.differ < (8 * 6 + 10 * 6) / 4, `${d.differ} of 108 adapted elements differ by one ulp`);
  });

  it('VeRA (λ_d · vera_A[:, :in], λ_b · vera_B[:out]): needs --base for the slices, then bit for bit', async () => {
    const vera = writeAdapter(path.join(root, 'vera'), { peft_type: 'VERA', r: 3, target_modules: ['q_proj', 'k_proj'], save_projection: true, projection_prng_key: 0, fan_in_fan_out: false }, [
      { name: 'base_model.vera_A', shape: [3, 10], data: 31 },
      { name: 'base_model.vera_B', shape: [10, 3], data: 32 },
      { name: `${P}${L}.self_attn.q_proj.vera_lambda_b`, shape: [8], data: 33 },
      { name: `${P}${L}.self_attn.q_proj.vera_lambda_d`, shape: [3], data: 34 },
      { name: `${P}${L}.self_attn.k_proj.vera_lambda_b`, shape: [4], data: 35 },
      { name: `${P}${L}.self_attn.k_proj.vera_lambda_d`, shape: [3], data: 36 },
    ]);
    assertOneLineError(runCli(['convert', '--in', vera, '--out', path.join(root, 'vera-nobase')]), vera, '--base');
    assert.equal(fs.existsSync(path.join(root, 'vera-nobase')), false);
    const { dir, config } = convert(vera, llama);
    assert.deepEqual([config.peft_type, config.r, config.lora_alpha], ['LORA', 3, 3]);
    const A = readAll(dir).get(`${P}${L}.self_attn.k_proj.lora_A.weight`)!;
    assert.equal(A.length, 3 * 6);
    assert.deepEqual(ulpDiff(await mergedBytes(llama, vera), await mergedBytes(llama, dir)), { differ: 0, maxUlp: 0 });
  });

  it('old MergedLinear (enable_lora [true, false, true]): one LoRA of rank r · 2 on the fused module, zero rows for the disabled slice, bit for bit', async () => {
    const bloom = writeModel(path.join(root, 'bloom'), { model_type: 'bloom' }, [{ name: 'h.0.self_attention.query_key_value.weight', shape: [18, 6], data: 41 }]);
    const ml = writeAdapter(path.join(root, 'merged-linear'), { peft_type: 'LORA', r: 2, lora_alpha: 6, enable_lora: [true, false, true], target_modules: ['query_key_value'], fan_in_fan_out: false, merge_weights: false, bias: 'none' }, [
      { name: `${P}transformer.h.0.self_attention.query_key_value.lora_A.weight`, shape: [4, 6], data: 42 },
      { name: `${P}transformer.h.0.self_attention.query_key_value.lora_B.weight`, shape: [12, 2, 1], data: 43 },
    ]);
    const { dir, config } = convert(ml, bloom);
    // scale 6 / 2 = 3 over rank 4: alpha 12.
    assert.deepEqual([config.r, config.lora_alpha, config.target_modules], [4, 12, ['transformer.h.0.self_attention.query_key_value']]);
    const B = readAll(dir).get(`${P}transformer.h.0.self_attention.query_key_value.lora_B.weight`)!;
    assert.equal(B.length, 18 * 4);
    assert.ok(B.subarray(6 * 4, 12 * 4).every((x) => x === 0), 'the disabled k slice has no delta');
    assert.ok(B.subarray(0, 6 * 4).every((x, i) => (i % 4 < 2) === (x !== 0)), 'q takes group 0 only');
    assert.deepEqual(ulpDiff(await mergedBytes(bloom, ml), await mergedBytes(bloom, dir)), { differ: 0, maxUlp: 0 });
  });

  it('a PEFT folder in safetensors is one already: refused in one line, nothing written', () => {
    const lora = writeAdapter(path.join(root, 'plain'), { peft_type: 'LORA', r: 2, lora_alpha: 2, target_modules: ['q_proj'] }, [
      { name: `${P}${L}.self_attn.q_proj.lora_A.weight`, shape: [2, 6], data: 1 },
      { name: `${P}${L}.self_attn.q_proj.lora_B.weight`, shape: [8, 2], data: 2 },
    ]);
    assertOneLineError(runCli(['convert', '--in', lora, '--out', path.join(root, 'plain-out')]), lora, 'already');
    assert.equal(fs.existsSync(path.join(root, 'plain-out')), false);
  });
});
