/**
 * A LoRA scale that is not a power of two (lora_alpha = 10, r = 3: s = 3.333…), against real PyTorch
 * running PEFT's merge lines (test/fixtures/pytorch/peft_merge.py). torch forms (B @ A) * scaling as
 * f(f(B @ A) · f(s)): the fp32 matrix times the Python float rounded to fp32. Rounding s·Σ b·a once
 * (what the engine did before) differs from it in about a third of the elements by one ulp.
 * The factors are chosen so that torch's fp32 B @ A is exact (dyadic, r = 3) or correctly rounded (r = 1
 * with full-precision values): then the merge must match torch bit for bit. With full-precision factors
 * and r > 1, torch's fp32 matmul itself rounds its partial sums, and no float64 sum can follow it.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { quietContext } from '../../src/engine/util/job';
import { FIXTURES, peftConfig, randomF32, rng, tmpDir, writeAdapter, writeModel } from './helpers/builders';
import { findPython } from './helpers/python';
import { storedBytes } from './helpers/tensors';
import { withKernels } from '../../src/engine/kernels/kernels';

const { python, skip } = findPython(['torch']);
const SCRIPT = path.join(FIXTURES, 'pytorch', 'peft_merge.py');
const OUT = 24;
const IN = 40;
const Q = 'model.layers.0.self_attn.q_proj';

/** k / 256 with |k| <= 64: products and their sums of a few terms are exact in fp32. */
function dyadic(n: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => Math.round(r() * 64) / 256);
}

function bytes(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}


interface Case {
  r: number;
  A: Float32Array;
  B: Float32Array;
  /** lora_bias: the base's bias and lora_B's bias. */
  bias?: { b: Float32Array; lb: Float32Array };
}

async function check({ r, A, B, bias }: Case): Promise<void> {
  const dir = tmpDir('lora-lens-torch-scale-');
  const W = randomF32(OUT * IN, 5, 0.5);
  const base = writeModel(path.join(dir, 'base'), { model_type: 'llama' }, [
    { name: `${Q}.weight`, shape: [OUT, IN], data: W },
    ...(bias ? [{ name: `${Q}.bias`, shape: [OUT], data: bias.b }] : []),
  ]);
  const adapter = writeAdapter(path.join(dir, 'adapter'), peftConfig({ r, lora_alpha: 10, target_modules: ['q_proj'], ...(bias ? { lora_bias: true } : {}) }), [
    { name: `base_model.model.${Q}.lora_A.weight`, shape: [r, IN], data: A },
    { name: `base_model.model.${Q}.lora_B.weight`, shape: [OUT, r], data: B },
    ...(bias ? [{ name: `base_model.model.${Q}.lora_B.bias`, shape: [OUT], data: bias.lb }] : []),
  ]);
  const io = path.join(dir, 'torch');
  fs.mkdirSync(io);
  fs.writeFileSync(path.join(io, 'W.f32'), bytes(W));
  fs.writeFileSync(path.join(io, 'A.f32'), bytes(A));
  fs.writeFileSync(path.join(io, 'B.f32'), bytes(B));
  if (bias) {
    fs.writeFileSync(path.join(io, 'b.f32'), bytes(bias.b));
    fs.writeFileSync(path.join(io, 'lb.f32'), bytes(bias.lb));
  }
  const run = spawnSync(python!, [SCRIPT, io, String(OUT), String(IN), String(r), '10'], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  for (const dtype of ['fp32', 'bf16'] as const) {
    const merged = path.join(dir, `merged-${dtype}`);
    await mergeJob({ base, adapter, out: merged, dtype, rule: 'peft' }, withKernels(quietContext(), new CpuKernels()));
    const want = fs.readFileSync(path.join(io, `merged-${dtype}.bin`));
    const got = storedBytes(merged, `${Q}.weight`);
    const width = dtype === 'fp32' ? 4 : 2;
    let differ = 0;
    for (let i = 0; i < want.length; i += width) if (want.compare(got, i, i + width, i, i + width) !== 0) differ++;
    assert.equal(differ, 0, `${dtype}: ${differ} of ${OUT * IN} elements differ from torch`);
    if (bias) assert.ok(storedBytes(merged, `${Q}.bias`).equals(fs.readFileSync(path.join(io, `bias-${dtype}.bin`))), `${dtype}: merged bias differs from torch`);
  }
}

describe('a non-dyadic LoRA scale (alpha 10, r 3) merges as PyTorch rounds it', { skip }, () => {
  it('dyadic factors, r = 3: torch B @ A is exact, the merge is bit for bit', () => check({ r: 3, A: dyadic(3 * IN, 1), B: dyadic(OUT * 3, 2) }));
  it('full-precision factors, r = 1: torch B @ A is correctly rounded, the merge is bit for bit', () => check({ r: 1, A: randomF32(IN, 3), B: randomF32(OUT, 4) }));
  it('lora_bias: the base bias gains lora_B.bias * scaling, as PEFT merges it', () =>
    check({ r: 3, A: dyadic(3 * IN, 6), B: dyadic(OUT * 3, 7), bias: { b: randomF32(OUT, 8, 0.5), lb: randomF32(OUT, 9, 0.5) } }));
});
