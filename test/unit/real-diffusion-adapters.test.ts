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
import { runCensus } from '../../src/engine/jobs/census';
import { mergeModel } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { bytesToF32 } from '../../src/engine/safetensors/reader';
import { encodeF16 } from '../../src/shared/safetensors/half';
import { quietContext } from '../../src/engine/util/job';
import { FIXTURES, tmpDir } from './helpers/builders';
import { SD15_UNET, sd15UnetTensors, writeSparse } from './helpers/diffusion';

const ctx = quietContext();
const kernels = new CpuKernels();
const REAL = path.join(FIXTURES, 'real-adapters-2');

function rawBytes(dir: string, name: string): Buffer {
  const c = openCheckpoint(dir);
  try {
    const t = c.byName.get(name)!;
    return Buffer.from(c.handles.readBytesSync(t, new Uint8Array(t.byteLength)));
  } finally {
    closeCheckpoint(c);
  }
}

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
    const r = runCensus(adapter, {}, ctx);
    assert.equal(r.summary.tensors, 192);
    assert.equal(r.adapter!.loraModules, 96);
    assert.equal(r.adapter!.trainableParams, 597_504);
    assert.equal(r.summary.categories.attention, 192);
    assert.deepEqual([...new Set(r.tensors.map((t) => t.block))], ['down.0', 'down.1', 'down.2', 'mid', 'up.1', 'up.2', 'up.3']);
  });

  it('census --adapter on a header-true SD1.5 UNet marks exactly its 96 targets', () => {
    const base = path.join(root, 'true-unet');
    writeSparse(path.join(base, 'diffusion_pytorch_model.safetensors'), unet);
    const r = runCensus(base, { adapter }, ctx);
    assert.equal(r.summary.loraTargetTensors, 96);
    assert.equal(r.summary.loraTargetParams, 4 * 320 * 320 * 5 + 2 * 320 * 768 * 5 + (4 * 640 * 640 + 2 * 640 * 768) * 5 + (4 * 1280 * 1280 + 2 * 1280 * 768) * 6);
  });

  it('merges exactly onto a diffusers pipeline holding the targeted tensors at their true shapes', async () => {
    const targets = unet.filter((t) => /attn[12]\.to_[qkv]\.weight$/.test(t.name));
    assert.equal(targets.length, 96);
    const pipe = path.join(root, 'pipe');
    fs.mkdirSync(pipe, { recursive: true });
    fs.writeFileSync(path.join(pipe, 'model_index.json'), JSON.stringify({ _class_name: 'StableDiffusionPipeline', unet: ['diffusers', 'UNet2DConditionModel'] }));
    writeSparse(path.join(pipe, 'unet', 'diffusion_pytorch_model.safetensors'), targets);
    const merged = path.join(root, 'merged');
    const rep = await mergeModel(pipe, adapter, merged, { dtype: 'fp16', rule: 'peft' }, kernels, ctx);
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
      assert.ok(want.equals(rawBytes(merged, `unet.${name}.weight`)), name);
    }
  });
});
