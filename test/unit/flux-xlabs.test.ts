/**
 * FLUX LoRAs saved by XLabs-AI's x-flux: its attention processors' LoRALinearLayers
 * (`double_blocks.N.processor.qkv_lora1.down.weight` / `.up.weight`: 1 the image stream, 2 the text stream;
 * a single block's `qkv_lora` / `proj_lora`), no alpha saved. They are BFL modules (`img_attn.qkv`, …), so
 * they merge onto a BFL single file and onto a diffusers FLUX transformer folder exactly as the same
 * factors in kohya naming do (scale 1, as x-flux applies them); a single block's qkv_lora adds to the
 * q, k, v rows of `linear1` only, as a kohya LoRA on linear1 whose up is zero on the MLP rows does.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { censusJob } from '../../src/engine/jobs/census';
import { convertAdapterJob } from '../../src/engine/jobs/convertAdapter';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { withKernels } from '../../src/engine/kernels/kernels';
import { quietContext } from '../../src/engine/util/job';
import { randomF32, TestTensor, tmpDir, writeWeights } from './helpers/builders';
import { assertOneLineError, runCli } from './helpers/cli';
import { bflFromDiffusers, bflValues, fluxTensors, writeSafetensorsFile } from './helpers/diffusion';
import { readAll } from './helpers/tensors';

const ctx = quietContext();
const kernels = new CpuKernels();

describe('XLabs (x-flux) FLUX LoRAs', () => {
  const root = tmpDir();
  const H = 8;
  const R = 3;
  const seeded = (t: TestTensor, i: number): TestTensor => ({ ...t, data: randomF32(t.shape.reduce((a, b) => a * b, 1), 900 + i, 0.5) });
  const diffusers = new Map(fluxTensors(H, 2, 2, 16).map((t, i) => [t.name, seeded(t, i)]));
  const folder = path.join(root, 'FLUX.1-dev', 'transformer');
  writeWeights(folder, [...diffusers.values()], 6000, 'diffusion_pytorch_model');
  const bfl = bflFromDiffusers(diffusers, 2, 2);
  const single = writeSafetensorsFile(path.join(root, 'flux1-dev.safetensors'), bfl);

  /** x-flux processor LoRA -> the BFL module it adapts, its [out, in], and the rows of that module it adds to. */
  const loras: Array<{ xlabs: string; bfl: string; out: number; in: number; rows: number }> = [
    { xlabs: 'double_blocks.0.processor.qkv_lora1', bfl: 'double_blocks.0.img_attn.qkv', out: 3 * H, in: H, rows: 3 * H },
    { xlabs: 'double_blocks.0.processor.qkv_lora2', bfl: 'double_blocks.0.txt_attn.qkv', out: 3 * H, in: H, rows: 3 * H },
    { xlabs: 'double_blocks.0.processor.proj_lora1', bfl: 'double_blocks.0.img_attn.proj', out: H, in: H, rows: H },
    { xlabs: 'double_blocks.0.processor.proj_lora2', bfl: 'double_blocks.0.txt_attn.proj', out: H, in: H, rows: H },
    { xlabs: 'double_blocks.1.processor.qkv_lora1', bfl: 'double_blocks.1.img_attn.qkv', out: 3 * H, in: H, rows: 3 * H },
    { xlabs: 'double_blocks.1.processor.proj_lora2', bfl: 'double_blocks.1.txt_attn.proj', out: H, in: H, rows: H },
    // x-flux's SingleStreamBlockLoraProcessor: qkv_lora dim -> 3·dim (linear1's first rows), proj_lora 15360 -> dim (all of linear2).
    { xlabs: 'single_blocks.0.processor.qkv_lora', bfl: 'single_blocks.0.linear1', out: 7 * H, in: H, rows: 3 * H },
    { xlabs: 'single_blocks.0.processor.proj_lora', bfl: 'single_blocks.0.linear2', out: H, in: 5 * H, rows: H },
    { xlabs: 'single_blocks.1.processor.proj_lora', bfl: 'single_blocks.1.linear2', out: H, in: 5 * H, rows: H },
  ];
  const down = (i: number): Float32Array => randomF32(R * loras[i].in, 60 + 2 * i, 0.5);
  const up = (i: number): Float32Array => randomF32(loras[i].rows * R, 61 + 2 * i, 0.5);
  const xlabsFile = (dir: string, prefix: string): string =>
    writeSafetensorsFile(
      path.join(root, dir, 'lora.safetensors'),
      loras.flatMap((l, i) => [
        { name: `${prefix}${l.xlabs}.down.weight`, shape: [R, l.in], data: down(i) },
        { name: `${prefix}${l.xlabs}.up.weight`, shape: [l.rows, R], data: up(i) },
      ]),
    );
  const xlabs = xlabsFile('xlabs', '');
  // The same factors in kohya naming without alpha (scale 1); linear1's up is zero on the MLP rows qkv_lora leaves alone.
  const kohya = writeSafetensorsFile(
    path.join(root, 'kohya', 'lora.safetensors'),
    loras.flatMap((l, i) => {
      const padded = new Float32Array(l.out * R);
      padded.set(up(i));
      const key = `lora_unet_${l.bfl.replace(/\./g, '_')}`;
      return [
        { name: `${key}.lora_down.weight`, shape: [R, l.in], data: down(i) },
        { name: `${key}.lora_up.weight`, shape: [l.out, R], data: padded },
      ];
    }),
  );

  const merged = async (base: string, adapter: string, dtype: 'fp32' | 'bf16', tag: string): Promise<{ dir: string; n: number }> => {
    const dir = path.join(root, `${tag}-${dtype}`);
    const rep = await mergeJob({ base, adapter, out: dir, dtype, rule: 'peft' }, withKernels(ctx, kernels));
    return { dir, n: rep.loraTensors };
  };
  const assertSame = (got: Map<string, Float32Array>, want: Map<string, Float32Array>, tag: string): void => {
    assert.equal(got.size, want.size, tag);
    for (const [name, w] of want) assert.ok(Buffer.from(got.get(name)!.buffer).equals(Buffer.from(w.buffer)), `${tag} ${name}`);
  };

  it('merges onto the BFL single file and the diffusers folder as the same LoRA in kohya naming, bit for bit (fp32, bf16)', async () => {
    const comfy = xlabsFile('xlabs-comfy', 'diffusion_model.');
    for (const dtype of ['fp32', 'bf16'] as const) {
      const want = await merged(single, kohya, dtype, 'kohya-b');
      const wantValues = readAll(want.dir);
      const onSingle = await merged(single, xlabs, dtype, 'xlabs-b');
      assertSame(readAll(onSingle.dir), wantValues, `BFL ${dtype}`);
      // Targets on the BFL file: one per module (a single block's qkv_lora its q, k, v rows of linear1 stacked).
      assert.equal(onSingle.n, loras.length);
      const onFolder = await merged(folder, xlabs, dtype, 'xlabs-d');
      assertSame(bflValues(diffusers, onFolder.dir, 2, 2), wantValues, `diffusers ${dtype}`);
      // On the folder: a qkv is to_q, to_k, to_v (or add_*_proj).
      assert.equal(onFolder.n, loras.reduce((a, l) => a + (l.rows === 3 * H ? 3 : 1), 0));
      const prefixed = await merged(single, comfy, dtype, 'comfy-b');
      assertSame(readAll(prefixed.dir), wantValues, `diffusion_model. prefix ${dtype}`);
    }
  });

  it('scale 1, as x-flux applies them (LoRALinearLayer without network_alpha): W + up @ down', async () => {
    const { dir } = await merged(single, xlabs, 'fp32', 'scale');
    const got = readAll(dir);
    for (const i of [2, 6]) {
      const l = loras[i];
      const base = bfl.find((t) => t.name === `${l.bfl}.weight`)!.data as Float32Array;
      const [d, u] = [down(i), up(i)];
      const w = got.get(`${l.bfl}.weight`)!;
      for (let o = 0; o < l.out; o++) {
        for (let c = 0; c < l.in; c++) {
          let delta = 0;
          for (let r = 0; r < R && o < l.rows; r++) delta += u[o * R + r] * d[r * l.in + c];
          const want = base[o * l.in + c] + delta;
          assert.ok(Math.abs(w[o * l.in + c] - want) <= 1e-6 * Math.max(1, Math.abs(want)), `${l.bfl}[${o}, ${c}]: ${w[o * l.in + c]} vs ${want}`);
        }
      }
    }
  });

  it('census reads the file and counts its targets on each base and its trained elements once', () => {
    const trained = loras.reduce((a, l) => a + R * (l.in + l.rows), 0);
    for (const [base, targets] of [
      [single, loras.length],
      [folder, loras.reduce((a, l) => a + (l.rows === 3 * H ? 3 : 1), 0)],
    ] as const) {
      const rep = censusJob({ path: base, adapter: xlabs }, ctx);
      assert.equal(rep.summary.loraTargetTensors, targets, base);
      assert.equal(rep.adapter!.loraParams, trained, base);
    }
  });

  it('converted against the diffusers folder, it is a PEFT adapter of to_q, to_k, … whose merge has the same bytes', async () => {
    const peft = path.join(root, 'convert-peft');
    const rep = await convertAdapterJob({ input: xlabs, out: peft, base: folder }, ctx);
    assert.equal(rep.modules, loras.reduce((a, l) => a + (l.rows === 3 * H ? 3 : 1), 0));
    assertSame(readAll((await merged(folder, peft, 'fp32', 'convert-merged')).dir), readAll((await merged(folder, xlabs, 'fp32', 'convert-direct')).dir), 'convert');
  });

  it('a single block qkv_lora whose up is not q, k and v stacked is refused in one line naming it', () => {
    const bad = writeSafetensorsFile(path.join(root, 'bad', 'lora.safetensors'), [
      { name: 'single_blocks.0.processor.qkv_lora.down.weight', shape: [R, H], data: 1 },
      { name: 'single_blocks.0.processor.qkv_lora.up.weight', shape: [2 * H + 1, R], data: 2 },
    ]);
    assertOneLineError(runCli(['merge', '--base', single, '--adapter', bad, '--out', path.join(root, 'bad-out'), '--dtype', 'bf16']), 'single_blocks.0.processor.qkv_lora.up.weight', 'q, k and v');
  });
});
