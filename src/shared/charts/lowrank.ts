/**
 * Panels of the low-rank toolbox: spectrum (singular values per module, energy-vs-rank curves, the
 * rank holding 99% of the energy per layer and module kind), resize, extract-lora and combine (what
 * each module kept). Modules are grouped by layer and projection as the other per-layer panels are.
 */
import { ExtractLoraView, readCombineReport, readExtractLoraReport, readResizeReport, readSpectrumReport, SpectrumView } from '../jobs/reports/lowrank';
import { formatCell } from './format';
import { Cell, ChartSpec, Column, NumberFormat, PanelModel, Point, Section, Series, SERIES_COLORS, SummaryItem } from './model';
import { groupByLayer, placeTensor, Placement } from './tensors';

const POINT_STYLES: NonNullable<Series['pointStyle']>[] = ['circle', 'triangle', 'rect', 'rectRot'];

/** A module of a report, read with its name. */
interface Named {
  name: string;
}

/** A module's place: the census classifier on its name, as the engine places it. */
const placeModule = (m: Named): Placement => placeTensor({}, `${m.name}.weight`);

/** Attention then MLP projections in the order models define them; other kinds after, by name. */
const KNOWN_KINDS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const kindRank = (key: string): number => (KNOWN_KINDS.includes(key) ? KNOWN_KINDS.indexOf(key) : KNOWN_KINDS.length);

/** The report's modules (those with a name), by layer, then kind: the order of every series and table. */
function named<M extends { name: string | null }>(xs: M[]): Array<M & Named> {
  const modules = xs.filter((m): m is M & Named => m.name !== null);
  const places = new Map<Named, Placement>(modules.map((m) => [m, placeModule(m)]));
  const layer = (m: Named): number => places.get(m)!.layer ?? Infinity;
  const key = (m: Named): string => places.get(m)!.key;
  return modules.sort((a, b) => layer(a) - layer(b) || kindRank(key(a)) - kindRank(key(b)) || key(a).localeCompare(key(b)) || a.name.localeCompare(b.name));
}

function item(id: string, label: string, value: number | string | null | undefined, fmt?: NumberFormat): SummaryItem {
  return { id, label, text: formatCell(value ?? null, fmt), value: value ?? null };
}

/** Series keys (projections) in first-seen order, each with its modules. */
function byKey<M extends Named>(modules: M[]): Map<string, M[]> {
  const out = new Map<string, M[]>();
  for (const m of modules) {
    const key = placeModule(m).key;
    out.set(key, [...(out.get(key) ?? []), m]);
  }
  return out;
}

/**
 * One bar per layer and projection of a per-module figure, with the table of every module beside it
 * (`columns` after the module's name): the shape of the resize, extract-lora and combine sections.
 */
function perModuleSection<M extends Named>(id: string, title: string, modules: M[], value: (m: M) => number | null, y: ChartSpec['y'], columns: Array<Column & { get(m: M): Cell }>, note?: string): Section {
  const grid = groupByLayer(modules, placeModule, value);
  const keys = [...grid.series.keys()];
  return {
    id,
    title,
    note,
    chart: modules.length === 0 ? undefined : {
      type: 'bar',
      labels: grid.labels,
      series: keys.map((k, i) => ({ label: k, color: SERIES_COLORS[i % SERIES_COLORS.length], data: grid.series.get(k)! })),
      x: { title: 'layer' },
      y,
    },
    table: modules.length === 0 ? undefined : {
      columns: [{ key: 'module', label: 'module' }, ...columns.map(({ key, label, format }) => ({ key, label, format }))],
      rows: modules.map((m): Cell[] => [m.name, ...columns.map((c) => c.get(m))]),
    },
  };
}

/** Σ_{i≤k} σᵢ² / Σ σᵢ² for k = 1..n (null when the delta is zero: no fraction to draw). */
export function cumulativeEnergy(s: number[]): Array<number | null> {
  const total = s.reduce((a, x) => a + x * x, 0);
  let acc = 0;
  return s.map((x) => {
    acc += x * x;
    return total > 0 ? Math.min(1, acc / total) : null;
  });
}

type SpectrumModule = SpectrumView['modules'][number] & Named;

export function spectrumPanel(report: unknown, title: string): PanelModel {
  const r = readSpectrumReport(report);
  const s = r.summary;
  const modules = named(r.modules);
  const keys = byKey(modules);
  const maxLen = Math.max(0, ...modules.map((m) => m.singularValues.length));
  const ks = Array.from({ length: maxLen }, (_, i) => i + 1);
  const zero = modules.filter((m) => !m.singularValues.some((x) => x > 0));

  // Singular values: one cloud per module kind (a line per module would need a legend of every module).
  const svSeries: Series[] = [...keys].map(([key, ms], i) => ({
    label: key,
    color: SERIES_COLORS[i % SERIES_COLORS.length],
    pointStyle: POINT_STYLES[Math.floor(i / SERIES_COLORS.length) % POINT_STYLES.length],
    data: ms.flatMap((m) => m.singularValues.flatMap((y, j): Point[] => (y > 0 ? [{ x: j + 1, y, label: m.name }] : []))),
  }));

  // Energy kept at rank k: the mean over each kind's modules, and the least any module keeps.
  const curves = new Map(modules.map((m) => [m, cumulativeEnergy(m.singularValues)]));
  const at = (m: SpectrumModule, k: number): number | null => {
    const c = curves.get(m)!;
    return c.length === 0 || c[0] === null ? null : c[Math.min(k, c.length) - 1];
  };
  const mean = (xs: Array<number | null>): number | null => {
    const v = xs.filter((x): x is number => x !== null);
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
  };
  const energyByKey = [...keys].map(([key, ms]) => [key, ks.map((k) => mean(ms.map((m) => at(m, k))))] as const);
  const least = ks.map((k) => {
    const v = modules.map((m) => at(m, k)).filter((x): x is number => x !== null);
    return v.length ? Math.min(...v) : null;
  });

  // energyRank99 per layer and module kind; each cell shaded by the share of its module's rank it uses.
  const e99 = groupByLayer(modules, placeModule, (m) => m.energyRank99);
  const ranks = groupByLayer(modules, placeModule, (m) => m.rank);
  const heatKeys = [...e99.series.keys()];

  const warnings = [...r.warnings];
  const noFactor = named(r.noFactorForm);
  if (noFactor.length) warnings.push(`${noFactor.length} module${noFactor.length === 1 ? ' has' : 's have'} no exact factor form (${[...new Set(noFactor.map((m) => m.rule ?? '?'))].join(', ')}): not in this spectrum.`);

  const usage = s?.rankUsage99 ?? null;
  return {
    kind: 'spectrum',
    heading: title,
    resize: r.adapter !== null && modules.length > 0,
    verdict: usage !== null ? { text: `${formatCell(s?.modules ?? null, 'int')} modules, total rank ${formatCell(s?.totalRank ?? null, 'int')}: 99% of each delta's energy lies in ${formatCell(s?.totalEnergyRank99 ?? null, 'int')} of those ranks (${formatCell(usage, 'percent')}).`, tone: 'neutral' } : null,
    summary: [
      item('summary-modules', 'Modules', s?.modules, 'int'),
      item('summary-total-rank', 'Total rank', s?.totalRank, 'int'),
      item('summary-energy-rank99', 'Rank holding 99% (sum)', s?.totalEnergyRank99, 'int'),
      item('summary-rank-usage', 'Share of the rank used (99%)', s?.rankUsage99, 'percent'),
      item('summary-mean-energy-rank99', 'Mean rank for 99%', s?.meanEnergyRank99, 'general'),
      item('summary-max-energy-rank99', 'Largest rank for 99%', s?.maxEnergyRank99, 'int'),
    ],
    warnings,
    sections: [
      {
        id: 'singular-values',
        title: 'Singular values of each module\'s delta',
        note: `σᵢ of ΔW = s·B@A, exact, on a log scale: one point per module and index, coloured by module kind. A curve that drops steeply uses few of its ranks.${zero.length ? ` ${zero.length} module${zero.length === 1 ? '' : 's'} with a zero delta (lora_B all zero) ${zero.length === 1 ? 'has' : 'have'} no point.` : ''}`,
        chart: { type: 'scatter', series: svSeries, x: { title: 'index i', integer: true, min: 1 }, y: { title: 'singular value σᵢ', log: true } },
        table: {
          columns: [{ key: 'module', label: 'module' }, { key: 'rank', label: 'rank', format: 'int' }, ...ks.map((k) => ({ key: `s${k}`, label: `σ${k}`, format: 'exp' as const }))],
          rows: modules.map((m): Cell[] => [m.name, m.rank, ...ks.map((k) => m.singularValues[k - 1] ?? null)]),
        },
      },
      {
        id: 'energy',
        title: 'Energy kept at each rank',
        note: 'Σ_{i≤k} σᵢ² / ‖ΔW‖²_F: the fraction of each delta a rank-k resize keeps (Eckart–Young: the best any rank-k adapter can). Mean over each module kind\'s modules, and the least any module keeps.',
        chart: {
          type: 'line',
          labels: ks.map(String),
          series: [
            // Past the palette's colours, dashed lines tell a kind from the one of its colour.
            ...energyByKey.map(([key, data], i) => ({ label: key, color: SERIES_COLORS[i % SERIES_COLORS.length], dashed: i >= SERIES_COLORS.length, data })),
            { label: 'least of any module', color: 'foreground' as const, dashed: true, data: least },
            { label: '99%', color: 'red' as const, asLine: true, dashed: true, data: ks.map(() => 0.99) },
          ],
          x: { title: 'rank k' },
          y: { title: 'energy kept', format: 'percent', max: 1 },
        },
        table: {
          columns: [{ key: 'k', label: 'rank k' }, ...energyByKey.map(([key]) => ({ key, label: `${key} (mean)`, format: 'percent' as const })), { key: 'least', label: 'least of any module', format: 'percent' }],
          rows: ks.map((k, i): Cell[] => [k, ...energyByKey.map(([, data]) => data[i]), least[i]]),
        },
      },
      {
        id: 'energy-rank-layers',
        title: 'Rank holding 99% of the energy, per layer and module kind',
        note: 'A heat map: each cell is the smallest rank whose singular values hold 99% of that module\'s ‖ΔW‖²_F; the stronger its colour, the more of the module\'s trained rank it needs.',
        table: {
          columns: [{ key: 'layer', label: 'layer' }, ...heatKeys.map((k) => ({ key: k, label: k, format: 'int' as const }))],
          rows: e99.labels.map((l, i): Cell[] => [l, ...heatKeys.map((k) => e99.series.get(k)![i])]),
          heat: e99.labels.map((_, i) => [null, ...heatKeys.map((k) => {
            const v = e99.series.get(k)![i];
            const rank = ranks.series.get(k)?.[i];
            return v === null || !rank ? null : v / rank;
          })]),
        },
      },
      {
        id: 'modules',
        title: 'Every module',
        note: 'Energy ranks: the smallest k holding 90%, 95% and 99% of ‖ΔW‖²_F. Numerical rank: singular values above max(out, in)·ε·σ₁. Stable rank ‖ΔW‖²_F / σ₁²; effective rank exp of the entropy of σᵢ / Σσ.',
        table: {
          columns: [
            { key: 'module', label: 'module' },
            { key: 'layer', label: 'layer' },
            { key: 'kind', label: 'kind' },
            { key: 'rule', label: 'rule' },
            { key: 'rank', label: 'rank', format: 'int' },
            { key: 'energyRank90', label: 'rank 90%', format: 'int' },
            { key: 'energyRank95', label: 'rank 95%', format: 'int' },
            { key: 'energyRank99', label: 'rank 99%', format: 'int' },
            { key: 'numericalRank', label: 'numerical rank', format: 'int' },
            { key: 'stableRank', label: 'stable rank', format: 'general' },
            { key: 'effectiveRank', label: 'effective rank', format: 'general' },
            { key: 'frobeniusNorm', label: '‖ΔW‖_F', format: 'exp' },
            { key: 'spectralNorm', label: 'σ₁', format: 'exp' },
          ],
          rows: modules.map((m): Cell[] => {
            const p = placeModule(m);
            return [
              m.name,
              p.layer,
              p.key,
              m.rule,
              m.rank,
              m.energyRank90,
              m.energyRank95,
              m.energyRank99,
              m.numericalRank,
              m.stableRank,
              m.effectiveRank,
              m.frobeniusNorm,
              m.spectralNorm,
            ];
          }),
        },
      },
    ],
  };
}

export function resizePanel(report: unknown, title: string): PanelModel {
  const r = readResizeReport(report);
  const s = r.summary;
  const modules = named(r.modules);
  const target = r.rank !== null ? `rank ${formatCell(r.rank, 'int')}` : r.energy !== null ? `energy ${formatCell(r.energy, 'percent')}` : null;
  return {
    kind: 'resize',
    heading: title,
    verdict: s ? { text: `${target ? `Resized to ${target}: ` : ''}${formatCell(s.fromParams, 'int')} → ${formatCell(s.params, 'int')} LoRA parameters; largest relative error ${formatCell(s.maxRelError, 'exp')}.`, tone: 'neutral' } : null,
    summary: [
      item('summary-modules', 'Modules', s?.modules, 'int'),
      item('summary-from-params', 'Parameters before', s?.fromParams, 'int'),
      item('summary-params', 'Parameters after', s?.params, 'int'),
      item('summary-mean-energy-kept', 'Mean energy kept', s?.meanEnergyKept, 'percent'),
      item('summary-max-rel-error', 'Largest relative error', s?.maxRelError, 'exp'),
      item('summary-out', 'Written to', r.out),
    ],
    warnings: r.warnings,
    sections: [
      perModuleSection('resize-error', 'Relative error of each resized module', modules, (m) => m.relError, { title: '‖ΔW − ΔW′‖_F / ‖ΔW‖_F', min: 0, format: 'exp' as const }, [
        { key: 'fromRank', label: 'rank before', format: 'int', get: (m) => m.fromRank },
        { key: 'rank', label: 'rank', format: 'int', get: (m) => m.rank },
        { key: 'energyKept', label: 'energy kept', format: 'percent', get: (m) => m.energyKept },
        { key: 'relError', label: 'relative error', format: 'exp', get: (m) => m.relError },
        { key: 'optimalRelError', label: 'optimum (Eckart–Young)', format: 'exp', get: (m) => m.optimalRelError },
      ], 'Measured on the written fp32 factors, beside the optimum √(Σ_{i>k} σᵢ²) / ‖ΔW‖_F no rank-k adapter can beat.'),
    ],
  };
}

type Noisy = ExtractLoraView['modules'][number] & Named & { roundingNoise: NonNullable<ExtractLoraView['modules'][number]['roundingNoise']> };

export function extractLoraPanel(report: unknown, title: string): PanelModel {
  const r = readExtractLoraReport(report);
  const s = r.summary;
  const modules = named(r.modules);
  const noisy = modules.filter((m): m is Noisy => m.roundingNoise !== null);
  const notCaptured = named(r.notCaptured);
  const target = r.rank !== null ? `rank ${formatCell(r.rank, 'int')}` : r.energy !== null ? `energy ${formatCell(r.energy, 'percent')}` : null;
  const noiseMax = noisy.length ? Math.max(...noisy.map((m) => m.roundingNoise.fraction ?? 0)) : null;
  return {
    kind: 'extract-lora',
    heading: title,
    verdict: s ? { text: `${formatCell(s.modules, 'int')} modules extracted${target ? ` at ${target}` : ''} (${formatCell(s.params, 'int')} parameters); mean energy captured ${formatCell(s.meanEnergyKept, 'percent')}, largest relative error ${formatCell(s.maxRelError, 'exp')}; ${formatCell(s.notCaptured, 'int')} changed tensors not captured.`, tone: 'neutral' } : null,
    summary: [
      item('summary-modules', 'Modules extracted', s?.modules, 'int'),
      item('summary-params', 'LoRA parameters', s?.params, 'int'),
      item('summary-mean-energy-kept', 'Mean energy captured', s?.meanEnergyKept, 'percent'),
      item('summary-max-rel-error', 'Largest relative error', s?.maxRelError, 'exp'),
      item('summary-unchanged', 'Linear weights unchanged', s?.unchanged, 'int'),
      item('summary-not-captured', 'Changed, not captured', s?.notCaptured, 'int'),
      item('summary-rounding-noise', 'Largest rounding-noise share', noiseMax, 'percent'),
    ],
    warnings: r.warnings,
    sections: [
      perModuleSection('energy-captured', 'Energy of each task vector the LoRA captures', modules, (m) => m.energyKept, { title: 'energy captured', min: 0, max: 1, format: 'percent' }, [
        { key: 'rank', label: 'rank', format: 'int', get: (m) => m.rank },
        { key: 'energyKept', label: 'energy captured', format: 'percent', get: (m) => m.energyKept },
        { key: 'relError', label: 'relative error', format: 'exp', get: (m) => m.relError },
        { key: 'taskVectorNorm', label: '‖τ‖_F', format: 'exp', get: (m) => m.taskVectorNorm },
        { key: 'noise', label: 'rounding noise', format: 'percent', get: (m) => m.roundingNoise?.fraction ?? null },
      ], 'Σ_{i≤rank} σᵢ² / ‖τ‖²_F of each changed linear weight\'s task vector τ, with σᵢ from the randomized SVD; the relative error ‖τ − B′A′‖_F / ‖τ‖_F is measured on the written fp32 factors.'),
      perModuleSection('rounding-noise', 'Share of each task vector that is rounding noise', noisy, (m) => m.roundingNoise.fraction, { title: 'rounding-noise share of ‖τ‖²', min: 0, format: 'percent' }, [
        { key: 'dtype', label: 'stored as', get: (m) => m.roundingNoise.dtype },
        { key: 'fraction', label: 'noise share', format: 'percent', get: (m) => m.roundingNoise.fraction },
        { key: 'sigma', label: 'noise σ level', format: 'exp', get: (m) => m.roundingNoise.sigma },
        { key: 'signalRank', label: 'σᵢ above it', format: 'int', get: (m) => m.roundingNoise.signalRank },
        { key: 'rank', label: 'rank written', format: 'int', get: (m) => m.rank },
      ], noisy.length
        ? 'The fine-tuned weights are stored at half precision: each element was rounded once (variance ulp²/12). Singular values below the noise level are indistinguishable from that rounding; a rank above "σᵢ above it" captures noise.'
        : 'The fine-tuned weights are stored in fp32: no rounding noise to separate from the task vector.'),
      {
        id: 'not-captured',
        title: 'Changed tensors not captured',
        note: notCaptured.length ? 'Changed tensors that are not 2-D linear weights (norms, biases, embeddings): a LoRA cannot hold them, so they are listed with their norms instead.' : 'Every changed tensor is a 2-D linear weight: the LoRA covers them all.',
        table: notCaptured.length === 0 ? undefined : {
          columns: [{ key: 'tensor', label: 'tensor' }, { key: 'category', label: 'category' }, { key: 'shape', label: 'shape' }, { key: 'l2Norm', label: '‖τ‖', format: 'exp' }],
          rows: notCaptured.map((t): Cell[] => [t.name, t.category, t.shape.join('×'), t.l2Norm]),
          tensorColumn: 0,
        },
      },
    ],
  };
}

export function combinePanel(report: unknown, title: string): PanelModel {
  const r = readCombineReport(report);
  const s = r.summary;
  const modules = named(r.modules);
  const adapters = r.adapters;
  const rank = r.rank;
  return {
    kind: 'combine',
    heading: title,
    verdict: s ? { text: `${adapters.length} adapters combined${rank === null ? ' exactly (factors concatenated)' : ` at best rank ${formatCell(rank, 'int')}`}: ${formatCell(s.modules, 'int')} modules, ${formatCell(s.params, 'int')} parameters; largest relative error ${formatCell(s.maxRelError, 'exp')}.`, tone: 'neutral' } : null,
    summary: [
      item('summary-adapters', 'Adapters', adapters.length, 'int'),
      item('summary-rank', 'Rank', rank ?? 'exact (Σ rᵢ)', 'int'),
      item('summary-modules', 'Modules', s?.modules, 'int'),
      item('summary-params', 'LoRA parameters', s?.params, 'int'),
      item('summary-max-rel-error', 'Largest relative error', s?.maxRelError, 'exp'),
      item('summary-out', 'Written to', r.out),
    ],
    warnings: r.warnings,
    sections: [
      {
        id: 'inputs',
        title: 'Adapters and weights',
        table: { columns: [{ key: 'adapter', label: 'adapter' }, { key: 'weight', label: 'weight', format: 'general' }], rows: adapters.map((a, i): Cell[] => [a, r.weights[i] ?? null]) },
      },
      perModuleSection('combine-ranks', 'Rank of each combined module', modules, (m) => m.rank, { title: 'rank written', min: 0, integer: true }, [
        { key: 'rank', label: 'rank', format: 'int', get: (m) => m.rank },
        { key: 'sources', label: 'adapters adapting it', format: 'int', get: (m) => m.sources },
        { key: 'exact', label: 'exact', get: (m) => m.exact },
        { key: 'energyKept', label: 'energy kept', format: 'percent', get: (m) => m.energyKept },
        { key: 'relError', label: 'relative error', format: 'exp', get: (m) => m.relError },
      ], 'Exact modules concatenate the factors (rank Σ rᵢ of the adapters adapting them); otherwise the best rank-R approximation of Σ wᵢ·ΔWᵢ, its error measured on the written fp32 factors.'),
    ],
  };
}
