/**
 * Every adapter format in its exact on-disk layout (key names, shapes, configs as each tool saves them),
 * merged at fp32 and checked against the format's own formula computed here in float64.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { adapterLayout } from '../../src/engine/checkpoint/adapter';
import { closeCheckpoint, openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { LensError } from '../../src/engine/errors';
import { censusJob } from '../../src/engine/jobs/census';
import { compareJob } from '../../src/engine/jobs/compare';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { quietContext } from '../../src/engine/util/job';
import { lowRank, peftConfig, randomF32, TestTensor, tmpDir, writeAdapter, writeModel } from './helpers/builders';
import { readAll, matmul } from './helpers/tensors';
import { assertOneLineError, runCli } from './helpers/cli';
import { withKernels } from '../../src/engine/kernels/kernels';

const kernels = new CpuKernels();
const root = tmpDir();
let n = 0;
const P = 'base_model.model.';
const L = 'model.layers.0';

/** A Qwen-like layer: q [8, 6], k [4, 6] with a bias, up [10, 6], down [6, 10]. */
const SHAPES: Record<string, [number, number]> = { 'self_attn.q_proj': [8, 6], 'self_attn.k_proj': [4, 6], 'mlp.up_proj': [10, 6], 'mlp.down_proj': [6, 10] };
const BASE = writeModel(path.join(root, 'base'), { model_type: 'qwen2' }, [
  ...Object.entries(SHAPES).map(([m, s], i) => ({ name: `${L}.${m}.weight`, shape: s, data: randomF32(s[0] * s[1], 100 + i, 1) })),
  { name: `${L}.self_attn.k_proj.bias`, shape: [4], data: randomF32(4, 120, 1) },
  { name: 'model.norm.weight', shape: [6], data: randomF32(6, 121, 1) },
]);

const base = readAll(BASE);
const W = (m: string): Float32Array => base.get(`${L}.${m}.weight`)!;

/** The fp32 merge of `w` and a float64 delta rounded once: f(W + f(ΔW)). */
const plus = (w: Float32Array, d: ArrayLike<number>): Float32Array => w.map((x, i) => Math.fround(x + Math.fround(d[i])));

async function merged(adapter: string): Promise<Map<string, Float32Array>> {
  const out = path.join(root, `out${n++}`);
  await mergeJob({ base: BASE, adapter, out, dtype: 'fp32', rule: 'peft' }, withKernels(quietContext(), kernels));
  return readAll(out);
}

function assertUntouched(m: Map<string, Float32Array>, except: string[]): void {
  for (const [name, v] of base) if (!except.includes(name)) assert.deepEqual(m.get(name), v, name);
}

/** A safetensors file whose header says `"__metadata__": null`, as mlx-lm writes it. */
function writeNullMetadata(file: string, tensors: Array<{ name: string; shape: number[]; data: Float32Array }>): void {
  const header: Record<string, unknown> = { __metadata__: null };
  let off = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [off, off + t.data.byteLength] };
    off += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, Buffer.from(json), ...tensors.map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))]));
}

describe('adapter formats merged by their own formulas', () => {
  it('mlx-lm: lora_a [in, r] and lora_b [r, out], ΔW = scale (lora_a @ lora_b)ᵀ, "__metadata__": null, r and alpha left unstated', async () => {
    const dir = path.join(root, 'mlx');
    fs.mkdirSync(dir);
    const a = randomF32(6 * 4, 1, 0.1);
    const b = randomF32(4 * 8, 2, 0.1);
    writeNullMetadata(path.join(dir, 'adapters.safetensors'), [
      { name: `${L}.self_attn.q_proj.lora_a`, shape: [6, 4], data: a },
      { name: `${L}.self_attn.q_proj.lora_b`, shape: [4, 8], data: b },
    ]);
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify({ fine_tune_type: 'lora', num_layers: 1, lora_parameters: { rank: 4, alpha: 16, dropout: 0, scale: 10 } }));
    const c = openCheckpoint(dir);
    assert.deepEqual([c.adapter!.method, c.adapter!.r, c.adapter!.loraAlpha, c.adapter!.scale], ['MLX', 4, null, 10]);
    const [q] = adapterLayout(c).modules;
    assert.deepEqual([q.module, q.out, q.in, lowRank(q).rank, lowRank(q).scale, lowRank(q).alpha], [`${L}.self_attn.q_proj`, 8, 6, 4, 10, null]);
    closeCheckpoint(c);
    // ΔW[i, j] = 10 Σ_k lora_a[j, k] lora_b[k, i]: the fp32 sum times the fp32 scale, as torch rounds `(B @ A) * s`.
    const d = new Float64Array(48);
    for (let i = 0; i < 8; i++) for (let j = 0; j < 6; j++) {
      let acc = 0;
      for (let k = 0; k < 4; k++) acc += b[k * 8 + i] * a[j * 4 + k];
      d[i * 6 + j] = Math.fround(acc) * 10;
    }
    const m = await merged(dir);
    assert.deepEqual(m.get(`${L}.self_attn.q_proj.weight`), plus(W('self_attn.q_proj'), d));
    assertUntouched(m, [`${L}.self_attn.q_proj.weight`]);
  });

  it('AdaLoRA: B @ (A ⊙ E) · alpha / (ranknum + 1e-5), keys without .weight, ranknum the saved (pruned) rank', async () => {
    const r = 3;
    const [A, B, E] = [randomF32(r * 6, 3, 0.2), randomF32(8 * r, 4, 0.2), randomF32(r, 5, 1)];
    const dir = writeAdapter(path.join(root, 'adalora'), peftConfig({ peft_type: 'ADALORA', init_r: 4, target_r: 3, r: 8, lora_alpha: 32, target_modules: ['q_proj'], rank_pattern: { [`${P}${L}.self_attn.q_proj`]: [true, true, false, true] } }), [
      { name: `${P}${L}.self_attn.q_proj.lora_A`, shape: [r, 6], data: A },
      { name: `${P}${L}.self_attn.q_proj.lora_B`, shape: [8, r], data: B },
      { name: `${P}${L}.self_attn.q_proj.lora_E`, shape: [r, 1], data: E },
    ]);
    const AE = A.map((x, i) => Math.fround(x * E[Math.floor(i / 6)]));
    // PEFT's `(B @ (A * E)) * scaling / (ranknum + 1e-5)` in fp32: three roundings, ranknum + 1e-5 an fp32 sum.
    const divisor = Math.fround(r + Math.fround(1e-5));
    const m = await merged(dir);
    assert.deepEqual(m.get(`${L}.self_attn.q_proj.weight`), plus(W('self_attn.q_proj'), matmul(B, AE, 8, r, 6).map((x) => Math.fround(Math.fround(x) * 32) / divisor)));
    assertUntouched(m, [`${L}.self_attn.q_proj.weight`]);
  });

  it('IA³: rows of k_proj and its bias scaled by [out, 1], columns of the feed-forward down_proj by [1, in]', async () => {
    const lk = randomF32(4, 6, 1);
    const ld = randomF32(10, 7, 1);
    const dir = writeAdapter(path.join(root, 'ia3'), { peft_type: 'IA3', target_modules: ['k_proj', 'down_proj'], feedforward_modules: ['down_proj'], fan_in_fan_out: false, modules_to_save: null, task_type: 'CAUSAL_LM' }, [
      { name: `${P}${L}.self_attn.k_proj.ia3_l`, shape: [4, 1], data: lk },
      { name: `${P}${L}.mlp.down_proj.ia3_l`, shape: [1, 10], data: ld },
    ]);
    const m = await merged(dir);
    assert.deepEqual(m.get(`${L}.self_attn.k_proj.weight`), W('self_attn.k_proj').map((x, i) => x * lk[Math.floor(i / 6)]));
    assert.deepEqual(m.get(`${L}.self_attn.k_proj.bias`), base.get(`${L}.self_attn.k_proj.bias`)!.map((x, i) => x * lk[i]));
    assert.deepEqual(m.get(`${L}.mlp.down_proj.weight`), W('mlp.down_proj').map((x, i) => x * ld[i % 10]));
    assertUntouched(m, [`${L}.self_attn.k_proj.weight`, `${L}.self_attn.k_proj.bias`, `${L}.mlp.down_proj.weight`]);
  });

  it('LoHa: ((w1a @ w1b) ⊙ (w2a @ w2b)) · alpha / r', async () => {
    const [w1a, w1b, w2a, w2b] = [randomF32(8 * 2, 8, 0.3), randomF32(2 * 6, 9, 0.3), randomF32(8 * 2, 10, 0.3), randomF32(2 * 6, 11, 0.3)];
    const dir = writeAdapter(path.join(root, 'loha'), { peft_type: 'LOHA', r: 2, alpha: 6, target_modules: ['q_proj'], rank_pattern: {}, alpha_pattern: {} }, [
      { name: `${P}${L}.self_attn.q_proj.hada_w1_a`, shape: [8, 2], data: w1a },
      { name: `${P}${L}.self_attn.q_proj.hada_w1_b`, shape: [2, 6], data: w1b },
      { name: `${P}${L}.self_attn.q_proj.hada_w2_a`, shape: [8, 2], data: w2a },
      { name: `${P}${L}.self_attn.q_proj.hada_w2_b`, shape: [2, 6], data: w2b },
    ]);
    // Each product an fp32 matrix, their Hadamard product fp32, then times the fp32 scale: as PEFT's HadaWeight forms it.
    const p1 = Float32Array.from(matmul(w1a, w1b, 8, 2, 6));
    const p2 = Float32Array.from(matmul(w2a, w2b, 8, 2, 6));
    const m = await merged(dir);
    assert.deepEqual(m.get(`${L}.self_attn.q_proj.weight`), plus(W('self_attn.q_proj'), Float64Array.from(p1, (x, i) => Math.fround(x * p2[i]) * 3)));
  });

  it('LoKr: kron(w1, w2_a @ w2_b) · alpha / r', async () => {
    const [w1, w2a, w2b] = [randomF32(2 * 3, 12, 0.5), randomF32(4 * 2, 13, 0.5), randomF32(2 * 2, 14, 0.5)];
    const dir = writeAdapter(path.join(root, 'lokr'), { peft_type: 'LOKR', r: 2, alpha: 1, target_modules: ['q_proj'], rank_pattern: {}, alpha_pattern: {} }, [
      { name: `${P}${L}.self_attn.q_proj.lokr_w1`, shape: [2, 3], data: w1 },
      { name: `${P}${L}.self_attn.q_proj.lokr_w2_a`, shape: [4, 2], data: w2a },
      { name: `${P}${L}.self_attn.q_proj.lokr_w2_b`, shape: [2, 2], data: w2b },
    ]);
    const w2 = Float32Array.from(matmul(w2a, w2b, 4, 2, 2));
    const d = new Float64Array(48);
    for (let i = 0; i < 8; i++) for (let j = 0; j < 6; j++) d[i * 6 + j] = w1[Math.floor(i / 4) * 3 + Math.floor(j / 2)] * w2[(i % 4) * 2 + (j % 2)] * 0.5;
    const m = await merged(dir);
    assert.deepEqual(m.get(`${L}.self_attn.q_proj.weight`), plus(W('self_attn.q_proj'), d));
  });

  it('VeRA: (λ_b ⊙ vera_B[:out]) @ (λ_d ⊙ vera_A[:, :in]) on slices of the shared matrices', async () => {
    const r = 3;
    const [vA, vB] = [randomF32(r * 10, 15, 0.5), randomF32(10 * r, 16, 0.5)];
    const lb = { q: randomF32(8, 17, 1), k: randomF32(4, 18, 1) };
    const ld = { q: randomF32(r, 19, 1), k: randomF32(r, 20, 1) };
    const dir = writeAdapter(path.join(root, 'vera'), { peft_type: 'VERA', r, target_modules: ['q_proj', 'k_proj'], save_projection: true, projection_prng_key: 0, fan_in_fan_out: false }, [
      { name: 'base_model.vera_A', shape: [r, 10], data: vA },
      { name: 'base_model.vera_B', shape: [10, r], data: vB },
      { name: `${P}${L}.self_attn.q_proj.vera_lambda_b`, shape: [8], data: lb.q },
      { name: `${P}${L}.self_attn.q_proj.vera_lambda_d`, shape: [r], data: ld.q },
      { name: `${P}${L}.self_attn.k_proj.vera_lambda_b`, shape: [4], data: lb.k },
      { name: `${P}${L}.self_attn.k_proj.vera_lambda_d`, shape: [r], data: ld.k },
    ]);
    const m = await merged(dir);
    for (const [p, out] of [['q', 8], ['k', 4]] as const) {
      const A = new Float32Array(r * 6);
      const B = new Float32Array(out * r);
      for (let k = 0; k < r; k++) for (let j = 0; j < 6; j++) A[k * 6 + j] = ld[p][k] * vA[k * 10 + j];
      for (let i = 0; i < out; i++) for (let k = 0; k < r; k++) B[i * r + k] = lb[p][i] * vB[i * r + k];
      assert.deepEqual(m.get(`${L}.self_attn.${p}_proj.weight`), plus(W(`self_attn.${p}_proj`), matmul(B, A, out, r, 6)), p);
    }
    const noShared = writeAdapter(path.join(root, 'vera-noproj'), { peft_type: 'VERA', r, target_modules: ['q_proj'], save_projection: false }, [
      { name: `${P}${L}.self_attn.q_proj.vera_lambda_b`, shape: [8], data: lb.q },
      { name: `${P}${L}.self_attn.q_proj.vera_lambda_d`, shape: [r], data: ld.q },
    ]);
    await assert.rejects(merged(noShared), (e: unknown) => e instanceof LensError && /save_projection=False/.test(e.detail));
  });

  it("LoRA on a modules_to_save head: the saved copy's base_layer weight plus the modules_to_save copy's LoRA", async () => {
    const headBase = writeModel(path.join(root, 'cls-base'), { model_type: 'qwen2' }, [
      { name: 'score.weight', shape: [3, 6], data: randomF32(18, 30, 1) },
      { name: `${L}.self_attn.q_proj.weight`, shape: [8, 6], data: W('self_attn.q_proj') },
    ]);
    const saved = randomF32(18, 31, 1);
    const [A, B] = [randomF32(2 * 6, 32, 0.3), randomF32(3 * 2, 33, 0.3)];
    const other = randomF32(12, 34, 0.3);
    const dir = writeAdapter(path.join(root, 'cls'), peftConfig({ r: 2, lora_alpha: 4, task_type: 'SEQ_CLS', target_modules: ['q_proj', 'score'], modules_to_save: ['score'] }), [
      ...['lora_A', 'lora_B'].map((role) => ({ name: `${P}${L}.self_attn.q_proj.${role}.weight`, shape: role === 'lora_A' ? [2, 6] : [8, 2], data: 0 })),
      { name: `${P}score.base_layer.weight`, shape: [3, 6], data: saved },
      { name: `${P}score.lora_A.weight`, shape: [2, 6], data: A },
      { name: `${P}score.lora_B.weight`, shape: [3, 2], data: B },
      { name: `${P}score.modules_to_save.lora_A.weight`, shape: [2, 6], data: A },
      { name: `${P}score.modules_to_save.lora_B.weight`, shape: [3, 2], data: B },
      { name: `${P}score.original_module.lora_A.weight`, shape: [2, 6], data: other },
      { name: `${P}score.original_module.lora_B.weight`, shape: [3, 2], data: other.subarray(0, 6) },
    ] as TestTensor[]);
    const out = path.join(root, `out${n++}`);
    const ctx = quietContext();
    await mergeJob({ base: headBase, adapter: dir, out, dtype: 'fp32', rule: 'peft' }, withKernels(ctx, kernels));
    assert.deepEqual(readAll(out).get('score.weight'), plus(saved, matmul(B, A, 3, 2, 6).map((x) => x * 2)));
    assert.ok(ctx.warnings.some((w) => /original_module/.test(w)), ctx.warnings.join('\n'));
  });

  it('old PEFT MergedLinear: fused query_key_value, enable_lora [true, false, true], lora_B a grouped Conv1d weight', async () => {
    const fused = randomF32(18 * 6, 40, 1);
    const qkvBase = writeModel(path.join(root, 'bloom'), { model_type: 'bloom' }, [{ name: 'h.0.self_attention.query_key_value.weight', shape: [18, 6], data: fused }]);
    const [A, conv] = [randomF32(4 * 6, 41, 0.3), randomF32(12 * 2, 42, 0.3)];
    const dir = writeAdapter(path.join(root, 'merged-linear'), { peft_type: 'LORA', r: 2, lora_alpha: 8, enable_lora: [true, false, true], target_modules: ['query_key_value'], fan_in_fan_out: false, merge_weights: false, bias: 'none' }, [
      { name: `${P}transformer.h.0.self_attention.query_key_value.lora_A.weight`, shape: [4, 6], data: A },
      { name: `${P}transformer.h.0.self_attention.query_key_value.lora_B.weight`, shape: [12, 2, 1], data: conv },
    ]);
    // F.conv1d(A[None], lora_B, groups=2): output channel o of group g = floor(o / 6) takes A's rows g·2 .. g·2+1.
    const d = new Float64Array(18 * 6);
    for (let o = 0; o < 12; o++) {
      const g = Math.floor(o / 6);
      const row = (g === 0 ? 0 : 12) + (o % 6); // zero_pad: the enabled slices 0 and 2 of three
      for (let j = 0; j < 6; j++) {
        let acc = 0;
        for (let k = 0; k < 2; k++) acc += conv[o * 2 + k] * A[(g * 2 + k) * 6 + j];
        d[row * 6 + j] = acc * 4;
      }
    }
    const out = path.join(root, `out${n++}`);
    await mergeJob({ base: qkvBase, adapter: dir, out, dtype: 'fp32', rule: 'peft' }, withKernels(quietContext(), kernels));
    assert.deepEqual(readAll(out).get('h.0.self_attention.query_key_value.weight'), plus(fused, d));
  });

  it('compare names the modules whose lora_B is all zero instead of dropping them silently', async () => {
    const dir = writeAdapter(path.join(root, 'zero-b'), peftConfig({ r: 2, lora_alpha: 4, target_modules: ['q_proj', 'k_proj'] }), [
      { name: `${P}${L}.self_attn.q_proj.lora_A.weight`, shape: [2, 6], data: 1 },
      { name: `${P}${L}.self_attn.q_proj.lora_B.weight`, shape: [8, 2], data: 2 },
      { name: `${P}${L}.self_attn.k_proj.lora_A.weight`, shape: [2, 6], data: 3 },
      { name: `${P}${L}.self_attn.k_proj.lora_B.weight`, shape: [4, 2], data: new Float32Array(8) },
    ]);
    const ft = path.join(root, `out${n++}`);
    await mergeJob({ base: BASE, adapter: dir, out: ft, dtype: 'fp32', rule: 'peft' }, withKernels(quietContext(), kernels));
    const ctx = quietContext();
    const r = await compareJob(
      { base: BASE, adapter: dir, finetuned: ft, out: path.join(root, `cmp${n++}`), tolerance: 1e-6, saveDeltas: false },
      withKernels(ctx, kernels),
    );
    assert.deepEqual(r.zeroModules, [`${L}.self_attn.k_proj`]);
    assert.ok(r.warnings.includes(`1 module has all-zero lora_B: it changes nothing (${L}.self_attn.k_proj)`), r.warnings.join('\n'));
    assert.deepEqual(r.tensors.map((t) => t.name), [`${L}.self_attn.q_proj.weight`]);
  });

  it('lora_bias: the base bias gains lora_B.bias · scale (merge, census, compare); a layer without a bias refuses it', async () => {
    const A = randomF32(2 * 6, 60, 0.3);
    const B = randomF32(4 * 2, 61, 0.3);
    const lb = randomF32(4, 62, 0.3);
    const dir = writeAdapter(path.join(root, 'lora-bias'), peftConfig({ r: 2, lora_alpha: 3, lora_bias: true, target_modules: ['k_proj'] }), [
      { name: `${P}${L}.self_attn.k_proj.lora_A.weight`, shape: [2, 6], data: A },
      { name: `${P}${L}.self_attn.k_proj.lora_B.weight`, shape: [4, 2], data: B },
      { name: `${P}${L}.self_attn.k_proj.lora_B.bias`, shape: [4], data: lb },
    ]);
    const m = await merged(dir);
    // PEFT's Linear.merge: weight += (B @ A) * 1.5, bias += lora_B.bias * 1.5 (fp32 products).
    assert.deepEqual(m.get(`${L}.self_attn.k_proj.weight`), plus(W('self_attn.k_proj'), matmul(B, A, 4, 2, 6).map((x) => Math.fround(x) * 1.5)));
    assert.deepEqual(m.get(`${L}.self_attn.k_proj.bias`), plus(base.get(`${L}.self_attn.k_proj.bias`)!, lb.map((x) => x * 1.5)));
    assertUntouched(m, [`${L}.self_attn.k_proj.weight`, `${L}.self_attn.k_proj.bias`]);
    const census = censusJob({ path: BASE, adapter: dir }, quietContext());
    assert.deepEqual(census.tensors.filter((t) => t.loraTarget).map((t) => t.name), [`${L}.self_attn.k_proj.weight`, `${L}.self_attn.k_proj.bias`]);
    assert.deepEqual(census.warnings, []);
    const own = censusJob({ path: dir }, quietContext());
    assert.ok(own.tensors.every((t) => t.loraFactor === true && !t.replaced), 'lora_B.bias is one of the module\'s factors, not a saved tensor');
    const ft = path.join(root, `out${n++}`);
    await mergeJob({ base: BASE, adapter: dir, out: ft, dtype: 'fp32', rule: 'peft' }, withKernels(quietContext(), kernels));
    const r = await compareJob(
      { base: BASE, adapter: dir, finetuned: ft, out: path.join(root, `cmp${n++}`), tolerance: 1e-6, saveDeltas: false },
      withKernels(quietContext(), kernels),
    );
    assert.deepEqual(r.tensors.map((t) => [t.name, t.loraTarget]).sort(), [[`${L}.self_attn.k_proj.bias`, true], [`${L}.self_attn.k_proj.weight`, true]]);
    assert.equal(r.summary.equivalent, true);
    // resize writes factors only: it refuses rather than drop the bias.
    assertOneLineError(runCli(['resize', '--adapter', dir, '--out', path.join(root, `resized${n++}`), '--rank', '1']), dir, 'lora_bias');
    const q = writeAdapter(path.join(root, 'lora-bias-q'), peftConfig({ r: 2, lora_bias: true, target_modules: ['q_proj'] }), [
      { name: `${P}${L}.self_attn.q_proj.lora_A.weight`, shape: [2, 6], data: 1 },
      { name: `${P}${L}.self_attn.q_proj.lora_B.weight`, shape: [8, 2], data: 2 },
      { name: `${P}${L}.self_attn.q_proj.lora_B.bias`, shape: [8], data: 3 },
    ]);
    assert.throws(() => adapterLayout(openCheckpoint(q), openCheckpoint(BASE)), (e: unknown) => e instanceof LensError && /no bias/.test(e.detail) && /lora_B\.bias/.test(e.tensor ?? ''));
  });

  it('refuses what it cannot merge with one line naming the file and tensor', () => {
    const tucker = writeAdapter(path.join(root, 'loha-conv'), { peft_type: 'LOHA', r: 2, alpha: 2, target_modules: ['q_proj'] }, [
      { name: `${P}${L}.self_attn.q_proj.hada_w1_a`, shape: [2, 2], data: 1 },
      { name: `${P}${L}.self_attn.q_proj.hada_t1`, shape: [2, 2, 3, 3], data: 1 },
    ]);
    assert.throws(() => adapterLayout(openCheckpoint(tucker)), (e: unknown) => e instanceof LensError && /Tucker/.test(e.detail) && /hada_t1/.test(e.tensor ?? ''));
    const mergedLinearNoConfig = writeAdapter(path.join(root, 'ml-nocfg'), peftConfig({ r: 2 }), [
      { name: `${P}h.0.self_attention.query_key_value.lora_A.weight`, shape: [4, 6], data: 1 },
      { name: `${P}h.0.self_attention.query_key_value.lora_B.weight`, shape: [12, 2, 1], data: 1 },
    ]);
    assert.throws(() => adapterLayout(openCheckpoint(mergedLinearNoConfig)), (e: unknown) => e instanceof LensError && /states no enable_lora/.test(e.detail));
  });
});
