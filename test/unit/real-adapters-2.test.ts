/**
 * Real adapters in formats beyond PEFT-safetensors (test/fixtures/real-adapters-2, see PROVENANCE.md),
 * merged against bases built with their true names and shapes and checked against their own formulas.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { adapterLayout } from '../../src/engine/checkpoint/adapter';
import { closeCheckpoint, openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { censusJob } from '../../src/engine/jobs/census';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { bytesToF32 } from '../../src/engine/safetensors/reader';
import { buildHeader } from '../../src/engine/safetensors/writer';
import { quietContext } from '../../src/engine/util/job';
import { encodeF16 } from '../../src/shared/safetensors/half';
import { FIXTURES, lowRank, randomF32, tmpDir, writeModel } from './helpers/builders';
import { assertOneLineError, runCli } from './helpers/cli';
import { withKernels } from '../../src/engine/kernels/kernels';

const kernels = new CpuKernels();
const root = tmpDir();
const real = (name: string): string => path.join(FIXTURES, 'real-adapters-2', name);

function read(dir: string, names: string[]): Map<string, Float32Array> {
  const c = openCheckpoint(dir);
  const out = new Map<string, Float32Array>();
  for (const n of names) {
    const t = c.byName.get(n)!;
    out.set(n, bytesToF32(t, c.handles.readBytesSync(t, new Uint8Array(t.byteLength)), new Float32Array(t.numel)).slice());
  }
  closeCheckpoint(c);
  return out;
}

describe('real adapters beyond PEFT-safetensors', () => {
  it('mlx-lm Qwen2.5-0.5B LoRA (last 4 layers, q 896x896, GQA v 128x896): merged exactly as scale (lora_a @ lora_b)ᵀ with scale 10', async () => {
    const shapes: Array<[string, number, number]> = [];
    for (let l = 20; l < 24; l++) shapes.push([`model.layers.${l}.self_attn.q_proj`, 896, 896], [`model.layers.${l}.self_attn.v_proj`, 128, 896]);
    const base = writeModel(path.join(root, 'qwen'), { model_type: 'qwen2', architectures: ['Qwen2ForCausalLM'] }, [
      ...shapes.map(([m, out, inn], i) => ({ name: `${m}.weight`, shape: [out, inn], data: randomF32(out * inn, 500 + i, 0.05) })),
      { name: 'model.layers.20.self_attn.q_proj.bias', shape: [896], data: 9 },
    ]);
    const ad = openCheckpoint(real('mlx-lm-qwen2.5-0.5b-lora'));
    const layout = adapterLayout(ad, openCheckpoint(base));
    assert.equal(layout.modules.length, 8);
    assert.ok(layout.modules.every((m) => lowRank(m).scale === 10 && lowRank(m).alpha === null && !m.transpose));
    const census = censusJob({ path: real('mlx-lm-qwen2.5-0.5b-lora') }, quietContext());
    assert.deepEqual([census.adapter!.method, census.adapter!.r, census.adapter!.alpha, census.adapter!.scale, census.adapter!.loraModules], ['MLX', 8, null, 10, 8]);

    const out = path.join(root, 'qwen-merged');
    const r = await mergeJob({ base, adapter: real('mlx-lm-qwen2.5-0.5b-lora'), out, dtype: 'fp32', rule: 'peft' }, withKernels(quietContext(), kernels));
    assert.deepEqual([r.loraTensors, r.addedTensors, r.tensors], [8, 0, 9]);
    const names = shapes.map(([m]) => `${m}.weight`);
    const w = read(base, names);
    const merged = read(out, [...names, 'model.layers.20.self_attn.q_proj.bias']);
    assert.deepEqual(merged.get('model.layers.20.self_attn.q_proj.bias'), read(base, ['model.layers.20.self_attn.q_proj.bias']).get('model.layers.20.self_attn.q_proj.bias'));
    const f = read(real('mlx-lm-qwen2.5-0.5b-lora'), ad.tensors.map((t) => t.name));
    for (const [m, outF, inF] of shapes) {
      const a = f.get(`${m}.lora_a`)!;
      const b = f.get(`${m}.lora_b`)!;
      const W = w.get(`${m}.weight`)!;
      const want = new Float32Array(outF * inF);
      for (let i = 0; i < outF; i++) for (let j = 0; j < inF; j++) {
        let acc = 0;
        for (let k = 0; k < 8; k++) acc += b[k * outF + i] * a[j * 8 + k];
        want[i * inF + j] = W[i * inF + j] + Math.fround(Math.fround(acc) * 10);
      }
      assert.deepEqual(merged.get(`${m}.weight`), want, m);
    }
    closeCheckpoint(ad);
  });

  it('whisper-small q/v (encoder, decoder, cross-attention): the 24 all-zero encoder modules are named, and an fp16 merge on a base of true shapes equals the delta', async () => {
    const census = censusJob({ path: real('whisper-small-qv-r8') }, quietContext());
    assert.equal(census.adapter!.zeroModules!.length, 24);
    assert.ok(census.adapter!.zeroModules!.every((m) => /^model\.encoder\.layers\.\d+\.self_attn\.[qv]_proj$/.test(m)));
    assert.ok(census.warnings.some((x) => x.startsWith('24 modules have all-zero lora_B: they change nothing (model.encoder.layers.')), census.warnings.join('\n'));

    // The base: WhisperForConditionalGeneration's q/v weights at their true shape, fp16, all zeros (a sparse file).
    const names: string[] = [];
    for (const stack of ['encoder', 'decoder']) {
      for (let l = 0; l < 12; l++) for (const att of stack === 'encoder' ? ['self_attn'] : ['self_attn', 'encoder_attn']) for (const p of ['q_proj', 'v_proj']) names.push(`model.${stack}.layers.${l}.${att}.${p}.weight`);
    }
    const dir = path.join(root, 'whisper');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'whisper', architectures: ['WhisperForConditionalGeneration'], d_model: 768 }));
    const { header, sizes } = buildHeader(names.map((name) => ({ name, dtype: 'F16', shape: [768, 768] })));
    const fd = fs.openSync(path.join(dir, 'model.safetensors'), 'w');
    fs.writeSync(fd, header);
    fs.ftruncateSync(fd, header.length + sizes.reduce((a, b) => a + b, 0));
    fs.closeSync(fd);

    const out = path.join(root, 'whisper-merged');
    const r = await mergeJob({ base: dir, adapter: real('whisper-small-qv-r8'), out, dtype: 'fp16', rule: 'peft' }, withKernels(quietContext(), kernels));
    assert.equal(r.loraTensors, 72);
    const c = openCheckpoint(out);
    const ad = openCheckpoint(real('whisper-small-qv-r8'));
    const bits = (n: string): Uint16Array => {
      const t = c.byName.get(n)!;
      return new Uint16Array(c.handles.readBytesSync(t, new Uint8Array(t.byteLength)).buffer);
    };
    const factor = (n: string): Float32Array => {
      const t = ad.byName.get(n)!;
      return bytesToF32(t, ad.handles.readBytesSync(t, new Uint8Array(t.byteLength)), new Float32Array(t.numel));
    };
    for (const n of names.filter((x) => x.includes('encoder.layers'))) assert.ok(bits(n).every((h) => h === 0), n);
    // A decoder self-attention and a cross-attention module, element by element: f16(f32(4 · B @ A)) on a zero base.
    for (const n of ['model.decoder.layers.0.self_attn.q_proj.weight', 'model.decoder.layers.11.encoder_attn.v_proj.weight']) {
      const m = n.replace(/\.weight$/, '');
      const A = factor(`base_model.model.${m}.lora_A.weight`);
      const B = factor(`base_model.model.${m}.lora_B.weight`);
      const want = new Float32Array(768 * 768);
      for (let i = 0; i < 768; i++) for (let j = 0; j < 768; j++) {
        let acc = 0;
        for (let k = 0; k < 8; k++) acc += B[i * 8 + k] * A[k * 768 + j];
        want[i * 768 + j] = acc * 4;
      }
      assert.deepEqual(bits(n), encodeF16(want, new Uint16Array(want.length)), n);
    }
    closeCheckpoint(c);
    closeCheckpoint(ad);
  });

  it('bloomz-560m prompt tuning: refused in one line (no weight of the base changes)', () => {
    const r = runCli(['census', real('bloomz560m-prompt-tuning')]);
    assertOneLineError(r, 'adapter_config.json', 'PROMPT_TUNING', 'nothing to merge');
  });
});
