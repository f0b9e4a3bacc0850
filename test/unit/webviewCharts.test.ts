/** The panels' data shaping: from each engine report to the summary, series and tables drawn. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cosineAxisMin, spansDecade } from '../../src/shared/charts/equivalence';
import { formatCell, formatTick } from '../../src/shared/charts/format';
import { PanelModel, Point, Section, valueCount } from '../../src/shared/charts/model';
import { panelModel } from '../../src/shared/charts/panels';
import { sortedRowOrder } from '../../src/shared/charts/sort';
import { groupByLayer, OUTSIDE_LAYERS } from '../../src/shared/charts/tensors';
import { ReportKind } from '../../src/shared/webviewProtocol';

const model = (kind: ReportKind, report: unknown, comparisons?: Record<string, unknown>): PanelModel => panelModel({ kind, title: 't', report, comparisons });
const section = (m: PanelModel, id: string): Section => {
  const s = m.sections.find((x) => x.id === id);
  assert.ok(s, `section ${id}`);
  return s;
};
const summary = (m: PanelModel, id: string) => m.summary.find((s) => s.id === id) ?? assert.fail(`summary ${id}`);
const series = (s: Section, label: string) => s.chart?.series.find((x) => x.label === label) ?? assert.fail(`series ${label}`);

function compareTensor(
  name: string,
  o: Partial<{ cosine: number | null; maxAbsDiff: number | null; loraNorm: number; taskVectorNorm: number; loraTarget: boolean }> = {},
) {
  return { name, category: 'attention', loraTarget: true, cosine: 1, maxAbsDiff: 1e-7, relFroErr: 1e-7, loraNorm: 2, taskVectorNorm: 2, withinTolerance: true, ...o };
}

const L = (i: number, p: string): string => `model.layers.${i}.self_attn.${p}.weight`;
const compareReport = {
  summary: { shared: 3, perfectMatches: 3, taskVectorOnly: 2, taskVectorOnlyNorm: 0.5, loraOnly: 0, meanCosine: 0.99999, minCosine: 0.9999, maxAbsDiff: 2e-6, tolerance: 1e-5, equivalent: true, verdict: 'EQUIVALENT' },
  tensors: [
    compareTensor(L(1, 'q_proj'), { cosine: 0.9999 }),
    compareTensor(L(0, 'q_proj')),
    compareTensor(L(0, 'v_proj'), { maxAbsDiff: 0 }),
    compareTensor('model.layers.0.input_layernorm.weight', { loraTarget: false, loraNorm: 0, cosine: null, taskVectorNorm: 0.3 }),
    compareTensor('model.embed_tokens.weight', { loraTarget: false, loraNorm: 0, cosine: null, taskVectorNorm: 0.4 }),
  ],
  warnings: ['fan_in_fan_out disagrees'],
};

test('compare: summary figures with their stable ids and the verdict', () => {
  const m = model('compare', compareReport);
  assert.equal(m.verdict?.text, 'EQUIVALENT');
  assert.equal(m.verdict?.tone, 'good');
  assert.equal(summary(m, 'summary-shared').value, 3);
  assert.equal(summary(m, 'summary-task-vector-only').text, '2');
  assert.equal(summary(m, 'summary-equivalent').value, true);
  assert.equal(summary(m, 'mean-cosine').text, '0.9999900');
  assert.equal(summary(m, 'max-abs-diff').text, '2.00e-6');
  assert.deepEqual(m.warnings, ['fan_in_fan_out disagrees']);
});

test('compare: cosine per shared tensor, grouped by layer with one series per projection', () => {
  const cos = section(model('compare', compareReport), 'cosine');
  assert.deepEqual(cos.chart?.labels, ['0', '1']);
  assert.deepEqual(series(cos, 'q_proj').data, [1, 0.9999]);
  assert.deepEqual(series(cos, 'v_proj').data, [1, null]);
  assert.equal(cos.chart?.series.length, 2, 'task-vector-only tensors have no cosine bar');
  assert.equal(cos.chart?.y.max, 1);
  assert.equal(cos.chart?.y.min, 0.999, 'a cosine of 0.9999 on an axis from 0.999');
  assert.equal(cos.table?.rows.length, 3);
  assert.equal(cos.table?.rows[0][0], L(0, 'q_proj'), 'rows in layer order');
});

test('compare: max abs difference on a log scale leaves exact zeros out, says so, and draws the tolerance', () => {
  const diff = section(model('compare', compareReport), 'max-abs-diff');
  assert.equal(diff.chart?.y.log, true);
  assert.deepEqual(series(diff, 'v_proj').data, [null, null]);
  assert.match(diff.note ?? '', /^1 shared tensor/);
  const tol = series(diff, 'tolerance');
  assert.equal(tol.asLine, true);
  assert.deepEqual(tol.data, [1e-5, 1e-5]);
  assert.equal(valueCount(diff.chart!), 2, 'tolerance line not counted');
});

test('compare: norm scatter and ranked norm distribution split shared from task-vector-only', () => {
  const m = model('compare', compareReport);
  const norms = section(m, 'norms');
  assert.equal((series(norms, 'shared').data as Point[]).length, 3);
  assert.deepEqual((series(norms, 'task-vector only').data as Point[]).map((p) => [p.x, p.y]), [[0, 0.3], [0, 0.4]]);
  assert.deepEqual(series(norms, 'equal norms').data, [{ x: 0, y: 0 }, { x: 2, y: 2 }]);
  const dist = section(m, 'norm-distribution');
  assert.deepEqual((series(dist, 'task-vector only (2)').data as Point[]).map((p) => [p.x, p.y]), [[1, 0.4], [2, 0.3]]);
});

test('compare: coverage marks each layer\'s LoRA targets and changed-only tensors', () => {
  const cov = section(model('compare', compareReport), 'coverage');
  assert.deepEqual(cov.chart?.labels, ['0', '1', OUTSIDE_LAYERS]);
  assert.deepEqual(series(cov, 'LoRA targets').data, [2, 1, 0]);
  assert.deepEqual(series(cov, 'changed outside the adapter').data, [1, 0, 1]);
  const cols = cov.table!.columns.map((c) => c.key);
  const row0 = cov.table!.rows[0];
  assert.equal(row0[cols.indexOf('q_proj')], 'LoRA');
  assert.equal(row0[cols.indexOf('input_layernorm')], 'changed');
  assert.equal(cov.table!.heat![0][cols.indexOf('q_proj')], 1);
  assert.equal(cov.table!.heat![1][cols.indexOf('v_proj')], null);
});

test('an empty or foreign report draws dashes, never throws', () => {
  for (const kind of ['compare', 'validate', 'precision', 'mask', 'decompose', 'census'] as const) {
    for (const report of [{}, { summary: 'x', tensors: 'y', dtypes: 5, perModule: [null, 1] }]) {
      const m = model(kind, report);
      assert.ok(m.summary.every((s) => typeof s.text === 'string' && !s.text.includes('NaN') && !s.text.includes('undefined')), kind);
    }
  }
  assert.equal(summary(model('compare', {}), 'summary-shared').text, '—');
});

const precisionReport = {
  defaultRule: 'peft',
  dtypes: {
    fp16: { rule: 'peft', nonzeroTensors: 483, adaptedTensors: 120, castArtifactTensors: 363, castArtifactNorm: 0.01, deltaLostFraction: 0.02, recoveredRelErr: 1e-3, rules: { peft: { deltaLostFraction: 0.02, nonzeroTensors: 483 }, 'fp32-cast': { deltaLostFraction: 0.01 } } },
    bf16: { rule: 'peft', nonzeroTensors: 483, adaptedTensors: 120, castArtifactTensors: 363, castArtifactNorm: 0.1, deltaLostFraction: 0.2, recoveredRelErr: 1e-2, rules: { peft: { deltaLostFraction: 0.2 } } },
  },
  tensors: [
    { name: 'model.embed_tokens.weight', dtype: 'fp16', rule: 'peft', castArtifactTensors: 1, castArtifactNorm: 0.005, deltaLostFraction: null },
    { name: 'model.embed_tokens.weight', dtype: 'fp16', rule: 'fp32-cast', castArtifactTensors: 1, castArtifactNorm: 0.005, deltaLostFraction: null },
    { name: 'model.layers.0.mlp.up_proj.weight', dtype: 'bf16', rule: 'peft', castArtifactTensors: 1, castArtifactNorm: 0.05, deltaLostFraction: null },
    { name: L(3, 'q_proj'), dtype: 'fp16', rule: 'peft', castArtifactTensors: 0, castArtifactNorm: 0, deltaLostFraction: 0.03 },
    { name: L(3, 'q_proj'), dtype: 'fp16', rule: 'fp32-cast', castArtifactTensors: 0, castArtifactNorm: 0, deltaLostFraction: 0.01 },
  ],
};

test('precision: the 483 vs 120 figures per dtype, by id', () => {
  const m = model('precision', precisionReport);
  assert.equal(summary(m, 'nonzero-tensors-fp16').value, 483);
  assert.equal(summary(m, 'cast-artifact-tensors-bf16').text, '363');
  assert.equal(summary(m, 'delta-lost-bf16').text, '20.0%');
  const nz = section(m, 'nonzero');
  assert.deepEqual(nz.chart?.labels, ['fp16', 'bf16']);
  assert.deepEqual(series(nz, 'adapted tensors').data, [120, 120]);
});

test('precision: cast artifacts per category counted once per dtype (rule-independent)', () => {
  const s = section(model('precision', precisionReport), 'cast-artifacts');
  assert.deepEqual(s.chart?.labels, ['embedding · fp16', 'embedding · bf16', 'mlp · fp16', 'mlp · bf16']);
  assert.deepEqual(series(s, 'fp16').data, [{ x: 'embedding · fp16', y: 0.005, label: 'model.embed_tokens.weight' }]);
  assert.deepEqual((series(s, 'bf16').data as Point[]).map((p) => p.x), ['mlp · bf16']);
  assert.equal(s.table?.rows[0][0], 'model.layers.0.mlp.up_proj.weight', 'largest norm first');
});

test('precision: delta lost per layer, one series per dtype and rule; the rules table keeps every rule', () => {
  const m = model('precision', precisionReport);
  const lost = section(m, 'delta-lost');
  assert.deepEqual(lost.chart?.series.map((s) => s.label), ['fp16 fp32-cast', 'fp16 peft']);
  assert.deepEqual(series(lost, 'fp16 peft').data, [{ x: 3, y: 0.03, label: L(3, 'q_proj') }]);
  const rules = section(m, 'rules');
  assert.deepEqual(rules.chart?.labels, ['peft', 'fp32-cast']);
  assert.deepEqual(series(rules, 'bf16').data, [0.2, null]);
  assert.equal(rules.table?.rows.length, 3);
});

test('validate: a status per dtype, and each dtype\'s full comparison when the host attached it', () => {
  const report = {
    ok: false,
    verdict: 'FAIL at fp16',
    tolerance: 1e-5,
    rule: 'peft',
    dtypes: [
      { dtype: 'fp32', status: 'PASS', verdict: 'PASS: ...', compare: { shared: 120, perfectMatches: 120, taskVectorOnly: 0, maxAbsDiff: 0, equivalent: true, tolerance: 1e-5, meanCosine: 1 }, precision: null },
      { dtype: 'fp16', status: 'FAIL', verdict: 'FAIL: ...', compare: { shared: 120, perfectMatches: 100, taskVectorOnly: 363, maxAbsDiff: 1e-3, equivalent: false }, precision: { deltaLostFraction: 0.02 } },
    ],
  };
  const m = model('validate', report, { fp16: compareReport });
  assert.equal(summary(m, 'status-fp32').value, 'PASS');
  assert.equal(summary(m, 'status-fp16').tone, 'bad');
  assert.equal(m.verdict?.tone, 'bad');
  assert.deepEqual(series(section(m, 'dtypes'), 'task-vector only').data, [0, 363]);
  assert.deepEqual(series(section(m, 'dtype-max-abs-diff'), 'max abs diff').data, [null, 1e-3], 'zero has no log bar');
  assert.equal(section(m, 'fp32-summary').summary?.find((s) => s.id === 'fp32-summary-shared')?.value, 120);
  assert.ok(!m.sections.some((s) => s.id === 'fp32-cosine'), 'no comparison file for fp32');
  assert.match(section(m, 'fp16-cosine').title, /^fp16: /);
  assert.equal(section(m, 'fp16-summary').summary?.find((s) => s.id === 'fp16-summary-equivalent')?.tone, 'bad', 'a FAIL is an error');
  const expected = { ...report, dtypes: [{ ...report.dtypes[1], status: 'EXPECTED-LOSS' }] };
  assert.equal(section(model('validate', expected), 'fp16-summary').summary?.find((s) => s.id === 'fp16-summary-equivalent')?.tone, 'neutral', 'an expected loss is not');
});

test('mask: elements kept per layer x projection as stacked series and a heat map', () => {
  const report = {
    budget: 100, modules: 3, k: 33, selected: 99, elements: 300,
    perProjection: { v_proj: 33, q_proj: 66 },
    perLayer: { '0': 66, '1': 33 },
    normPreservation: { a: 0.9, b: null },
    energyPreservation: { a: 0.81, b: null },
    perModule: [
      { name: L(0, 'q_proj'), layer: 0, projection: 'q_proj', selected: 33 },
      { name: L(0, 'v_proj'), layer: 0, projection: 'v_proj', selected: 33 },
      { name: L(1, 'q_proj'), layer: 1, projection: 'q_proj', selected: 11 },
    ],
  };
  const m = model('mask', report);
  assert.equal(summary(m, 'summary-k').value, 33);
  const grid = section(m, 'mask-layers');
  assert.deepEqual(series(grid, 'q_proj').data, [33, 11]);
  assert.deepEqual(grid.table?.rows, [['0', 33, 33], ['1', 11, null]]);
  assert.deepEqual(grid.table?.heat, [[null, 1, 1], [null, 1 / 3, null]]);
  assert.deepEqual(section(m, 'mask-projections').chart?.labels, ['q_proj', 'v_proj']);
  const kept = section(m, 'norm-preservation');
  assert.deepEqual(kept.chart?.labels, ['a', 'b'], 'an all-zero adapter keeps its place');
  assert.deepEqual(series(kept, '‖mask ⊙ Δ‖ / ‖Δ‖').data, [0.9, null]);
  assert.deepEqual(series(kept, 'energy kept').data, [0.81, null]);
});

test('decompose: coefficients with the truth beside them, rows findable per adapter', () => {
  const report = {
    method: 'nnls', coefficients: { alpha: 0, 'beta/v2': 2.0001 }, support: ['beta/v2'], relativeResidual: 1e-4, reconstructionError: 1e-8,
    decomposable: true, verdict: 'decomposable', explanation: 'explains 99.99%', truth: { 'beta/v2': 2 }, precision: 1, recall: 1,
    dictionary: [{ name: 'alpha', share: 0 }, { name: 'beta/v2', share: 1 }, { name: 'gamma', share: 0 }],
  };
  const m = model('decompose', report);
  assert.equal(m.verdict?.text, 'decomposable: explains 99.99%');
  assert.equal(summary(m, 'summary-recall').text, '100%');
  const c = section(m, 'coefficients');
  assert.deepEqual(c.chart?.labels, ['alpha', 'beta/v2', 'gamma']);
  assert.deepEqual(series(c, 'recovered').data, [0, 2.0001, null]);
  assert.deepEqual(series(c, 'truth').data, [0, 2, 0]);
  assert.deepEqual(c.table?.rowIds, ['coefficient-alpha', 'coefficient-beta_v2', 'coefficient-gamma']);
  assert.ok(!model('decompose', { ...report, truth: undefined }).summary.some((s) => s.id === 'summary-precision'));
});

test('census: categories and layers in order, tensors outside the layers last', () => {
  const report = {
    summary: {
      tensors: 5,
      params: 1000,
      bytes: 4000,
      layers: 2,
      loraTargetTensors: 2,
      nonTargetTensors: 3,
      categories: { attention: 2, embedding: 1 },
      categoryParams: { attention: 200, embedding: 800 },
    },
    perLayer: [{ layer: 1, tensors: 1, params: 100, loraTargetTensors: 1 }, { layer: 0, tensors: 1, params: 100, loraTargetTensors: 1 }],
    outsideLayers: { tensors: 3, params: 800 },
  };
  const m = model('census', report);
  assert.equal(summary(m, 'summary-params').text, '1,000');
  // The chart plots parameters, not tensor counts (which the table keeps).
  assert.deepEqual(section(m, 'categories').table?.rows, [['attention', 200, 2], ['embedding', 800, 1]]);
  assert.deepEqual(section(m, 'categories').chart?.series[0].data, [200, 800]);
  assert.deepEqual(section(m, 'layers').chart?.labels, ['0', '1', OUTSIDE_LAYERS]);
  // One dtype: its table stays, a chart of one bar goes.
  const oneDtype = model('census', { ...report, summary: { ...report.summary, dtypes: { F32: 5 }, dtypeParams: { F32: 1000 } } });
  assert.equal(section(oneDtype, 'dtypes').chart, undefined);
  assert.deepEqual(section(oneDtype, 'dtypes').table?.rows, [['F32', 5, 1000]]);
});

test('a projection name two categories share is named with its category (GPT-2 c_proj); markers tell merge rules apart', () => {
  const g = groupByLayer(
    [{ layer: 0, key: 'c_proj', category: 'attention' }, { layer: 0, key: 'c_proj', category: 'mlp' }, { layer: 0, key: 'c_attn', category: 'attention' }],
    (p) => p,
    () => 1,
  );
  assert.deepEqual([...g.series.keys()], ['attention c_proj', 'mlp c_proj', 'c_attn']);
  const report = { dtypes: {}, tensors: ['peft', 'peft-safe', 'fp32-cast'].flatMap((rule) => ['fp16', 'bf16'].map((dtype) => ({ name: 'model.layers.0.self_attn.q_proj.weight', layer: 0, dtype, rule, deltaLostFraction: 0.1 }))) };
  const series = section(model('precision', report), 'delta-lost').chart!.series;
  assert.equal(new Set(series.map((s) => `${s.color} ${s.pointStyle}`)).size, 6, 'six series, six looks');
  assert.ok(series.every((s) => s.color === (s.label.startsWith('fp16') ? 'blue' : 'orange')));
});

test('groupByLayer gives a second tensor in a taken cell its own series', () => {
  const g = groupByLayer([1, 2, 3], () => ({ layer: 0, key: 'bias', category: 'x' }), (i) => (i === 1 ? null : i));
  assert.deepEqual([...g.series.entries()], [['bias', [null]], ['bias (2)', [2]], ['bias (3)', [3]]]);
});

test('task-vector norms go on a log axis only when they span a decade', () => {
  const near = { tensors: [compareTensor(L(0, 'q_proj'), { taskVectorNorm: 0.83 }), compareTensor(L(1, 'q_proj'), { taskVectorNorm: 0.89 })] };
  const linear = section(model('compare', near), 'norm-distribution');
  assert.equal(linear.chart?.y.log, false);
  assert.equal(linear.chart?.y.min, 0);
  assert.doesNotMatch(linear.title, /log scale/);
  const wide = section(model('compare', { tensors: [...near.tensors, compareTensor('model.norm.weight', { loraTarget: false, loraNorm: 0, cosine: null, taskVectorNorm: 0.002 })] }), 'norm-distribution');
  assert.equal(wide.chart?.y.log, true);
  assert.match(wide.title, /\(log scale\)$/);
  assert.equal(spansDecade([0.3, 3]), true);
  assert.equal(spansDecade([0.3, 2.9, 0, -1]), false);
  assert.equal(spansDecade([5]), false);
});

test('the cosine axis starts a power of ten below 1, never closer than 1e-6, never below -1', () => {
  const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} vs ${b}`);
  close(cosineAxisMin([1, 1 - 2e-16, 0.9999999999999998]), 1 - 1e-6);
  close(cosineAxisMin([]), 1 - 1e-6);
  close(cosineAxisMin([null, 0.99999]), 0.9999);
  close(cosineAxisMin([0.95, 1]), 0.9);
  close(cosineAxisMin([0.3]), 0);
  assert.equal(cosineAxisMin([-0.5, 1]), -1);
  assert.equal(cosineAxisMin([-1]), -1);
});

test('numbers display without NaN, with the right precision', () => {
  assert.equal(formatCell(null), '—');
  assert.equal(formatCell(Number.NaN), '—');
  assert.equal(formatCell(1234567, 'int'), '1,234,567');
  assert.equal(formatCell(0.0123, 'percent'), '1.23%');
  assert.equal(formatCell(0, 'exp'), '0');
  assert.equal(formatCell(true), 'yes');
});

test('axis ticks stay short, and log axes label only 1, 2 and 5 times a power of ten', () => {
  assert.equal(formatTick(0.05), '0.05');
  assert.equal(formatTick(1234.5), '1,230');
  assert.equal(formatTick(300000), '300,000');
  assert.equal(formatTick(3e-6), '3e-6');
  assert.equal(formatTick(2e-5, undefined, true), '2e-5');
  assert.equal(formatTick(3e-5, undefined, true), '');
  assert.equal(formatTick(100, undefined, true), '100');
  assert.equal(formatTick(0.9999995, 'cosine'), '0.9999995');
  assert.equal(formatTick(0.9999999998, 'cosine', false, 2e-10), '0.9999999998');
  assert.equal(formatTick(0.95, 'cosine', false, 0.05), '0.95');
});

test('table sorting: numbers by value, names naturally (layer 10 after 9), missing values last both ways', () => {
  const rows = [['layers.10', 3], ['layers.9', null], ['layers.2', 1e-6], ['x', 3]];
  assert.deepEqual(sortedRowOrder(rows, 0, false), [2, 1, 0, 3]);
  assert.deepEqual(sortedRowOrder(rows, 1, false), [2, 0, 3, 1]);
  assert.deepEqual(sortedRowOrder(rows, 1, true), [0, 3, 2, 1], 'ties stay in order, null last');
});
