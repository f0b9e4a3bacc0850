/**
 * Edges of the contract found by the CLI audit, pinned at the job API and the engine host (the CLI's
 * own checks are in outputs-cli.test.ts): no output over a file of an input folder, an all-zero adapter
 * against an unchanged model, and a report file in a folder that does not exist yet.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { EngineProcess, JobError } from '../../src/extension/engine/engineProcess';
import { compareJob } from '../../src/engine/jobs/compare';
import { extractJob } from '../../src/engine/jobs/extract';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { quietContext } from '../../src/engine/util/job';
import { peftConfig, tmpDir, writeAdapter, writeModel } from './helpers/builders';
import { withKernels } from '../../src/engine/kernels/kernels';

const HOST = path.resolve(__dirname, '../../../dist/engine-host.js');

describe('contract edges', () => {
  const root = tmpDir('lora-lens-pending-');
  const tensors = [
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [4, 4] },
    { name: 'model.norm.weight', shape: [4] },
  ];
  const base = writeModel(path.join(root, 'base'), { model_type: 'llama' }, tensors);
  const ft = writeModel(path.join(root, 'ft'), { model_type: 'llama' }, [{ ...tensors[0], data: 9 }, tensors[1]]);

  it(
    'extractJob refuses an --out that is a file of an input folder (base/model.safetensors), and leaves it intact',
    async () => {
      const own = writeModel(path.join(root, 'base-for-extract'), { model_type: 'llama' }, tensors);
      const weights = path.join(own, 'model.safetensors');
      const before = fs.readFileSync(weights);
      await assert.rejects(extractJob(
        { base: own, finetuned: ft, out: weights },
        withKernels(quietContext(), new CpuKernels()),
      ), (e: Error) => e.name === 'LensError');
      assert.deepEqual(fs.readFileSync(weights), before);
    },
  );

  it(
    'compare: an adapter whose deltas are all zero against a finetuned model equal to the base is equivalent ' +
      '(CLI.md: `equivalent` = every shared tensor within --tolerance, which holds with none)',
    async () => {
      const zero = writeAdapter(path.join(root, 'zero'), peftConfig({ r: 1, target_modules: ['q_proj'] }), [
        { name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight', shape: [1, 4] },
        { name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight', shape: [4, 1], data: new Float32Array(4) },
      ]);
      const r = await compareJob(
        { base, adapter: zero, finetuned: base, out: path.join(root, 'cmp'), tolerance: 1e-5, saveDeltas: false },
        withKernels(quietContext(), new CpuKernels()),
      );
      assert.equal(r.summary.shared, 0);
      assert.equal(r.summary.equivalent, true);
    },
  );

  it(
    'engine host: --json FILE into a folder that does not exist creates it (or is an input error), never an internal error',
    async () => {
      const e = new EngineProcess(HOST, () => {});
      try {
        const json = path.join(root, 'no', 'such', 'dir', 'census.json');
        try {
          await e.run({ job: 'census', path: base, json }).done;
          assert.ok(fs.existsSync(json));
        } catch (err) {
          assert.equal((err as JobError).kind, 'input');
        }
      } finally {
        e.dispose();
      }
    },
  );
});
