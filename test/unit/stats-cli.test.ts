/** stats: one tensor's figures and histogram against numpy, its heat map against a direct computation, streamed in any block size. */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { statsJob } from '../../src/engine/jobs/stats';
import { selectKernels } from '../../src/engine/kernels/select';
import { quietContext } from '../../src/engine/util/job';
import { withKernels } from '../../src/engine/kernels/kernels';
import type { StatsHeatmap, StatsReport } from '../../src/shared/jobs/reports/stats';
import { loraPair, peftConfig, randomF32, tmpDir, writeAdapter, writeModel } from './helpers/builders';
import { assertOneLineError, runCli } from './helpers/cli';
import { runNumpy } from './helpers/numpyRef';
import { findPython } from './helpers/python';
import { readAll } from './helpers/tensors';

const root = tmpDir();
const Q = 'model.layers.0.self_attn.q_proj.weight';

/** Random values with NaN, ±Inf and exact zeros sprinkled in. */
function messy(n: number): Float32Array {
  const x = randomF32(n, 5, 3);
  for (let i = 0; i < n; i += 97) x[i] = NaN;
  for (let i = 5; i < n; i += 1001) x[i] = Infinity;
  for (let i = 11; i < n; i += 2003) x[i] = -Infinity;
  for (let i = 13; i < n; i += 301) x[i] = 0;
  return x;
}

const model = writeModel(path.join(root, 'model'), { model_type: 'llama' }, [
  { name: Q, shape: [300, 200], data: messy(60000) },
  { name: 'model.layers.0.mlp.up_proj.weight', dtype: 'BF16', shape: [40, 1100] },
  // Values on or next to the edges of 10 equal bins, where numpy corrects its index by an ulp.
  { name: 'edgy', shape: [1000], data: Float32Array.from({ length: 1000 }, (_, i) => i * 0.1) },
  { name: 'constant', shape: [4, 5], data: new Float32Array(20).fill(0.25) },
  { name: 'nan', shape: [3], data: new Float32Array(3).fill(NaN) },
]);
const ints = writeModel(path.join(root, 'ints'), { model_type: 'llama' }, [{ name: 'ids', dtype: 'I64', shape: [2], data: new Uint8Array(16) }]);
const finetuned = writeModel(path.join(root, 'finetuned'), { model_type: 'llama' }, [
  { name: Q, shape: [300, 200], data: randomF32(60000, 8, 2) },
  { name: 'model.layers.0.mlp.up_proj.weight', dtype: 'BF16', shape: [40, 1100], data: 99 },
]);
const adapter = writeAdapter(path.join(root, 'adapter'), peftConfig({ r: 4, lora_alpha: 8, target_modules: ['q_proj'] }), loraPair('model.layers.0.self_attn.q_proj', 4, 200, 300, 3));
const gpt2 = writeModel(path.join(root, 'gpt2'), { model_type: 'gpt2' }, [{ name: 'h.0.attn.c_attn.weight', shape: [40, 120] }]);
const conv = writeAdapter(path.join(root, 'gpt2-lora'), peftConfig({ r: 2, lora_alpha: 4, fan_in_fan_out: true, target_modules: ['c_attn'] }), loraPair('transformer.h.0.attn.c_attn', 2, 40, 120, 9));

function stats(args: string[], name: string): StatsReport {
  const json = path.join(root, `${name}.json`);
  const r = runCli(['stats', ...args, '--json', json]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(fs.readFileSync(json, 'utf8')) as StatsReport;
}

interface NumpyStats {
  min: number | null;
  max: number | null;
  mean: number | null;
  std: number | null;
  nan: number;
  posInf: number;
  negInf: number;
  zeros: number;
  l2: number;
  counts: number[] | null;
  edges: number[] | null;
}

/** numpy's figures of `expr` (a float64 numpy array built from the loaded checkpoints `m`, `f`). */
function numpyStats(python: string, setup: string, bins: number, input?: unknown): NumpyStats {
  return runNumpy<NumpyStats>(
    python,
    `${setup}
x = np.asarray(x, dtype=np.float64).ravel()
fin = x[np.isfinite(x)]
out = {'nan': int(np.isnan(x).sum()), 'posInf': int((x == np.inf).sum()), 'negInf': int((x == -np.inf).sum()), 'zeros': int((fin == 0).sum()), 'l2': float(np.sqrt(np.sum(fin * fin)))}
if fin.size:
    counts, edges = np.histogram(fin, bins=${bins})
    out.update({'min': float(fin.min()), 'max': float(fin.max()), 'mean': float(fin.mean()), 'std': float(fin.std()), 'counts': counts.tolist(), 'edges': edges.tolist()})
else:
    out.update({'min': None, 'max': None, 'mean': None, 'std': None, 'counts': None, 'edges': None})
emit(out)`,
    input,
  );
}

function close(a: number | null, b: number | null, rel: number, what: string): void {
  if (a === null || b === null) return assert.equal(a, b, what);
  assert.ok(Math.abs(a - b) <= rel * Math.max(Math.abs(b), 1e-300), `${what}: ${a} vs ${b}`);
}

/**
 * The report's figures against numpy's: with `rel` 0 (the same values) counts, range, bins and edges
 * exactly, and the sums (mean, std, norm) to 1e-12, numpy's pairwise sums and our compensated ones
 * differing in the last bits; otherwise everything to `rel`.
 */
function assertMatches(r: StatsReport, ref: NumpyStats, rel: number): void {
  const s = r.summary;
  assert.deepEqual([s.nan, s.posInf, s.negInf, s.zeros], [ref.nan, ref.posInf, ref.negInf, ref.zeros]);
  close(s.min, ref.min, rel, 'min');
  close(s.max, ref.max, rel, 'max');
  const sums = Math.max(rel, 1e-12);
  close(s.mean, ref.mean, sums, 'mean');
  close(s.std, ref.std, sums, 'std');
  close(s.l2Norm, ref.l2, sums, 'l2');
  if (rel === 0) {
    assert.deepEqual(r.histogram?.counts ?? null, ref.counts);
    assert.deepEqual(r.histogram?.edges ?? null, ref.edges);
  } else {
    assert.equal(r.histogram!.counts.reduce((a, b) => a + b, 0), s.finite);
  }
}

/** Cells of max |x| and mean |x| by visiting every element of the [rows, cols] matrix `x`. */
type Cells = { maxAbs: (number | null)[]; meanAbs: (number | null)[] };

function directHeatmap(x: ArrayLike<number>, rows: number, cols: number, cellRows: number, cellCols: number): Cells {
  const gr = Math.ceil(rows / cellRows);
  const gc = Math.ceil(cols / cellCols);
  const maxAbs: (number | null)[] = [];
  const meanAbs: (number | null)[] = [];
  for (let i = 0; i < gr; i++) {
    for (let j = 0; j < gc; j++) {
      let m = 0;
      let sum = 0;
      let n = 0;
      for (let r = i * cellRows; r < Math.min(rows, (i + 1) * cellRows); r++) {
        for (let c = j * cellCols; c < Math.min(cols, (j + 1) * cellCols); c++) {
          const v = x[r * cols + c];
          if (!Number.isFinite(v)) continue;
          m = Math.max(m, Math.abs(v));
          sum += Math.abs(v);
          n++;
        }
      }
      maxAbs.push(n ? m : null);
      meanAbs.push(n ? sum / n : null);
    }
  }
  return { maxAbs, meanAbs };
}

function assertHeatmap(h: StatsHeatmap, x: ArrayLike<number>, rows: number, cols: number, rel: number): void {
  assert.deepEqual([h.matrixRows, h.matrixCols], [rows, cols]);
  const d = directHeatmap(x, rows, cols, h.cellRows, h.cellCols);
  assert.equal(h.maxAbs.length, h.rows * h.cols);
  for (let k = 0; k < d.maxAbs.length; k++) {
    close(h.maxAbs[k], d.maxAbs[k], rel, `cell ${k} max`);
    close(h.meanAbs[k], d.meanAbs[k], Math.max(rel, 1e-12), `cell ${k} mean`);
  }
}

test('a tensor with NaN, ±Inf and zeros: figures and histogram equal numpy, heat map equals the direct computation', (t) => {
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  const r = stats(['--model', model, '--tensor', Q, '--bins', '50', '--grid', '16'], 'messy');
  assert.equal(r.source, 'values');
  assert.deepEqual([r.summary.elements, r.summary.finite + r.summary.nan + r.summary.posInf + r.summary.negInf], [60000, 60000]);
  assertMatches(r, numpyStats(py.python, `x = load_model(${JSON.stringify(model)})[${JSON.stringify(Q)}]`, 50), 0);
  // 300 × 200 in cells of 19 × 13: 16 × 16 cells, the last row and column of cells ragged.
  assert.deepEqual([r.heatmap.rows, r.heatmap.cols, r.heatmap.cellRows, r.heatmap.cellCols], [16, 16, 19, 13]);
  assertHeatmap(r.heatmap, readAll(model).get(Q)!, 300, 200, 0);
  assert.match(r.warnings[0], /NaN or infinite/);
});

test('bf16 values, values on bin edges, a constant tensor and an all-NaN one, as numpy bins them', (t) => {
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  for (const [name, bins] of [['model.layers.0.mlp.up_proj.weight', 128], ['edgy', 10], ['edgy', 7], ['constant', 4], ['nan', 8]] as const) {
    const r = stats(['--model', model, '--tensor', name, '--bins', String(bins)], `${name}-${bins}`);
    assertMatches(r, numpyStats(py.python, `x = load_model(${JSON.stringify(model)})[${JSON.stringify(name)}]`, bins), 0);
  }
  const empty = stats(['--model', model, '--tensor', 'nan'], 'nan-default');
  assert.deepEqual([empty.histogram, empty.heatmap.maxAbs], [null, [null, null, null]]);
});

test('fine-tuned minus base (fp32, as extract writes it) equals numpy', (t) => {
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  for (const name of [Q, 'model.layers.0.mlp.up_proj.weight']) {
    const r = stats(['--model', finetuned, '--base', model, '--tensor', name, '--bins', '64'], `diff-${name}`);
    assert.equal(r.source, 'difference');
    const setup = `x = load_model(${JSON.stringify(finetuned)})[${JSON.stringify(name)}].astype(np.float32) - load_model(${JSON.stringify(model)})[${JSON.stringify(name)}].astype(np.float32)`;
    assertMatches(r, numpyStats(py.python, setup, 64), 0);
  }
});

test("an adapter's ΔW (PEFT s·B@A, and GPT-2's Conv1D stored [in, out]) against numpy's float64 delta", (t) => {
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  for (const [a, base, module, tensor, rows, cols, transposed] of [
    [adapter, model, 'model.layers.0.self_attn.q_proj', Q, 300, 200, false],
    [conv, gpt2, 'transformer.h.0.attn.c_attn', 'h.0.attn.c_attn.weight', 40, 120, true],
  ] as const) {
    const delta = runNumpy<number[]>(py.python, `d = peft_deltas(${JSON.stringify(a)})[${JSON.stringify(module)}][0]\nemit((d.T if ${transposed ? 'True' : 'False'} else d).ravel().tolist())`);
    const r = stats(['--adapter', a, '--base', base, '--tensor', tensor, '--grid', '7'], `delta-${path.basename(a)}`);
    assert.deepEqual([r.source, r.tensor, r.shape, r.transposed], ['adapter', tensor, [rows, cols], transposed]);
    assertMatches(r, numpyStats(py.python, 'x = json.load(sys.stdin)', 128, delta), 1e-6);
    assertHeatmap(r.heatmap, delta, rows, cols, 1e-6);
    // The adapter's own factor names the same module.
    const byFactor = stats(['--adapter', a, '--base', base, '--tensor', `base_model.model.${module}.lora_B.weight`, '--grid', '7'], `factor-${path.basename(a)}`);
    assert.deepEqual(byFactor.summary, r.summary);
  }
});

test('streamed in blocks of any size (partial rows included), the report is the same', async () => {
  const kernels = await selectKernels('cpu', quietContext());
  try {
    const run = (blockElements: number): Promise<StatsReport> =>
      statsJob({ model, tensor: Q, bins: 33, grid: 9, blockElements }, withKernels(quietContext(), kernels));
    const whole = await run(1 << 20);
    for (const size of [97, 200, 4001]) {
      const r = await run(size);
      assert.deepEqual({ ...r, seconds: 0 }, { ...whole, seconds: 0 }, `blocks of ${size}`);
    }
  } finally {
    await kernels.dispose();
  }
});

test('bad requests: one line naming the file and tensor', () => {
  assertOneLineError(runCli(['stats', '--model', model, '--tensor', 'nope']), model, 'nope');
  assertOneLineError(runCli(['stats', '--model', ints, '--tensor', 'ids']), 'ids', 'I64');
  assertOneLineError(runCli(['stats', '--tensor', Q]), '--model', '--adapter');
  assertOneLineError(runCli(['stats', '--model', model, '--adapter', model, '--tensor', Q]), '--model', '--adapter');
  assertOneLineError(runCli(['stats', '--adapter', model, '--tensor', Q]), '--base');
  assertOneLineError(runCli(['stats', '--model', model, '--tensor', Q, '--bins', '0']), '--bins');
  assertOneLineError(runCli(['stats', '--adapter', adapter, '--base', model, '--tensor', 'model.layers.0.mlp.up_proj.weight']), adapter, 'up_proj', 'does not adapt');
});
