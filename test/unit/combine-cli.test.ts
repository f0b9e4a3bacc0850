import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { loraPair, peftConfig, tmpDir, writeAdapter, writeModel } from './helpers/builders';
import { assertOneLineError, runCli } from './helpers/cli';
import { runNumpy } from './helpers/numpyRef';
import { findPython } from './helpers/python';

const root = tmpDir();
const P = 'base_model.model.';

interface CombineJson {
  modules: { name: string; rank: number; relError: number; exact: boolean; sources: number }[];
}

const one = writeAdapter(path.join(root, 'one'), peftConfig({ r: 4, lora_alpha: 8, rank_pattern: { v_proj: 2 }, target_modules: ['q_proj', 'v_proj'] }), [
  ...loraPair('model.layers.0.self_attn.q_proj', 4, 24, 16, 3),
  ...loraPair('model.layers.0.self_attn.v_proj', 2, 24, 8, 5),
]);
const two = writeAdapter(path.join(root, 'two'), peftConfig({ r: 3, lora_alpha: 5, use_rslora: true, target_modules: ['q_proj', 'k_proj'] }), [
  ...loraPair('model.layers.0.self_attn.q_proj', 3, 24, 16, 13),
  ...loraPair('model.layers.0.self_attn.k_proj', 3, 24, 4, 15),
]);
const base = writeModel(path.join(root, 'base'), { model_type: 'llama' }, [
  { name: 'model.layers.0.self_attn.q_proj.weight', shape: [16, 24] },
  { name: 'model.layers.0.self_attn.k_proj.weight', shape: [4, 24] },
  { name: 'model.layers.0.self_attn.v_proj.weight', shape: [8, 24] },
]);
const WEIGHTS = [0.7, -0.4];

function combine(args: string[], name: string): { out: string; report: CombineJson } {
  const out = path.join(root, name);
  const json = path.join(root, `${name}.json`);
  const r = runCli(['combine', '--adapters', one, two, '--weights', WEIGHTS.join(','), '--out', out, '--json', json, ...args]);
  assert.equal(r.status, 0, r.stderr);
  return { out, report: JSON.parse(fs.readFileSync(json, 'utf8')) as CombineJson };
}

/** numpy: Σ wᵢΔᵢ per module, its best rank-k (k null: the sum itself), the optimum's relative error and the written delta's distance to it. */
function check(python: string, out: string, k: number | null): Record<string, { opt: number; off: number; rank: number }> {
  return runNumpy(
    python,
    `srcs = [peft_deltas(d) for d in ${JSON.stringify([one, two])}]; w = ${JSON.stringify(WEIGHTS)}; k = ${JSON.stringify(k)}
dst = peft_deltas(${JSON.stringify(out)})
res = {}
for m in set().union(*srcs):
    total = sum(wi * s[m][0] for wi, s in zip(w, srcs) if m in s)
    want = total if k is None else best(total, k)
    res[m] = {'opt': float(np.linalg.norm(total - want) / np.linalg.norm(total)), 'off': float(np.abs(dst[m][0] - want).max() / np.abs(total).max()), 'rank': dst[m][1]}
emit(res)`,
  );
}

test('combine: the exact weighted sum (ranks add up), and our merge of it equals W + Σ wᵢΔWᵢ', (t) => {
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  const { out, report } = combine([], 'exact');
  const ref = check(py.python, out, null);
  assert.deepEqual(
    report.modules.map((m) => [m.name, m.rank, m.sources, m.exact]),
    [
      ['model.layers.0.self_attn.k_proj', 3, 1, true],
      ['model.layers.0.self_attn.q_proj', 7, 2, true],
      ['model.layers.0.self_attn.v_proj', 2, 1, true],
    ],
  );
  for (const m of report.modules) {
    assert.ok(m.relError < 1e-6, `${m.name}: ${m.relError}`);
    assert.ok(ref[m.name].off < 1e-6, `${m.name}: written sum off by ${ref[m.name].off}`);
    assert.equal(ref[m.name].rank, m.rank);
  }
  const merged = path.join(root, 'merged');
  const r = runCli(['merge', '--base', base, '--adapter', out, '--out', merged, '--dtype', 'fp32']);
  assert.equal(r.status, 0, r.stderr);
  const worst = runNumpy<number>(
    py.python,
    `srcs = [peft_deltas(d) for d in ${JSON.stringify([one, two])}]; w = ${JSON.stringify(WEIGHTS)}
b = load_model(${JSON.stringify(base)}); got = load_model(${JSON.stringify(merged)})
worst = 0.0
for name, x in b.items():
    m = name[:-len('.weight')]
    want = x.astype(np.float64) + sum(wi * s[m][0] for wi, s in zip(w, srcs) if m in s)
    worst = max(worst, float(np.abs(got[name] - want).max()))
emit(worst)`,
  );
  assert.ok(worst < 1e-6, `merged off by ${worst}`);
});

test('combine --rank: the best rank-R approximation of the sum, at the optimum to 1e-6', (t) => {
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  const { out, report } = combine(['--rank', '2'], 'rank2');
  const ref = check(py.python, out, 2);
  for (const m of report.modules) {
    assert.equal(m.rank, 2);
    assert.equal(m.exact, m.name.endsWith('v_proj'));
    assert.ok(Math.abs(m.relError - ref[m.name].opt) < 1e-6, `${m.name}: ${m.relError} vs ${ref[m.name].opt}`);
    assert.ok(ref[m.name].off < 1e-6);
  }
});

test('combine: bad input exits 2 with one line and writes nothing', () => {
  const out = path.join(root, 'bad');
  const otherBase = writeAdapter(path.join(root, 'other-base'), peftConfig({ base_model_name_or_path: 'someone/else', target_modules: ['q_proj'] }), loraPair('model.layers.0.self_attn.q_proj', 2, 24, 16));
  assertOneLineError(runCli(['combine', '--adapters', one, otherBase, '--out', out]), 'someone/else', 'different bases');
  const otherShape = writeAdapter(path.join(root, 'other-shape'), peftConfig({ target_modules: ['q_proj'] }), loraPair('model.layers.0.self_attn.q_proj', 2, 32, 16));
  assertOneLineError(runCli(['combine', '--adapters', one, otherShape, '--out', out]), otherShape, 'q_proj', 'different shapes');
  assertOneLineError(runCli(['combine', '--adapters', one, two, '--weights', '1', '--out', out]), '--weights');
  assertOneLineError(runCli(['combine', '--adapters', one, two, '--weights', '1,x', '--out', out]), '--weights');
  // k_proj is [4, 24]: no rank above 4.
  assertOneLineError(runCli(['combine', '--adapters', one, two, '--rank', '5', '--out', out]), 'k_proj', '--rank 5');
  const mts = writeAdapter(path.join(root, 'mts'), peftConfig({ modules_to_save: ['score'] }), [...loraPair('model.layers.0.self_attn.q_proj', 2, 24, 16), { name: `${P}score.weight`, shape: [2, 24] }]);
  assertOneLineError(runCli(['combine', '--adapters', one, mts, '--out', out]), mts, 'score');
  assert.equal(fs.existsSync(out), false);
});
