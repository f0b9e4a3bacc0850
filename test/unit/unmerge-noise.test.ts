/**
 * UNMERGE on targets as users have them: models merged at bf16 (onto a bf16 base, or onto an fp32 base
 * whose every weight the merge casts), whose task vectors carry rounding of the size of the smaller
 * delta elements. Real adapters change weights by about a percent: bSpread 0.0005 gives delta elements
 * of ~3e-4 against weights of ~0.035 (a bf16 spacing of 2.4e-4), so the rounding is ~10% of the
 * target's task vector on the mask.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { DECOMPOSE_DEFAULTS, DecomposeMethod } from '../../src/shared/jobs/choices';
import { DecomposeOptions, decomposeJob } from '../../src/engine/jobs/decompose';
import { maskJob } from '../../src/engine/jobs/mask';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { writeSyntheticAdapter } from '../../src/engine/synthetic/adapter';
import { writeSyntheticModel } from '../../src/engine/synthetic/model';
import { quietContext } from '../../src/engine/util/job';
import { tmpDir } from './helpers/builders';
import { withKernels } from '../../src/engine/kernels/kernels';

const kernels = new CpuKernels();
const root = tmpDir('lora-lens-unmerge-noise-');
const config = (dtype: string): Record<string, unknown> => ({
  model_type: 'qwen2',
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 64,
  torch_dtype: dtype,
});
const bases = { bf16: writeSyntheticModel(path.join(root, 'base-bf16'), config('bfloat16'), { seed: 5 }).dir, fp32: writeSyntheticModel(path.join(root, 'base-fp32'), config('float32'), { seed: 5 }).dir };
const names = ['math', 'code', 'chat', 'law', 'med', 'poetry', 'outsider1', 'outsider2'];
const adapters = Object.fromEntries(
  names.map((name, i) => [name, writeSyntheticAdapter(path.join(root, name), config('float32'), { targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], r: 8, seed: 40 + i, bSpread: 0.0005 }).dir]),
);
const dict = names.slice(0, 6).map((n) => adapters[n]);
const METHODS: DecomposeMethod[] = ['omp', 'nnls', 'lasso'];

const masks = Object.fromEntries(
  Object.entries(bases).map(([k, base]) => [k, maskJob(
    { base, adapters: dict, budget: 800, out: path.join(root, `mask-${k}`) },
    withKernels(quietContext(), kernels),
  ).then(() => path.join(root, `mask-${k}`))]),
);

const options = async (base: keyof typeof bases, target: string, method: DecomposeMethod): Promise<DecomposeOptions> => ({
  mask: await masks[base],
  base: bases[base],
  dictionary: dict,
  target,
  method,
  ...DECOMPOSE_DEFAULTS,
  positive: true,
});

/** Merges `parts` one after the other (each merge's output the next one's base), at `dtype`. */
async function merged(name: string, base: keyof typeof bases, parts: string[], dtype: 'fp32' | 'bf16'): Promise<string> {
  let from = bases[base];
  for (let i = 0; i < parts.length; i++) {
    const out = path.join(root, `${name}-${i}`);
    await mergeJob({ base: from, adapter: adapters[parts[i]], out, dtype, rule: 'peft' }, withKernels(quietContext(), kernels));
    from = out;
  }
  return from;
}

test('one adapter merged at fp32 is that adapter alone, by every method', async () => {
  const target = await merged('chat-fp32', 'fp32', ['chat'], 'fp32');
  for (const method of METHODS) {
    const r = await decomposeJob({ ...await options('fp32', target, method) }, withKernels(quietContext(), kernels));
    assert.deepEqual(r.support, ['chat'], method);
    assert.equal(r.verdict, 'decomposable');
    assert.ok(r.roundingFloor < 1e-4, `${method}: ${r.roundingFloor}`);
  }
});

test('one adapter merged at bf16 is that adapter alone: no atoms picked from the rounding, and the residual is called rounding', async () => {
  for (const base of ['bf16', 'fp32'] as const) {
    const target = await merged(`chat-bf16-on-${base}`, base, ['chat'], 'bf16');
    for (const method of METHODS) {
      const r = await decomposeJob({ ...await options(base, target, method) }, withKernels(quietContext(), kernels));
      const what = `${method} on the ${base} base: ${JSON.stringify(r.coefficients)}, residual ${r.relativeResidual}`;
      assert.deepEqual(r.support, ['chat'], what);
      assert.ok(Math.abs(r.coefficients.chat - 1) < 1e-2, what);
      // The rounding is several percent of the target, and the estimate of it is close to what is left.
      assert.ok(r.relativeResidual > 0.03, what);
      assert.ok(Math.abs(r.roundingFloor / r.relativeResidual - 1) < 0.25, `${what}, floor ${r.roundingFloor}`);
      assert.equal(r.verdict, 'decomposable', what);
      if (r.relativeResidual > 0.1) assert.match(r.explanation, /storage rounding/);
      if (method === 'omp') assert.match(r.solver.stopReason!, /noise|correlation/);
      // Coefficients indistinguishable from noise may be non-zero, but their t-statistics say so.
      for (const d of r.dictionary) if (d.name !== 'chat' && d.t !== null) assert.ok(Math.abs(d.t) < 5, `${what}: t(${d.name}) = ${d.t}`);
    }
  }
});

test('two adapters merged one after the other at bf16 are both found, with their weights', async () => {
  const target = await merged('math-law-bf16', 'bf16', ['math', 'law'], 'bf16');
  for (const method of METHODS) {
    const r = await decomposeJob({ ...(await options('bf16', target, method)), truth: { math: 1, law: 1 } }, withKernels(quietContext(), kernels));
    assert.deepEqual([...r.support].sort(), ['law', 'math'], `${method}: ${JSON.stringify(r.coefficients)}`);
    assert.deepEqual([r.precision, r.recall], [1, 1]);
    assert.ok(r.coefficientError! < 2e-2, `${method}: ${r.coefficientError}`);
    assert.equal(r.verdict, 'decomposable');
  }
});

test('adapters outside the dictionary merged at bf16 are still not decomposable: rounding does not excuse them', async () => {
  const target = await merged('outsiders-bf16', 'bf16', ['outsider1', 'outsider2'], 'bf16');
  for (const method of METHODS) {
    const r = await decomposeJob({ ...await options('bf16', target, method) }, withKernels(quietContext(), kernels));
    assert.equal(r.verdict, 'not decomposable', `${method}: residual ${r.relativeResidual}, floor ${r.roundingFloor}`);
    assert.deepEqual(r.support, [], `${method}: ${JSON.stringify(r.coefficients)}`);
  }
});
