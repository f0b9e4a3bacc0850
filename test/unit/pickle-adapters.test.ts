/**
 * Real PEFT adapters saved as PyTorch pickles (test/fixtures/real-adapters-2/*-bin, see PROVENANCE.md):
 * census, convert and merge against bases built with the true names and shapes they adapt (GPT-2's
 * Conv1D c_attn [768, 2304] under the real gpt2 config; flan-t5-base's q/v [768, 768] in the encoder's
 * and decoder's self-attention and the decoder's cross-attention). A merge from the .bin adapter equals
 * the merge from its converted safetensors byte for byte.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { closeCheckpoint, openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { FileHandles } from '../../src/engine/safetensors/reader';
import { readTorchCheckpoint } from '../../src/shared/pytorch/checkpoint';
import { runCli } from './helpers/cli';
import { FIXTURES, TestTensor, tmpDir, writeModel } from './helpers/builders';
import { OUTPUT_MARKER } from '../../src/engine/util/outputDir';

const REAL = path.join(FIXTURES, 'real-adapters-2');

/** The base tensors an adapter's lora_A / lora_B pairs adapt, with the shapes they imply ([out, in]; [in, out] for Conv1D). */
function baseFor(adapterBin: string, conv1d: boolean): TestTensor[] {
  const byModule = new Map<string, { a?: number[]; b?: number[] }>();
  for (const t of readTorchCheckpoint(adapterBin).tensors) {
    const m = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/.exec(t.name);
    assert.ok(m, t.name);
    const e = byModule.get(m[1]) ?? {};
    if (m[2] === 'A') e.a = t.shape;
    else e.b = t.shape;
    byModule.set(m[1], e);
  }
  return [...byModule].map(([module, { a, b }]) => {
    const [out, inF] = [b![0], a![1]];
    return { name: `${module}.weight`, dtype: 'BF16', shape: conv1d ? [inF, out] : [out, inF] };
  });
}

function bytesOfAll(dir: string): Map<string, Buffer> {
  const c = openCheckpoint(dir);
  const h = new FileHandles();
  try {
    return new Map(c.tensors.map((t) => [t.name, Buffer.from(h.readBytesSync(t, new Uint8Array(t.byteLength)))]));
  } finally {
    h.close();
    closeCheckpoint(c);
  }
}

const CASES = [
  { dir: 'gpt2-cattn-r8-bin', conv1d: true, config: JSON.parse(fs.readFileSync(path.join(FIXTURES, 'base-configs', 'gpt2.json'), 'utf8')), modules: 12 },
  // No real flan-t5-base config.json is in the fixtures: the fields that name its architecture and sizes.
  { dir: 'flan-t5-base-seq2seq-qv-r8-bin', conv1d: false, config: { model_type: 't5', architectures: ['T5ForConditionalGeneration'], d_model: 768, num_layers: 12, num_decoder_layers: 12 }, modules: 72 },
];

describe('real PEFT adapters saved as adapter_model.bin', () => {
  for (const c of CASES) {
    it(`${c.dir}: census, convert, and a merge equal to the merge of the converted adapter`, () => {
      const root = tmpDir();
      const adapter = path.join(REAL, c.dir);
      const base = writeModel(path.join(root, 'base'), c.config, baseFor(path.join(adapter, 'adapter_model.bin'), c.conv1d));

      const census = runCli(['census', base, '--adapter', adapter, '--json', '-']);
      assert.equal(census.status, 0, census.stderr);
      assert.equal(JSON.parse(census.stdout).summary.loraTargetTensors, c.modules);

      const converted = path.join(root, 'converted');
      const conv = runCli(['convert', '--in', adapter, '--out', converted]);
      assert.equal(conv.status, 0, conv.stderr);
      assert.deepEqual(fs.readdirSync(converted).filter((f) => f !== OUTPUT_MARKER).sort(), ['PROVENANCE.md', 'adapter_config.json', 'adapter_model.safetensors']);
      assert.deepEqual(bytesOfAll(converted), bytesOfAll(adapter));

      for (const [from, out] of [[adapter, 'merged-bin'], [converted, 'merged-st']]) {
        const r = runCli(['merge', '--base', base, '--adapter', from, '--out', path.join(root, out), '--dtype', 'bf16', '--device', 'cpu', '--json', '-']);
        assert.equal(r.status, 0, r.stderr);
        assert.equal(JSON.parse(r.stdout).loraTensors, c.modules);
      }
      const a = fs.readFileSync(path.join(root, 'merged-bin', 'model.safetensors'));
      assert.ok(a.equals(fs.readFileSync(path.join(root, 'merged-st', 'model.safetensors'))));
      // The merge changed the base: the deltas were applied.
      assert.notDeepEqual(bytesOfAll(path.join(root, 'merged-bin')), bytesOfAll(base));
    });
  }
});
