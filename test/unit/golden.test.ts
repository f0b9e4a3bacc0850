/**
 * Bit-exactness with PyTorch + PEFT: every merged tensor of test/golden/ (made by
 * scripts/golden/make_goldens.py with PEFT's merge_and_unload() on CPU) must come out of our merge
 * with the same bytes, under the rule each golden corresponds to.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { openCheckpoint } from '../../src/engine/checkpoint/checkpoint';
import { CpuKernels } from '../../src/engine/kernels/cpu';
import { MergeRule } from '../../src/shared/jobs/choices';
import { mergeJob } from '../../src/engine/jobs/merge';
import { CliDtype } from '../../src/shared/safetensors/dtypes';
import { quietContext } from '../../src/engine/util/job';
import { tmpDir } from './helpers/builders';
import { withKernels } from '../../src/engine/kernels/kernels';

const GOLDEN = path.resolve(__dirname, '../../../test/golden');

interface Manifest {
  cases: {
    name: string;
    base: string;
    adapter: string;
    merged: { file: string; dtype: CliDtype; rule: MergeRule }[];
    /** Tensors PEFT merges under another rule than the golden's (see the generator). */
    ruleOverrides?: Record<string, MergeRule>;
    /** Per dtype, the largest difference in units in the last place allowed (DoRA at fp32: PyTorch's fp32 norm). */
    maxUlp?: Partial<Record<CliDtype, number>>;
  }[];
}

/** Largest distance in ulps between two encodings of the same tensor (same-sign values). */
function maxUlpDiff(a: Uint8Array, b: Uint8Array, bytes: number): number {
  const x = bytes === 4 ? new Int32Array(a.slice().buffer) : new Int16Array(a.slice().buffer);
  const y = bytes === 4 ? new Int32Array(b.slice().buffer) : new Int16Array(b.slice().buffer);
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, (x[i] < 0) !== (y[i] < 0) ? Infinity : Math.abs(x[i] - y[i]));
  return m;
}

async function merged(c: Manifest['cases'][number], dtype: CliDtype, rule: MergeRule): Promise<ReturnType<typeof openCheckpoint>> {
  const out = path.join(tmpDir(), 'merged');
  await mergeJob({ base: path.join(GOLDEN, c.base), adapter: path.join(GOLDEN, c.adapter), out, dtype, rule }, withKernels(quietContext(), kernels));
  return openCheckpoint(out);
}

const manifest = JSON.parse(fs.readFileSync(path.join(GOLDEN, 'manifest.json'), 'utf8')) as Manifest;
const kernels = new CpuKernels();

for (const c of manifest.cases) {
  for (const g of c.merged) {
    test(`golden ${c.name}: merge at ${g.dtype} under '${g.rule}' equals PEFT bit for bit`, async () => {
      const ours = await merged(c, g.dtype, g.rule);
      const overrides = new Map<string, ReturnType<typeof openCheckpoint>>();
      for (const [name, rule] of Object.entries(c.ruleOverrides ?? {})) if (rule !== g.rule && g.dtype !== 'fp32') overrides.set(name, await merged(c, g.dtype, rule));
      const allowed = c.maxUlp?.[g.dtype] ?? 0;
      const theirs = openCheckpoint(path.join(GOLDEN, c.name, g.file));
      try {
        assert.deepEqual(ours.tensors.map((t) => t.name).sort(), theirs.tensors.map((t) => t.name).sort());
        const diffs: string[] = [];
        for (const t of theirs.tensors) {
          const src = overrides.get(t.name) ?? ours;
          const o = src.byName.get(t.name)!;
          assert.equal(o.dtype, t.dtype, t.name);
          assert.deepEqual(o.shape, t.shape, t.name);
          const a = src.handles.readBytesSync(o, new Uint8Array(o.byteLength));
          const b = theirs.handles.readBytesSync(t, new Uint8Array(t.byteLength));
          const eb = t.dtype === 'F32' ? 4 : 2;
          if (allowed > 0) {
            const ulp = maxUlpDiff(a, b, eb);
            if (ulp > allowed) diffs.push(`${t.name}: ${ulp} ulp apart (at most ${allowed} allowed)`);
          } else if (Buffer.compare(a, b) !== 0) {
            let n = 0;
            for (let i = 0; i < a.length; i += eb) if (Buffer.compare(a.subarray(i, i + eb), b.subarray(i, i + eb)) !== 0) n++;
            diffs.push(`${t.name}: ${n} of ${t.numel} elements differ`);
          }
        }
        assert.deepEqual(diffs, []);
      } finally {
        for (const m of overrides.values()) m.handles.close();
        ours.handles.close();
        theirs.handles.close();
      }
    });
  }
}
