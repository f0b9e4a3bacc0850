/**
 * The panels against the engine's real reports: each command runs through the built CLI (`npm run build`
 * first) on a tiny model, and the panel drawn from its JSON must show the report's own numbers. This
 * is the contract between the jobs and the panels: a renamed field fails here instead of a dash.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { PanelModel, Point, Section, valueCount } from '../../src/shared/charts/model';
import { panelModel } from '../../src/shared/charts/panels';
import { ReportKind } from '../../src/shared/webviewProtocol';
import { loraPair, peftConfig, randomF32, tmpDir, writeAdapter, writeModel } from './helpers/builders';

const CLI = path.resolve(__dirname, '../../../dist/cli.js');
const root = tmpDir('lora-lens-panels-');
const H = 16;
const LAYERS = 2;

function cli(...args: string[]): void {
  const r = spawnSync(process.execPath, [CLI, ...args, '--quiet', '--device', 'cpu'], { encoding: 'utf8' });
  assert.equal(r.status, 0, `lora-lens ${args[0]}: ${r.stderr}`);
}

const read = (...p: string[]): Record<string, unknown> => JSON.parse(fs.readFileSync(path.join(root, ...p), 'utf8'));
const draw = (kind: ReportKind, report: unknown, comparisons?: Record<string, unknown>): PanelModel => panelModel({ kind, title: kind, report, comparisons });
const value = (m: PanelModel | Section | undefined, id: string): unknown => m?.summary?.find((s) => s.id === id)?.value;
const section = (m: PanelModel, id: string): Section => m.sections.find((s) => s.id === id) ?? assert.fail(`no section ${id}`);

const names: string[] = [];
for (let l = 0; l < LAYERS; l++) {
  for (const p of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) names.push(`model.layers.${l}.self_attn.${p}.weight`);
  names.push(`model.layers.${l}.input_layernorm.weight`);
}
names.push('model.embed_tokens.weight', 'model.norm.weight');
const shape = (n: string): number[] => (n.endsWith('layernorm.weight') || n === 'model.norm.weight' ? [H] : n.includes('embed') ? [32, H] : [H, H]);
const base = writeModel(path.join(root, 'base'), { model_type: 'llama', hidden_size: H, num_hidden_layers: LAYERS }, names.map((name, i) => {
  const s = shape(name);
  return { name, shape: s, data: randomF32(s.reduce((a, b) => a * b, 1), 100 + i, 0.05) };
}));
const adapter = (dir: string, seed: number): string =>
  writeAdapter(path.join(root, dir), peftConfig({ r: 2, lora_alpha: 4 }), names.filter((n) => /(q|v)_proj/.test(n)).flatMap((n, i) => loraPair(n.replace(/\.weight$/, ''), 2, H, H, seed + 10 * i)));
const a1 = adapter('a1', 1);
const a2 = adapter('a2', 2);

test('validate, compare and precision reports: the panels show their numbers', () => {
  cli('validate', '--base', base, '--adapter', a1, '--out', path.join(root, 'val'), '--dtypes', 'fp32,bf16');
  const summary = read('val', 'summary.json');
  const dtypes = summary.dtypes as Array<{ dtype: string; status: string; compare: Record<string, unknown> }>;
  const comparisons = Object.fromEntries(dtypes.map((d) => [d.dtype, read('val', d.dtype, 'comparison_results.json')]));

  const v = draw('validate', summary, comparisons);
  assert.equal(value(v, 'summary-ok'), summary.ok);
  for (const d of dtypes) {
    assert.equal(value(v, `status-${d.dtype}`), d.status);
    assert.equal(value(section(v, `${d.dtype}-summary`), `${d.dtype}-summary-shared`), d.compare.shared);
    assert.equal(valueCount(section(v, `${d.dtype}-cosine`).chart!), d.compare.shared, 'one cosine point per shared tensor');
  }

  const bf16 = comparisons.bf16 as { summary: Record<string, number>; tensors: unknown[] };
  const c = draw('compare', bf16);
  for (const [id, key] of [['summary-shared', 'shared'], ['summary-perfect-matches', 'perfectMatches'], ['summary-task-vector-only', 'taskVectorOnly'], ['mean-cosine', 'meanCosine'], ['max-abs-diff', 'maxAbsDiff']]) {
    assert.equal(value(c, id), bf16.summary[key], id);
  }
  assert.ok(bf16.summary.taskVectorOnly > 0, 'bf16 against an fp32 base changes untouched tensors');
  assert.equal(valueCount(section(c, 'norms').chart!), bf16.tensors.length, 'one norm point per tensor');
  const coverage = section(c, 'coverage');
  assert.deepEqual(coverage.chart?.labels, ['0', '1', 'outside layers']);
  const targets = coverage.chart!.series.find((s) => s.label === 'LoRA targets')!.data as number[];
  assert.equal(targets.reduce((a, b) => a + b, 0), bf16.summary.shared);

  const precision = read('val', 'bf16', 'precision.json') as { dtypes: { bf16: Record<string, number> }; tensors: Array<{ castArtifactTensors: number }> };
  const p = draw('precision', precision);
  assert.equal(value(p, 'nonzero-tensors-bf16'), precision.dtypes.bf16.nonzeroTensors);
  assert.equal(value(p, 'cast-artifact-tensors-bf16'), precision.dtypes.bf16.castArtifactTensors);
  assert.equal(value(p, 'delta-lost-bf16'), precision.dtypes.bf16.deltaLostFraction);
  const strip = section(p, 'cast-artifacts').chart!;
  assert.equal(valueCount(strip), precision.tensors.filter((t) => t.castArtifactTensors > 0).length);
  assert.ok((strip.series[0].data as Point[]).every((pt) => typeof pt.x === 'string' && strip.labels!.includes(pt.x)));
  assert.equal(valueCount(section(p, 'delta-lost').chart!), 2 * LAYERS, 'q and v of each layer');
});

test('census, mask and decompose reports: the panels show their numbers', () => {
  cli('census', base, '--adapter', a1, '--json', path.join(root, 'census.json'));
  const census = read('census.json') as { summary: Record<string, number> };
  const c = draw('census', census);
  assert.equal(value(c, 'summary-tensors'), names.length);
  assert.equal(value(c, 'summary-lora-targets'), census.summary.loraTargetTensors);
  assert.deepEqual(section(c, 'layers').chart?.labels, ['0', '1', 'outside layers']);
  assert.equal(value(c, 'summary-trainable-params'), 2 * LAYERS * 2 * (H + H), 'r (in + out) per q and v module');
  assert.deepEqual(section(c, 'dtypes').table?.rows, [['F32', names.length, census.summary.params]]);

  cli('mask', '--base', base, '--adapters', a1, a2, '--budget', '64', '--out', path.join(root, 'mask'));
  const mask = read('mask', 'mask.json') as Record<string, number>;
  const m = draw('mask', mask);
  assert.equal(value(m, 'summary-k'), mask.k);
  assert.equal(value(m, 'summary-selected'), mask.selected);
  const grid = section(m, 'mask-layers').table!;
  assert.deepEqual(grid.rows.map((r) => r[0]), ['0', '1']);
  assert.deepEqual(grid.columns.map((col) => col.key), ['layer', 'q_proj', 'v_proj']);
  assert.equal(grid.rows.flatMap((r) => r.slice(1) as number[]).reduce((a, b) => a + b, 0), mask.selected);

  cli('merge', '--base', base, '--adapter', a2, '--out', path.join(root, 'target'), '--dtype', 'fp32');
  cli('decompose', '--mask', path.join(root, 'mask'), '--base', base, '--dictionary', a1, a2, '--target', path.join(root, 'target'), '--json', path.join(root, 'decompose.json'));
  const dec = read('decompose.json') as { coefficients: Record<string, number>; decomposable: boolean };
  const d = draw('decompose', dec);
  assert.equal(value(d, 'summary-decomposable'), dec.decomposable);
  const coefficients = section(d, 'coefficients');
  assert.deepEqual(coefficients.chart?.labels, Object.keys(dec.coefficients));
  assert.deepEqual(coefficients.chart?.series[0].data, Object.values(dec.coefficients));
  assert.equal(coefficients.table?.rowIds?.length, 2);
});
