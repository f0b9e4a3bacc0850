/**
 * estimate --adapter with image-model adapter files: the real LyCORIS LoKr on header-true SD1.5 shapes,
 * and kohya LoRA / LoCon / DoRA / fused FLUX modules whose trained elements follow from the base's shapes.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { estimateJob } from '../../src/engine/jobs/estimate';
import { quietContext } from '../../src/engine/util/job';
import { FIXTURES, tmpDir } from './helpers/builders';
import { runCli } from './helpers/cli';
import { clipTextTensors, SD15_CLIP, SD15_UNET, sd15UnetTensors, writeSafetensorsFile, writeSparseSd15 } from './helpers/diffusion';

const ctx = quietContext();

describe('estimate --adapter with kohya / LyCORIS files', () => {
  const root = tmpDir();
  const pipe = writeSparseSd15(path.join(root, 'sd15'));
  const baseParams = [...sd15UnetTensors(SD15_UNET), ...clipTextTensors(SD15_CLIP)].reduce((a, t) => a + t.shape.reduce((p, q) => p * q, 1), 0);

  it('the real LoKr: 350 modules, its 201,376 trained elements (the file less its 350 alphas) on SD1.5', () => {
    const lokr = path.join(FIXTURES, 'real-adapters-2', 'sd-lycoris-lokr-kohya-fp16', 'smart_falcon_4_lokr.safetensors');
    const r = estimateJob({ path: pipe, adapter: lokr }, ctx);
    assert.equal(r.modules.length, 350);
    assert.deepEqual([r.trainableParams, r.adapterFileParams, r.warnings], [201_726 - 350, 201_726 - 350, []]);
    assert.equal(r.baseParams, baseParams);
    assert.equal(r.percent, (100 * r.trainableParams) / baseParams);
    assert.equal(r.r, 4);
  });

  it('kohya LoCon with DoRA: r · (in·kh·kw + out) per module plus dora_scale, from the base shapes; the CLI prints it', () => {
    const m = 'lora_unet_down_blocks_1_resnets_0_conv1';
    const file = writeSafetensorsFile(path.join(root, 'locon', 'l.safetensors'), [
      { name: `${m}.lora_down.weight`, dtype: 'F16', shape: [8, 320, 3, 3] },
      { name: `${m}.lora_up.weight`, dtype: 'F16', shape: [640, 8, 1, 1] },
      { name: `${m}.alpha`, dtype: 'F16', shape: [], data: new Float32Array([4]) },
      { name: `${m}.dora_scale`, shape: [640, 1, 1, 1], data: new Float32Array(640).fill(1) },
    ]);
    const r = estimateJob({ path: pipe, adapter: file }, ctx);
    assert.deepEqual(r.modules, [{ name: 'unet.down_blocks.1.resnets.0.conv1', in: 320 * 9, out: 640, r: 8, alpha: 4, params: 8 * (320 * 9 + 640) + 640 }]);
    assert.deepEqual([r.loraParams, r.doraParams, r.useDora], [8 * (320 * 9 + 640), 640, true]);
    const cli = runCli(['estimate', pipe, '--adapter', file]);
    assert.equal(cli.status, 0, cli.stderr);
    assert.match(cli.stdout, /trainable parameters: 28,800 /);
  });
});
