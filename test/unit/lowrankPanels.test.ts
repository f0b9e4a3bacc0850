/**
 * The low-rank toolbox's panels and the resize preview, against the engine's real reports: spectrum,
 * resize, extract-lora and combine run through the built CLI (`npm run build` first) on tiny adapters
 * and models; the panels must show the reports' own numbers, and the preview read off a spectrum must
 * predict what resize then writes.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { PanelModel, Point, Section, valueCount } from '../../src/shared/charts/model';
import { cumulativeEnergy } from '../../src/shared/charts/lowrank';
import { panelModel } from '../../src/shared/charts/panels';
import { maxResizeRank, resizePreview, resizePreviews, resizeRanks, resizeSpectrum } from '../../src/shared/charts/resizePreview';
import { CombineReport, ExtractLoraReport, ResizeReport, SpectrumReport } from '../../src/shared/jobs/reports/lowrank';
import { ReportKind } from '../../src/shared/webviewProtocol';
import { loraPair, peftConfig, randomF32, tmpDir, writeAdapter, writeModel } from './helpers/builders';
import { runCli } from './helpers/cli';
import { kohyaZoo } from './helpers/lycorisZoo';
import { closeCheckpoint, openCheckpoint } from '../../src/engine/checkpoint/checkpoint';

const root = tmpDir('lora-lens-lowrank-panels-');
const H = 16;
const LAYERS = 3;
const PROJ = ['q_proj', 'v_proj'];
const moduleName = (l: number, p: string): string => `model.layers.${l}.self_attn.${p}`;

// Rank 4 everywhere but v_proj (rank 2 through rank_pattern), so presets and heat cells differ per kind.
const a1 = writeAdapter(path.join(root, 'a1'), peftConfig({ r: 4, lora_alpha: 8, rank_pattern: { v_proj: 2 }, target_modules: PROJ }), Array.from({ length: LAYERS }, (_, l) => [
  ...loraPair(moduleName(l, 'q_proj'), 4, H, H, 10 + l),
  ...loraPair(moduleName(l, 'v_proj'), 2, H, H, 20 + l),
]).flat());
const a2 = writeAdapter(path.join(root, 'a2'), peftConfig({ r: 3, lora_alpha: 3, target_modules: ['q_proj'] }), Array.from({ length: LAYERS }, (_, l) => loraPair(moduleName(l, 'q_proj'), 3, H, H, 30 + l)).flat());

function cli<T>(name: string, ...args: string[]): T {
  const json = path.join(root, `${name}.json`);
  const r = runCli([...args, '--json', json, '--device', 'cpu']);
  assert.equal(r.status, 0, `lora-lens ${args[0]}: ${r.stderr}`);
  return JSON.parse(fs.readFileSync(json, 'utf8')) as T;
}

const draw = (kind: ReportKind, report: unknown): PanelModel => panelModel({ kind, title: kind, report });
const value = (m: PanelModel, id: string): unknown => m.summary.find((s) => s.id === id)?.value;
const section = (m: PanelModel, id: string): Section => m.sections.find((s) => s.id === id) ?? assert.fail(`no section ${id}`);

const spectrum = cli<SpectrumReport>('spectrum', 'spectrum', '--adapter', a1);

test('spectrum panel: every singular value drawn on a log axis, one cloud per module kind', () => {
  const m = draw('spectrum', spectrum);
  assert.equal(value(m, 'summary-modules'), 2 * LAYERS);
  assert.equal(value(m, 'summary-total-rank'), spectrum.summary.totalRank);
  assert.equal(value(m, 'summary-energy-rank99'), spectrum.summary.totalEnergyRank99);
  assert.equal(value(m, 'summary-rank-usage'), spectrum.summary.rankUsage99);
  const sv = section(m, 'singular-values');
  assert.equal(sv.chart?.y.log, true);
  assert.deepEqual(sv.chart?.series.map((s) => s.label), PROJ);
  assert.equal(valueCount(sv.chart!), LAYERS * (4 + 2), 'rank-many values of each module');
  const q0 = (sv.chart!.series[0].data as Point[]).filter((p) => p.label === moduleName(0, 'q_proj'));
  assert.deepEqual(q0.map((p) => p.y), spectrum.modules.find((x) => x.name === moduleName(0, 'q_proj'))!.singularValues);
  assert.deepEqual(q0.map((p) => p.x), [1, 2, 3, 4]);
  // Its table holds the same numbers: σ1..σ4 per module, v_proj's σ3, σ4 empty.
  assert.deepEqual(sv.table?.columns.map((c) => c.key), ['module', 'rank', 's1', 's2', 's3', 's4']);
  const v0 = sv.table!.rows.find((r) => r[0] === moduleName(0, 'v_proj'))!;
  assert.deepEqual(v0.slice(4), [null, null]);
});

test('spectrum panel: energy curves reach 100% at the full rank, and the heat map of energyRank99', () => {
  const m = draw('spectrum', spectrum);
  const energy = section(m, 'energy');
  assert.deepEqual(energy.chart?.labels, ['1', '2', '3', '4']);
  const q = energy.chart!.series.find((s) => s.label === 'q_proj')!.data as number[];
  const mean = (k: number): number => spectrum.modules.filter((x) => x.projection === 'q_proj').reduce((a, x) => a + cumulativeEnergy(x.singularValues)[k]!, 0) / LAYERS;
  assert.ok(Math.abs(q[0] - mean(0)) < 1e-15);
  assert.ok(Math.abs(q[3] - 1) < 1e-12, 'the whole rank keeps everything');
  const v = energy.chart!.series.find((s) => s.label === 'v_proj')!.data as number[];
  assert.equal(v[3], v[1], 'a rank-2 module keeps at rank 4 what it keeps at rank 2');
  const least = energy.chart!.series.find((s) => s.label === 'least of any module')!.data as number[];
  assert.ok(least.every((x, i) => x <= q[i] + 1e-15 && x <= v[i] + 1e-15));
  assert.equal(valueCount(energy.chart!), 3 * 4, 'the 99% line not counted');

  const heat = section(m, 'energy-rank-layers').table!;
  assert.deepEqual(heat.columns.map((c) => c.key), ['layer', ...PROJ]);
  assert.deepEqual(heat.rows.map((r) => r[0]), ['0', '1', '2']);
  for (const x of spectrum.modules) {
    const row = heat.rows[x.layer!];
    const col = heat.columns.findIndex((c) => c.key === x.projection);
    assert.equal(row[col], x.energyRank99);
    assert.equal(heat.heat![x.layer!][col], x.energyRank99 / x.rank, 'shaded by the share of its rank');
  }
  assert.equal(section(m, 'modules').table?.rows.length, 2 * LAYERS);
  assert.equal(m.resize, true, 'a Resize… button for its adapter');
  assert.equal(draw('spectrum', { ...spectrum, adapter: undefined }).resize, false, 'none without an adapter to resize');
});

test('spectrum panel: every module\'s rule in its table (one LyCORIS file of every kind)', () => {
  const zoo = cli<SpectrumReport>('spectrum-zoo', 'spectrum', '--adapter', kohyaZoo(path.join(root, 'zoo.safetensors'), false));
  const table = section(draw('spectrum', zoo), 'modules').table!;
  const col = table.columns.findIndex((c) => c.key === 'rule');
  assert.equal(table.columns[col - 1].key, 'kind', 'beside the kind');
  const rules = new Map(table.rows.map((r) => [r[0], r[col]]));
  assert.deepEqual(rules, new Map(zoo.modules.map((m) => [m.name, m.rule])));
  assert.deepEqual([...new Set(rules.values())].sort(), ['LoCon (Tucker)', 'LoHa', 'LoHa (Tucker)', 'LoKr', 'LoKr (Tucker)', 'LoRA', 'full diff']);
});

test('resize preview: predicted from the spectrum, it is what resize writes', () => {
  assert.equal(maxResizeRank(spectrum), 2, 'v_proj holds 2 singular values');
  const offered = resizePreviews(spectrum).map((p) => p.target);
  assert.deepEqual(offered, [{ rank: 1 }, { rank: 2 }, { energy: 0.9 }, { energy: 0.95 }, { energy: 0.99 }], 'rank presets up to what the rank-2 modules allow');
  assert.deepEqual(resizeRanks(64), [4, 8, 16, 32, 64]);
  assert.deepEqual(resizeRanks(48), [2, 4, 8, 16, 32]);
  // 0.97: a free energy value (typed in the resize flow), not a preset.
  for (const target of [{ rank: 1 }, { rank: 2 }, { energy: 0.9 }, { energy: 0.97 }, { energy: 0.99 }]) {
    const p = resizePreview(spectrum, target);
    const tag = 'rank' in target ? `r${target.rank}` : `e${target.energy}`;
    const r = cli<ResizeReport>(`resize-${tag}`, 'resize', '--adapter', a1, '--out', path.join(root, `resized-${tag}`), ...('rank' in target ? ['--rank', String(target.rank)] : ['--energy', String(target.energy)]));
    assert.deepEqual(p.ranks, r.modules.map((x) => x.rank), tag);
    assert.equal(p.params, r.summary.params, tag);
    assert.equal(p.fromParams, r.summary.fromParams, tag);
    assert.ok(Math.abs(p.meanEnergyKept - r.summary.meanEnergyKept) < 1e-9, tag);
    assert.ok(Math.abs(p.maxRelError - r.summary.maxRelError) < 1e-6, `${tag}: predicted ${p.maxRelError}, written ${r.summary.maxRelError}`);
    const bytes = fs.statSync(path.join(root, `resized-${tag}`, 'adapter_model.safetensors')).size;
    assert.ok(bytes >= p.bytes && bytes < p.bytes + 4096, `${tag}: ${bytes} bytes on disk, ${p.bytes} predicted`);
    assert.equal(p.changes, p.ranks.some((k, i) => k < spectrum.modules[i].rank));
  }
  const full = resizePreview(spectrum, { rank: 2 });
  assert.equal(full.changes, true, 'q_proj goes from 4 to 2');
});

test('resize preview of a LyCORIS file (LoHa, LoKr, Tucker cores, convolutions, a full diff with its diff_b): the parameters resize writes', () => {
  const zoo = cli<SpectrumReport>('spectrum-zoo-preview', 'spectrum', '--adapter', kohyaZoo(path.join(root, 'zoo-preview.safetensors'), false));
  const preview = resizeSpectrum(zoo)!;
  assert.equal(preview.modules.length, zoo.modules.length - 1, 'the diff_b is copied, not resized');
  assert.equal(maxResizeRank(preview), 3, 'the rank-3 LoRA and LoCon, not the diff_b\'s one value');
  for (const target of [{ rank: 2 }, { energy: 0.9 }]) {
    const p = resizePreview(preview, target);
    const tag = 'rank' in target ? `zoo-r${target.rank}` : `zoo-e${target.energy}`;
    const out = path.join(root, tag);
    const r = cli<ResizeReport>(tag, 'resize', '--adapter', path.join(root, 'zoo-preview.safetensors'), '--out', out, ...('rank' in target ? ['--rank', '2'] : ['--energy', '0.9']));
    const names = zoo.modules.filter((m) => !m.biasDiff).map((m) => m.name);
    assert.deepEqual(new Map(names.map((n, i) => [n, p.ranks[i]])), new Map(r.modules.map((m) => [m.name, m.rank])), tag);
    assert.equal(p.fromParams, r.summary.fromParams, `${tag}: LoHa and LoKr counted by their own tensors, as resize counts them`);
    assert.equal(p.params, r.summary.params, tag);
    // The written file itself: every lora_down and lora_up, a conv's [k, in, kh, kw] and [out, k, 1, 1] included, holds k·(out + in·kh·kw).
    const written = openCheckpoint(path.join(out, 'zoo-preview.safetensors'));
    const factors = written.tensors.filter((t) => /\.lora_(down|up)\.weight$/.test(t.name));
    assert.ok(factors.some((t) => t.shape.length === 4), 'a convolution among them');
    assert.equal(factors.reduce((a, t) => a + t.numel, 0), p.params, tag);
    closeCheckpoint(written);
  }
  // A LoHa's source parameters are its four factors, not r₁·r₂·(out + in).
  const loha = zoo.modules.find((m) => m.name.endsWith('attentions_0_proj_out'))!;
  assert.equal(loha.params, 10 * 3 + 3 * 12 + 10 * 2 + 2 * 12, 'hada_w1_a [10, 3], w1_b [3, 12], w2_a [10, 2], w2_b [2, 12]');
});

test('the resize preview reads the spectrum report at the boundary: a module without its rank or shape gives no preview', () => {
  const modules = spectrum.modules.map(({ rank, out, in: n, params, singularValues }) => ({ rank, out, in: n, params, singularValues }));
  assert.deepEqual(resizeSpectrum(JSON.parse(JSON.stringify(spectrum))), { modules });
  assert.equal(resizeSpectrum({ ...spectrum, modules: [...spectrum.modules, { name: 'x', rank: 2, singularValues: [1, 0.5] }] }), null);
});

test('resize panel: each module\'s error beside its optimum', () => {
  const r = cli<ResizeReport>('resize-panel', 'resize', '--adapter', a1, '--out', path.join(root, 'resized-panel'), '--rank', '1');
  const m = draw('resize', r);
  assert.equal(value(m, 'summary-params'), r.summary.params);
  assert.equal(value(m, 'summary-max-rel-error'), r.summary.maxRelError);
  const s = section(m, 'resize-error');
  assert.equal(valueCount(s.chart!), 2 * LAYERS);
  const row = s.table!.rows.find((x) => x[0] === moduleName(1, 'q_proj'))!;
  const mod = r.modules.find((x) => x.name === moduleName(1, 'q_proj'))!;
  assert.deepEqual(row, [mod.name, mod.fromRank, mod.rank, mod.energyKept, mod.relError, mod.optimalRelError]);
});

test('combine panel: the adapters with their weights, and each module\'s rank', () => {
  const r = cli<CombineReport>('combine', 'combine', '--adapters', a1, a2, '--weights', '1,-0.5', '--out', path.join(root, 'combined'));
  const m = draw('combine', r);
  assert.equal(value(m, 'summary-adapters'), 2);
  assert.equal(value(m, 'summary-rank'), 'exact (Σ rᵢ)');
  assert.deepEqual(section(m, 'inputs').table?.rows.map((x) => x[1]), [1, -0.5]);
  const ranks = section(m, 'combine-ranks');
  const q = ranks.chart!.series.find((s) => s.label === 'q_proj')!.data;
  assert.deepEqual(q, [7, 7, 7], 'q_proj: ranks 4 + 3 concatenated');
  assert.deepEqual(ranks.chart!.series.find((s) => s.label === 'v_proj')!.data, [2, 2, 2]);
  const truncated = draw('combine', cli<CombineReport>('combine-r2', 'combine', '--adapters', a1, a2, '--out', path.join(root, 'combined-r2'), '--rank', '2'));
  assert.equal(value(truncated, 'summary-rank'), 2);
});

test('extract-lora panel: energy captured per module, rounding noise of a bf16 model, changed tensors not captured', () => {
  const names = [...Array.from({ length: LAYERS }, (_, l) => PROJ.map((p) => `${moduleName(l, p)}.weight`)).flat(), 'model.norm.weight'];
  const shape = (n: string): number[] => (n.endsWith('norm.weight') ? [H] : [H, H]);
  const tensors = names.map((name, i) => ({ name, shape: shape(name), data: randomF32(shape(name).reduce((a, b) => a * b, 1), 50 + i, 0.05) }));
  const base = writeModel(path.join(root, 'base'), { model_type: 'llama', hidden_size: H, num_hidden_layers: LAYERS }, tensors);
  // The fine-tuned model: a rank-2 change of every q_proj, the final norm changed, stored as bf16.
  const finetuned = writeModel(path.join(root, 'finetuned'), { model_type: 'llama', hidden_size: H, num_hidden_layers: LAYERS }, tensors.map((t, i) => {
    const data = Float32Array.from(t.data);
    if (t.name.includes('q_proj')) {
      const u = randomF32(2 * H, 70 + i, 0.1);
      const v = randomF32(2 * H, 80 + i, 0.1);
      for (let o = 0; o < H; o++) for (let c = 0; c < H; c++) data[o * H + c] += u[o] * v[c] + u[H + o] * v[H + c];
    }
    if (t.name === 'model.norm.weight') data[0] += 0.5;
    return { ...t, data, dtype: 'BF16' as const };
  }));
  const r = cli<ExtractLoraReport>('extract-lora', 'extract-lora', '--base', base, '--finetuned', finetuned, '--out', path.join(root, 'extracted'), '--rank', '2');
  const m = draw('extract-lora', r);
  assert.equal(value(m, 'summary-modules'), r.summary.modules);
  assert.equal(value(m, 'summary-not-captured'), r.summary.notCaptured);
  assert.equal(value(m, 'summary-mean-energy-kept'), r.summary.meanEnergyKept);
  const energy = section(m, 'energy-captured');
  assert.equal(valueCount(energy.chart!), r.modules.length);
  assert.deepEqual(energy.table?.rows.map((x) => x[2]), r.modules.map((x) => x.energyKept));
  const noisy = r.modules.filter((x) => x.roundingNoise);
  assert.ok(noisy.length > 0, 'a bf16 model has rounding noise in its task vectors');
  assert.equal(value(m, 'summary-rounding-noise'), Math.max(...noisy.map((x) => x.roundingNoise!.fraction)));
  assert.equal(valueCount(section(m, 'rounding-noise').chart!), noisy.length);
  const missed = section(m, 'not-captured').table!;
  assert.ok(missed.rows.some((x) => x[0] === 'model.norm.weight'), JSON.stringify(missed.rows));
  assert.equal(missed.tensorColumn, 0, 'its names link to the census tree');
});

test('low-rank panels draw a partial or foreign report with dashes, never throw', () => {
  for (const kind of ['spectrum', 'resize', 'extract-lora', 'combine'] as const) {
    for (const report of [{}, { modules: [{ name: 'x', singularValues: ['a', null] }], summary: null }, { modules: 'nope' }]) {
      const m = draw(kind, report);
      assert.equal(m.kind, kind);
    }
  }
  const zero = draw('spectrum', { modules: [{ name: 'model.layers.0.self_attn.q_proj', rank: 2, singularValues: [0, 0], energyRank99: 0 }], summary: {} });
  assert.equal(valueCount(section(zero, 'singular-values').chart!), 0, 'a zero delta has no point on a log axis');
  assert.match(section(zero, 'singular-values').note ?? '', /1 module with a zero delta/);
});
