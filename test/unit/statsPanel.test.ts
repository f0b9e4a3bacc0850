/** The stats panel: the report's figures, histogram and heat map as the page draws them, and the heat map's CSV. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { heatmapCsv, sectionCsv } from '../../src/shared/charts/csv';
import { panelModel } from '../../src/shared/charts/panels';
import { StatsReport } from '../../src/shared/jobs/reports/stats';
import { randomF32, tmpDir, writeModel } from './helpers/builders';
import { runCli } from './helpers/cli';

const root = tmpDir();

function report(): StatsReport {
  const x = randomF32(50 * 30, 4);
  x[7] = NaN;
  const model = writeModel(path.join(root, 'm'), { model_type: 'llama' }, [{ name: 'w', shape: [50, 30], data: x }]);
  const json = path.join(root, 'stats.json');
  const r = runCli(['stats', '--model', model, '--tensor', 'w', '--bins', '20', '--grid', '8', '--json', json]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(fs.readFileSync(json, 'utf8')) as StatsReport;
}

test('figures, histogram and heat map sections from a real report; the non-finite count is flagged', () => {
  const r = report();
  const m = panelModel({ kind: 'stats', title: 'Statistics: w', report: r });
  assert.deepEqual(m.sections.map((s) => s.id), ['histogram', 'heatmap', 'figures']);
  const nonFinite = m.summary.find((s) => s.id === 'summary-non-finite')!;
  assert.deepEqual([nonFinite.value, nonFinite.tone], [1, 'bad']);
  assert.equal(m.summary.find((s) => s.id === 'summary-mean')!.value, r.summary.mean);
  const hist = m.sections[0];
  assert.equal(hist.chart!.labels!.length, 20);
  assert.deepEqual(hist.chart!.series[0].data, r.histogram!.counts);
  assert.deepEqual(hist.table!.rows.map((row) => row[2]), r.histogram!.counts);
  const h = m.sections[1].heatmap!;
  // 50 × 30 in cells of 7 × 4: 8 × 8 cells.
  assert.deepEqual([h.rows, h.cols, h.cellRows, h.cellCols], [8, 8, 7, 4]);
  assert.deepEqual(h.layers.map((l) => l.values), [r.heatmap.maxAbs, r.heatmap.meanAbs]);
});

test("the heat map's CSV: a row per cell with its element ranges (the last ones clipped to the matrix) and both values", () => {
  const r = report();
  const h = panelModel({ kind: 'stats', title: 'w', report: r }).sections.find((s) => s.id === 'heatmap')!;
  const lines = sectionCsv(h)!.split('\r\n');
  assert.equal(lines[0], 'first row,last row,first column,last column,max |x|,mean |x|');
  assert.equal(lines.length, 1 + 64 + 1);
  assert.equal(lines[1], `0,6,0,3,${r.heatmap.maxAbs[0]},${r.heatmap.meanAbs[0]}`);
  assert.equal(lines[64], `49,49,28,29,${r.heatmap.maxAbs[63]},${r.heatmap.meanAbs[63]}`);
  assert.equal(heatmapCsv({ ...h.heatmap!, layers: [{ label: 'v', values: [null] }], rows: 1, cols: 1 }).split('\r\n')[1], '0,6,0,3,');
});

test('a partial or foreign report draws dashes and keeps each bin and cell in its place', () => {
  for (const report of [{}, null, 'stats', { summary: 'x', histogram: [], heatmap: { rows: 'two' }, shape: 'w' }]) {
    const m = panelModel({ kind: 'stats', title: 'w', report });
    assert.deepEqual(m.sections.map((s) => s.id), ['figures']);
    assert.ok(m.summary.filter((s) => s.id !== 'summary-non-finite').every((s) => s.text === '—'), JSON.stringify(m.summary));
  }
  const m = panelModel({
    kind: 'stats',
    title: 'w',
    report: { tensor: 'w', shape: [2, 'x'], histogram: { edges: [0, 'x', 2], counts: [3, 1] }, heatmap: { rows: 1, cols: 2, cellRows: 2, cellCols: 1, maxAbs: [null, 0.5], meanAbs: ['?', 0.25] } },
  });
  assert.equal(m.verdict?.text, 'w [2 × ?] : values');
  assert.deepEqual(m.sections.find((s) => s.id === 'histogram')!.table!.rows, [[0, null, 3], [null, 2, 1]]);
  assert.deepEqual(m.sections.find((s) => s.id === 'heatmap')!.heatmap!.layers.map((l) => l.values), [[null, 0.5], [null, 0.25]]);
});
