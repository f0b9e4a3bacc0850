/**
 * UNMERGE with every PEFT option, checked against the merge (itself pinned bit for bit to PEFT's
 * merge_and_unload): an adapter's compressed vector must equal the compressed task vector of the model
 * it merges into at fp32, and the mask must be the top k of max |task vector| of those models.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { closeCheckpoint, openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { compressJob } from '../../src/engine/jobs/compress';
import { DECOMPOSE_DEFAULTS } from '../../src/shared/jobs/choices';
import { decomposeJob } from '../../src/engine/jobs/decompose';
import { maskJob } from '../../src/engine/jobs/mask';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { Kernels, withKernels } from '../../src/engine/kernels/kernels';
import { selectKernels } from '../../src/engine/kernels/select';
import { bytesToF32 } from '../../src/engine/safetensors/reader';
import { readHeader } from '../../src/shared/safetensors/file';
import { SyntheticAdapterOptions, writeSyntheticAdapter } from '../../src/engine/synthetic/adapter';
import { writeSyntheticModel } from '../../src/engine/synthetic/model';
import { Mask } from '../../src/engine/unmerge/maskFile';
import { quietContext } from '../../src/engine/util/job';
import { peftConfig, tmpDir, writeAdapter } from './helpers/builders';

const kernels = new CpuKernels();
const root = tmpDir('lora-lens-unmerge-peft-');

const QWEN = { model_type: 'qwen2', hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 48, torch_dtype: 'float32' };
const GPT2 = { model_type: 'gpt2', n_embd: 24, n_layer: 2, n_head: 2, vocab_size: 40, n_positions: 16, torch_dtype: 'float32' };

/** Every tensor of a checkpoint folder as fp32. */
function tensorsOf(dir: string): Map<string, Float32Array> {
  const c = openCheckpoint(dir);
  const out = new Map(c.tensors.map((t) => [t.name, bytesToF32(t, c.handles.readBytesSync(t, new Uint8Array(t.byteLength)), new Float32Array(t.numel))]));
  closeCheckpoint(c);
  return out;
}

/** The compressed vector file of `name` in a compress output folder, one array per module. */
function compressed(dir: string, name: string): Float32Array[] {
  const file = path.join(dir, `${name}.safetensors`);
  const buf = fs.readFileSync(file);
  return readHeader(file).tensors.map((t) => new Float32Array(buf.buffer.slice(buf.byteOffset + t.offset, buf.byteOffset + t.offset + t.byteLength)));
}

interface Case {
  name: string;
  config: Record<string, unknown>;
  adapters: Record<string, SyntheticAdapterOptions>;
  /** Adapters whose config claims the wrong fan_in_fan_out. */
  wrongFlag?: string[];
}

const CASES: Case[] = [
  {
    name: 'llama-like',
    config: QWEN,
    adapters: {
      plain: { targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], r: 4, seed: 1 },
      rslora: { targets: ['q_proj', 'v_proj', 'o_proj'], r: 8, alpha: 8, useRslora: true, rankPattern: { v_proj: 2 }, alphaPattern: { 'layers.1.self_attn.o_proj': 32 }, seed: 2 },
      onelayer: { targets: ['q_proj', 'k_proj', 'gate_proj'], r: 4, layersToTransform: [1], seed: 3 },
      embed: { targets: ['embed_tokens', 'q_proj'], r: 4, seed: 4 },
      dora: { targets: ['q_proj', 'v_proj', 'embed_tokens'], r: 4, useDora: true, seed: 5 },
    },
  },
  {
    name: 'gpt2 Conv1D',
    config: GPT2,
    adapters: {
      cattn: { targets: ['c_attn', 'c_proj'], r: 4, seed: 6 },
      wrongflag: { targets: ['c_attn', 'attn.c_proj'], r: 2, seed: 7 },
      dora: { targets: ['c_attn', 'c_fc'], r: 4, useDora: true, seed: 8 },
    },
    wrongFlag: ['wrongflag'],
  },
];

for (const c of CASES) {
  test(`mask and compress with every PEFT option agree with the fp32 merge: ${c.name}`, async () => {
    const dir = path.join(root, c.name.replace(/\W+/g, '-'));
    const base = writeSyntheticModel(path.join(dir, 'base'), c.config, { seed: 9 }).dir;
    const names = Object.keys(c.adapters);
    const adapters = names.map((n) => {
      const a = writeSyntheticAdapter(path.join(dir, n), c.config, { bSpread: 0.02, ...c.adapters[n] }).dir;
      if (c.wrongFlag?.includes(n)) {
        const cfgFile = path.join(a, 'adapter_config.json');
        fs.writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgFile, 'utf8')), fan_in_fan_out: false }));
      }
      return a;
    });
    const ctx = quietContext();
    const maskDir = path.join(dir, 'mask');
    const report = await maskJob({ base, adapters, budget: 40 * 12, out: maskDir }, withKernels(ctx, kernels));
    for (const n of c.wrongFlag ?? []) assert.ok(ctx.warnings.some((w) => w.startsWith(`${n}: fan_in_fan_out=false`)), ctx.warnings.join('\n'));

    // The union of what the adapters target, each module with the adapters that vote in it.
    const merged = await Promise.all(names.map(async (n, a) => {
      const out = path.join(dir, `merged-${n}`);
      await mergeJob({ base, adapter: adapters[a], out, dtype: 'fp32', rule: 'peft' }, withKernels(quietContext(), kernels));
      return out;
    }));
    const w = tensorsOf(base);
    const taus = merged.map((m) => {
      const ft = tensorsOf(m);
      return new Map([...w].map(([name, v]) => [name, ft.get(name)!.map((x, i) => x - v[i])]));
    });
    const touched = [...w.keys()].filter((name) => taus.some((t) => t.get(name)!.some((x) => x !== 0)));
    assert.deepEqual(report.perModule.map((m) => m.name).sort(), touched.sort());
    for (const m of report.perModule) {
      assert.deepEqual(m.adapters, names.filter((_, a) => taus[a].get(m.name)!.some((x) => x !== 0)), m.name);
    }

    // The mask: top k of max_a |tau_a| per module, ties to the lower index.
    const mask = Mask.open(maskDir);
    for (const m of mask.modules) {
      const agg = new Float32Array(m.numel);
      for (const t of taus) t.get(m.name)!.forEach((x, i) => (agg[i] = Math.max(agg[i], Math.abs(x))));
      const expected = [...agg.keys()].sort((a, b) => agg[b] - agg[a] || a - b).slice(0, m.selected).sort((a, b) => a - b);
      assert.deepEqual([...(await mask.indices(m))], expected, m.name);
    }

    // Compressed adapter == compressed fp32 merge minus base: exactly for DoRA (the same arithmetic),
    // within the merge's one fp32 rounding of W + dW for LoRA.
    const out = path.join(dir, 'compressed');
    const inputs = names.flatMap((_, a) => [{ kind: 'adapter' as const, path: adapters[a] }, { kind: 'finetuned' as const, path: merged[a] }]);
    const cr = await compressJob({ mask: maskDir, base, inputs, out }, withKernels(quietContext(), kernels));
    names.forEach((n, a) => {
      const fromAdapter = compressed(out, cr.inputs[2 * a].file.replace(/\.safetensors$/, ''));
      const fromModel = compressed(out, cr.inputs[2 * a + 1].file.replace(/\.safetensors$/, ''));
      mask.modules.forEach((m, i) => {
        const maxAbs = (v: Float32Array): number => v.reduce((x, y) => Math.max(x, Math.abs(y)), 0);
        const tol = n === 'dora' ? 0 : (maxAbs(w.get(m.name)!) + maxAbs(fromAdapter[i])) * 2 ** -24;
        fromAdapter[i].forEach((v, t) => assert.ok(Math.abs(v - fromModel[i][t]) <= tol, `${n} ${m.name}[${t}]: ${v} vs ${fromModel[i][t]}`));
      });
      // Norm kept: ||mask * tau|| / ||tau|| over the modules it targets.
      let kept = 0;
      let all = 0;
      fromModel.forEach((v) => v.forEach((x) => (kept += x * x)));
      taus[a].forEach((v) => v.forEach((x) => (all += x * x)));
      assert.ok(Math.abs(report.normPreservation[n]! - Math.sqrt(kept / all)) < 1e-5, `${n}: ${report.normPreservation[n]} vs ${Math.sqrt(kept / all)}`);
      assert.ok(Math.abs(cr.inputs[2 * a].normKept! - cr.inputs[2 * a + 1].normKept!) < 1e-5, n);
    });
    mask.close();

    // A merged DoRA model decomposes into its adapter exactly: the dictionary vector is its task vector.
    const d = names.indexOf('dora');
    for (const method of ['nnls', 'omp'] as const) {
      const opts = { mask: maskDir, base, dictionary: adapters, target: merged[d], method, ...DECOMPOSE_DEFAULTS, positive: true };
      const r = await decomposeJob({ ...opts }, withKernels(quietContext(), kernels));
      assert.deepEqual(r.support, ['dora'], `${method}: ${JSON.stringify(r.coefficients)}`);
      assert.ok(Math.abs(r.coefficients.dora - 1) < 1e-9 && r.relativeResidual < 1e-9, `${method}: ${r.coefficients.dora}, ${r.relativeResidual}`);
    }
  });
}

test('mask ties across adapters and across the threshold go to the lower row-major index of the base weight, also for Conv1D', async () => {
  const dir = path.join(root, 'ties');
  const gpt2 = writeSyntheticModel(path.join(dir, 'gpt2'), GPT2, { seed: 3 }).dir;
  const qwen = writeSyntheticModel(path.join(dir, 'qwen'), QWEN, { seed: 3 }).dir;
  const rank1 = (name: string, module: string, a: number[], b: number[], extra: Record<string, unknown> = {}): string =>
    writeAdapter(path.join(dir, name), peftConfig({ r: 1, lora_alpha: 1, target_modules: [module.split('.').pop()], ...extra }), [
      { name: `base_model.model.${module}.lora_A.weight`, shape: [1, a.length], data: Float32Array.from(a) },
      { name: `base_model.model.${module}.lora_B.weight`, shape: [b.length, 1], data: Float32Array.from(b) },
    ]);
  const H = QWEN.hidden_size;
  const q = 'model.layers.0.self_attn.q_proj';
  // p: rows of [1 x4, 0.5 x28]; s: rows 0.5 above row 8, 1 from it. Max: 1 in columns 0..3 and in rows 8.., 0.5 elsewhere, tied across both.
  const p = rank1('p', q, Array.from({ length: H }, (_, j) => (j < 4 ? 1 : 0.5)), new Array(H).fill(1), { layers_to_transform: [0] });
  const s = rank1('s', q, new Array(H).fill(1), Array.from({ length: H }, (_, i) => (i < 8 ? -0.5 : 1)), { layers_to_transform: [0] });
  const ones = [...Array(H * H).keys()].filter((idx) => idx % H < 4 || Math.floor(idx / H) >= 8);
  const k = ones.length + 10;
  const r = await maskJob({ base: qwen, adapters: [p, s], budget: k, out: path.join(dir, 'mask-q') }, withKernels(quietContext(), kernels));
  assert.equal(r.k, k);
  let mask = Mask.open(path.join(dir, 'mask-q'));
  const halves = [...Array(H * H).keys()].filter((idx) => !ones.includes(idx)).slice(0, 10);
  assert.deepEqual(halves, [4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
  assert.deepEqual([...(await mask.indices(mask.modules[0]))], [...ones, ...halves].sort((a, b) => a - b));
  assert.equal(mask.modules[0].threshold, 0.5);
  mask.close();

  // Conv1D c_attn is stored [in 24, out 72]: delta[o][i] = B[o] lands at i * 72 + o.
  const c = rank1('c', 'h.0.attn.c_attn', new Array(24).fill(1), Array.from({ length: 72 }, (_, o) => (o < 4 ? 2 : 1)), { fan_in_fan_out: true });
  await maskJob({ base: gpt2, adapters: [c], budget: 24 * 4 + 5, out: path.join(dir, 'mask-c') }, withKernels(quietContext(), kernels));
  mask = Mask.open(path.join(dir, 'mask-c'));
  const big = [...Array(24 * 72).keys()].filter((idx) => idx % 72 < 4);
  assert.deepEqual([...(await mask.indices(mask.modules[0]))], [...big, 4, 5, 6, 7, 8].sort((a, b) => a - b));
  mask.close();
});

test('mask, compress and decompose give the same bytes and figures on the CPU backend the CLI picks as on the main thread', async () => {
  const dir = path.join(root, 'backends');
  // 512 x 512 modules: large enough for a worker backend to split them.
  const config = { ...QWEN, hidden_size: 512, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 8, num_key_value_heads: 1, vocab_size: 8 };
  const base = writeSyntheticModel(path.join(dir, 'base'), config, { seed: 2 }).dir;
  const adapters = [
    writeSyntheticAdapter(path.join(dir, 'a'), config, { targets: ['q_proj', 'o_proj'], r: 8, seed: 1, bSpread: 0.02 }).dir,
    writeSyntheticAdapter(path.join(dir, 'b'), config, { targets: ['q_proj', 'o_proj'], r: 4, seed: 2, bSpread: 0.02 }).dir,
    writeSyntheticAdapter(path.join(dir, 'dora'), config, { targets: ['q_proj', 'o_proj'], r: 4, seed: 3, bSpread: 0.02, useDora: true }).dir,
  ];
  const target = path.join(dir, 'merged');
  await mergeJob({ base, adapter: adapters[2], out: target, dtype: 'bf16', rule: 'peft' }, withKernels(quietContext(), kernels));
  const picked = await selectKernels('cpu', quietContext());
  const run = async (k: Kernels, tag: string): Promise<[Buffer, Buffer, number[]]> => {
    const maskDir = path.join(dir, `mask-${tag}`);
    const m = await maskJob({ base, adapters, budget: 5000, out: maskDir }, withKernels(quietContext(), k));
    const out = path.join(dir, `compressed-${tag}`);
    await compressJob(
      { mask: maskDir, base, inputs: [{ kind: 'adapter', path: adapters[2] }, { kind: 'finetuned', path: target }], out },
      withKernels(quietContext(), k),
    );
    const d = await decomposeJob(
      { mask: maskDir, base, dictionary: adapters, target, method: 'nnls', ...DECOMPOSE_DEFAULTS, positive: true },
      withKernels(quietContext(), k),
    );
    assert.deepEqual(d.support, ['dora']);
    const figures = [
      ...Object.values(m.normPreservation),
      ...m.perModule.map((x) => x.threshold),
      ...Object.values(d.coefficients),
      d.relativeResidual,
      d.roundingFloor,
    ] as number[];
    return [fs.readFileSync(path.join(maskDir, 'mask.safetensors')), Buffer.concat(['dora.safetensors', 'merged.safetensors'].map((f) => fs.readFileSync(path.join(out, f)))), figures];
  };
  try {
    const [mainMask, mainCompressed, mainFigures] = await run(kernels, 'main');
    const [mask, compressedBytes, figures] = await run(picked, 'picked');
    assert.ok(mask.equals(mainMask), `${picked.description}: mask differs`);
    assert.ok(compressedBytes.equals(mainCompressed), `${picked.description}: compressed vectors differ`);
    // Float64 sums may be added in another order (the kernels' contract: within 1e-6); here far closer.
    figures.forEach((x, i) => assert.ok(Math.abs(x - mainFigures[i]) <= 1e-12 * Math.abs(mainFigures[i]), `${i}: ${x} vs ${mainFigures[i]}`));
  } finally {
    await picked.dispose();
  }
});
