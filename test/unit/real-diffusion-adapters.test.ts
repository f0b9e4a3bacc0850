/**
 * The real image-model adapters of test/fixtures/real-adapters-2 (each with its PROVENANCE.md), counted
 * exactly and merged exactly onto bases with the true names and shapes of Stable Diffusion 1.5.
 *
 * Bases: SD1.5's UNet has 859,520,964 parameters (3.4 GB at fp32), too much to write per test run. A
 * merge test writes a partial base: exactly the tensors the adapter targets, with their true names and
 * shapes, the data a hole of zeros (sparse file), so the merged tensor is the rounded delta itself and is
 * compared element by element with a float64 reference of the format's formula. Name resolution of every
 * module is checked against a header-true sparse file of the whole model.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { closeCheckpoint, openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { censusJob } from '../../src/engine/jobs/census';
import { convertAdapterJob } from '../../src/engine/jobs/convertAdapter';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { bytesToF32 } from '../../src/engine/safetensors/reader';
import { encodeF16 } from '../../src/shared/safetensors/half';
import { quietContext } from '../../src/engine/util/job';
import { deltaBlock, Factors } from '../../src/engine/tensors/delta';
import { closePlan, planAdapter } from '../../src/engine/tensors/plan';
import { Block } from '../../src/engine/tensors/stream';
import { Scratch } from '../../src/engine/safetensors/reader';
import { FIXTURES, tmpDir } from './helpers/builders';
import { SD15_UNET, sd15UnetTensors, writeSparse, writeSparseSd15 } from './helpers/diffusion';
import { matmul, storedBytes } from './helpers/tensors';
import { withKernels } from '../../src/engine/kernels/kernels';

const ctx = quietContext();
const kernels = new CpuKernels();
const REAL = path.join(FIXTURES, 'real-adapters-2');

function readF32(dir: string, name: string): Float32Array {
  const c = openCheckpoint(dir);
  try {
    const t = c.byName.get(name)!;
    return bytesToF32(t, c.handles.readBytesSync(t, new Uint8Array(t.byteLength)), new Float32Array(t.numel));
  } finally {
    closeCheckpoint(c);
  }
}

describe('sd15-unet-peft-qkv-r4: PEFT LoRA on a Stable Diffusion 1.5 UNet (diffusers module names)', () => {
  const adapter = path.join(REAL, 'sd15-unet-peft-qkv-r4');
  const root = tmpDir();
  const unet = sd15UnetTensors(SD15_UNET, 'F16');

  it('census: 192 tensors, 96 modules (to_q/to_k/to_v of 16 attention blocks, self and cross), 597,504 trainable parameters', () => {
    const r = censusJob({ path: adapter }, ctx);
    assert.equal(r.summary.tensors, 192);
    assert.equal(r.adapter!.loraModules, 96);
    assert.equal(r.adapter!.trainableParams, 597_504);
    assert.equal(r.summary.categories.attention, 192);
    assert.deepEqual([...new Set(r.tensors.map((t) => t.block))], ['down.0', 'down.1', 'down.2', 'mid', 'up.1', 'up.2', 'up.3']);
  });

  it('census --adapter on a header-true SD1.5 UNet marks exactly its 96 targets', () => {
    const base = path.join(root, 'true-unet');
    writeSparse(path.join(base, 'diffusion_pytorch_model.safetensors'), unet);
    const r = censusJob({ path: base, adapter }, ctx);
    assert.equal(r.summary.loraTargetTensors, 96);
    assert.equal(
      r.summary.loraTargetParams,
      4 * 320 * 320 * 5 + 2 * 320 * 768 * 5 + (4 * 640 * 640 + 2 * 640 * 768) * 5 + (4 * 1280 * 1280 + 2 * 1280 * 768) * 6,
    );
  });

  it('merges exactly onto a diffusers pipeline holding the targeted tensors at their true shapes', async () => {
    const targets = unet.filter((t) => /attn[12]\.to_[qkv]\.weight$/.test(t.name));
    assert.equal(targets.length, 96);
    const pipe = path.join(root, 'pipe');
    fs.mkdirSync(pipe, { recursive: true });
    fs.writeFileSync(path.join(pipe, 'model_index.json'), JSON.stringify({ _class_name: 'StableDiffusionPipeline', unet: ['diffusers', 'UNet2DConditionModel'] }));
    writeSparse(path.join(pipe, 'unet', 'diffusion_pytorch_model.safetensors'), targets);
    const merged = path.join(root, 'merged');
    const rep = await mergeJob({ base: pipe, adapter, out: merged, dtype: 'fp16', rule: 'peft' }, withKernels(ctx, kernels));
    assert.equal(rep.loraTensors, 96);
    assert.deepEqual(rep.files, ['unet/diffusion_pytorch_model.safetensors']);
    // W = 0: the merged tensor is r_fp16(fround(s · B @ A)), s = 16 / 4, B @ A summed in float64 as r runs.
    for (const name of targets.map((t) => t.name.replace(/\.weight$/, ''))) {
      const A = readF32(adapter, `base_model.model.${name}.lora_A.weight`);
      const B = readF32(adapter, `base_model.model.${name}.lora_B.weight`);
      const [out, inn] = [B.length / 4, A.length / 4];
      const expect = new Float32Array(out * inn);
      for (let i = 0; i < out; i++) {
        for (let j = 0; j < inn; j++) {
          let acc = 0;
          for (let k = 0; k < 4; k++) acc += B[i * 4 + k] * A[k * inn + j];
          expect[i * inn + j] = Math.fround(acc * 4);
        }
      }
      const want = Buffer.from(encodeF16(expect, new Uint16Array(out * inn)).buffer);
      assert.ok(want.equals(storedBytes(merged, `unet.${name}.weight`)), name);
    }
  });
});

describe('sd-lycoris-lokr-kohya-fp16: LyCORIS LoKr in kohya naming, fp16, on SD1.5 UNet and text encoder', () => {
  const file = path.join(REAL, 'sd-lycoris-lokr-kohya-fp16', 'smart_falcon_4_lokr.safetensors');
  const root = tmpDir();
  // A header-true SD1.5 pipeline: the true names and shapes of UNet and CLIP ViT-L/14 text encoder, the data a hole.
  const pipe = writeSparseSd15(path.join(root, 'sd15'));

  it('census: 1,750 tensors, 350 LoKr modules (278 UNet, 72 text encoder), 201,726 parameters, its training metadata', () => {
    const r = censusJob({ path: file }, ctx);
    assert.equal(r.summary.tensors, 1750);
    assert.equal(r.summary.params, 201_726);
    assert.deepEqual(r.summary.dtypes, { F16: 1750 });
    assert.equal(r.adapter!.loraModules, 350);
    assert.equal(r.adapter!.method, 'kohya LoKr');
    assert.equal(r.tensors.filter((t) => t.component === 'unet').length, 278 * 5);
    assert.equal(r.tensors.filter((t) => t.component === 'text_encoder').length, 72 * 5);
    const m = r.trainingMetadata!;
    assert.deepEqual([m.networkModule, m.rank, m.alpha, m.baseModel, m.resolution, m.epochs, m.steps], ['lycoris.kohya', 4, 4, 'animefull-final-pruned.safetensors', '(768, 768)', 10, 3010]);
    assert.deepEqual(m.networkArgs, { conv_rank: '4', conv_alpha: '4', algo: 'lokr' });
    assert.deepEqual(m.topTags[0], { tag: 'smart falcon \\(umamusume\\)', count: 130 });
  });

  it('every module resolves to a tensor of the true SD1.5 pipeline with its shape (convolutions as [out, in·3·3])', () => {
    const r = censusJob({ path: pipe, adapter: file }, ctx);
    assert.equal(r.summary.loraTargetTensors, 350);
    const convs = r.tensors.filter((t) => t.loraTarget && t.shape.length === 4);
    assert.ok(convs.length > 0 && convs.every((t) => /\.(conv1|conv2|conv_shortcut|conv|proj_in|proj_out)\.weight$/.test(t.name)));
  });

  it("each module's delta is kron(w1a @ w1b, w2a @ w2b) · alpha / rank, bit for bit, on its first and last rows", async () => {
    const plan = planAdapter(pipe, file, ctx);
    try {
      const factors = new Factors(plan.adapter);
      const scratch = new Scratch();
      assert.equal(plan.modules.length, 350);
      for (const m of plan.modules) {
        const rule = m.rule;
        assert.equal(rule.kind, 'kronecker');
        if (rule.kind !== 'kronecker' || !('a' in rule.w1) || !('a' in rule.w2)) throw new Error('w1 and w2 are both split in this file');
        const [w1a, w1b, w2a, w2b] = [rule.w1.a, rule.w1.b, rule.w2.a, rule.w2.b].map((t) => factors.read(t));
        const rank = rule.w1.b.shape[0];
        assert.equal(rule.scale, 4 / rank);
        const [o1, i1] = rule.shape1;
        const [o2, i2] = rule.shape2;
        const w1 = Float32Array.from(matmul(w1a, w1b, o1, rank, i1));
        const w2 = Float32Array.from(matmul(w2a, w2b, o2, rule.w2.b.shape[0], i2));
        const t = m.base!;
        const cols = t.numel / t.shape[0];
        for (const row0 of [0, t.shape[0] - 2]) {
          const b: Block = { tensor: t, row0, row1: row0 + 2, rowElements: cols, start: row0 * cols, numel: 2 * cols, first: row0 === 0, last: row0 > 0 };
          const got = await deltaBlock(kernels, factors, m, b, new Float32Array(b.numel), scratch);
          const want = new Float32Array(b.numel);
          for (let r = row0; r < row0 + 2; r++) {
            for (let c = 0; c < cols; c++) {
              const [a1, a2, b1, b2] = [Math.floor(r / o2), r % o2, Math.floor(c / i2), c % i2];
              want[(r - row0) * cols + c] = Math.fround(Math.fround(w1[a1 * i1 + b1] * w2[a2 * i2 + b2]) * Math.fround(rule.scale));
            }
          }
          assert.ok(Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(want.buffer)), `${m.module} rows ${row0}..${row0 + 2}`);
        }
      }
    } finally {
      closePlan(plan);
    }
  });
});

describe('the real LoKr converted to a PEFT LOKR adapter folder', () => {
  it('has the same 350 modules on the same base tensors with the same factors and scales', async () => {
    const file = path.join(REAL, 'sd-lycoris-lokr-kohya-fp16', 'smart_falcon_4_lokr.safetensors');
    const root = tmpDir();
    const pipe = writeSparseSd15(path.join(root, 'sd15'));
    const peft = path.join(root, 'peft');
    const rep = await convertAdapterJob({ input: file, out: peft, base: pipe }, ctx);
    assert.deepEqual([rep.peftType, rep.modules, rep.tensors], ['LOKR', 350, 1400]);
    const a = planAdapter(pipe, file, ctx);
    const b = planAdapter(pipe, peft, ctx);
    try {
      const fa = new Factors(a.adapter);
      const fb = new Factors(b.adapter);
      for (const [name, m] of a.loraByBase) {
        const n = b.loraByBase.get(name)!;
        assert.ok(n, name);
        assert.equal(n.rule.kind, 'kronecker');
        if (m.rule.kind !== 'kronecker' || n.rule.kind !== 'kronecker') continue;
        assert.equal(n.rule.scale, m.rule.scale, name);
        assert.deepEqual([n.rule.shape1, n.rule.shape2], [m.rule.shape1, m.rule.shape2]);
        const pa = fa.get(m);
        const pb = fb.get(n);
        assert.deepEqual([pb.w1, pb.w2], [pa.w1, pa.w2], name);
      }
      assert.equal(b.loraByBase.size, 350);
    } finally {
      closePlan(a);
      closePlan(b);
    }
  });
});


describe('sd-lycoris-lokr-kohya-fp16 merged end to end (LORA_LENS_LARGE_TESTS=1: writes 1.9 GB)', () => {
  const large = process.env.LORA_LENS_LARGE_TESTS === '1';
  it('every element of its 350 merged tensors is r_fp16(kron(w1, w2) · scale), onto the true-shaped targets of SD1.5', { skip: !large && 'set LORA_LENS_LARGE_TESTS=1' }, async () => {
    const file = path.join(REAL, 'sd-lycoris-lokr-kohya-fp16', 'smart_falcon_4_lokr.safetensors');
    const root = tmpDir();
    const whole = writeSparseSd15(path.join(root, 'sd15'));
    const targets = censusJob({ path: whole, adapter: file }, ctx).tensors.filter((t) => t.loraTarget);
    assert.equal(targets.length, 350);
    // A partial pipeline of exactly the targets (true names and shapes, zeros): the merge writes only them.
    const pipe = path.join(root, 'targets');
    fs.mkdirSync(pipe, { recursive: true });
    fs.writeFileSync(path.join(pipe, 'model_index.json'), fs.readFileSync(path.join(whole, 'model_index.json')));
    for (const [component, stem] of [['unet', 'diffusion_pytorch_model'], ['text_encoder', 'model']]) {
      const mine = targets.filter((t) => t.name.startsWith(`${component}.`));
      writeSparse(path.join(pipe, component, `${stem}.safetensors`), mine.map((t) => ({ name: t.name.slice(component.length + 1), shape: t.shape, dtype: 'F16' as const })));
    }
    fs.rmSync(whole, { recursive: true, force: true });
    const merged = path.join(root, 'merged');
    const rep = await mergeJob({ base: pipe, adapter: file, out: merged, dtype: 'fp16', rule: 'peft' }, withKernels(ctx, kernels));
    assert.equal(rep.loraTensors, 350);
    const plan = planAdapter(pipe, file, ctx);
    const out = openCheckpoint(merged);
    try {
      const factors = new Factors(plan.adapter);
      let elements = 0;
      for (const m of plan.modules) {
        const rule = m.rule;
        if (rule.kind !== 'kronecker' || !('a' in rule.w1) || !('a' in rule.w2)) throw new Error(`${m.module}: w1 and w2 are both split in this file`);
        const [w1a, w1b, w2a, w2b] = [rule.w1.a, rule.w1.b, rule.w2.a, rule.w2.b].map((t) => factors.read(t));
        const [o1, i1] = rule.shape1;
        const [o2, i2] = rule.shape2;
        const w1 = Float32Array.from(matmul(w1a, w1b, o1, rule.w1.b.shape[0], i1));
        const w2 = Float32Array.from(matmul(w2a, w2b, o2, rule.w2.b.shape[0], i2));
        const s = Math.fround(rule.scale);
        const cols = i1 * i2;
        const want = new Float32Array(o1 * o2 * cols);
        for (let r = 0; r < o1 * o2; r++) {
          const [a1, a2] = [Math.floor(r / o2) * i1, (r % o2) * i2];
          // W + ΔW with W = +0 (which makes a -0 delta +0).
          for (let c = 0; c < cols; c++) want[r * cols + c] = 0 + Math.fround(Math.fround(w1[a1 + Math.floor(c / i2)] * w2[a2 + (c % i2)]) * s);
        }
        const t = out.byName.get(m.base!.name)!;
        const got = Buffer.from(out.handles.readBytesSync(t, new Uint8Array(t.byteLength)));
        assert.ok(got.equals(Buffer.from(encodeF16(want, new Uint16Array(want.length)).buffer)), m.module);
        elements += want.length;
      }
      assert.equal(elements, 941_940_736);
    } finally {
      closePlan(plan);
      closeCheckpoint(out);
    }
  });
});
