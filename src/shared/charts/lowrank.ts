/**
 * Panels of the low-rank toolbox: spectrum (singular values per module, energy-vs-rank curves, the
 * rank holding 99% of the energy per layer and module kind), resize, extract-lora and combine (what
 * each module kept). Modules are grouped by layer and projection as the other per-layer panels are.
 */
import { formatCell } from './format';
import { Cell, ChartSpec, Column, NumberFormat, PanelModel, Point, Section, Series, SERIES_COLORS, SummaryItem } from './model';
import { num, obj, Obj, objs, str, strs } from './read';
import { groupByLayer, placeTensor, Placement } from './tensors';

const POINT_STYLES: NonNullable<Series['pointStyle']>[] = ['circle', 'triangle', 'rect', 'rectRot'];

/** A module's place: its report's layer and projection, else the census classifier on its name. */
const placeModule = (m: Obj): Placement => placeTensor(m, `${String(m.name)}.weight`);

/** Attention then MLP projections in the order models define them; other kinds after, by name. */
const KNOWN_KINDS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const kindRank = (key: string): number => (KNOWN_KINDS.includes(key) ? KNOWN_KINDS.indexOf(key) : KNOWN_KINDS.length);

/** The report's modules (those with a name), by layer, then kind: the order of every series and table. */
function named(x: unknown): Obj[] {
  const modules = objs(x).filter((m) => str(m.name) !== null);
  const places = new Map(modules.map((m) => [m, placeModule(m)]));
  const layer = (m: Obj): number => places.get(m)!.layer ?? Infinity;
  const key = (m: Obj): string => places.get(m)!.key;
  return modules.sort(
    (a, b) => layer(a) - layer(b) || kindRank(key(a)) - kindRank(key(b)) || key(a).localeCompare(key(b)) || String(a.name).localeCompare(String(b.name)),
  );
}

function item(id: string, label: string, v: unknown, fmt?: NumberFormat): SummaryItem {
  const value = typeof v === 'number' ? num(v) : typeof v === 'string' || typeof v === 'boolean' ? v : null;
  return { id, label, text: formatCell(value, fmt), value };
}

/** Series keys (projections) in first-seen order, each with its modules. */
function byKey(modules: Obj[]): Map<string, Obj[]> {
  const out = new Map<string, Obj[]>();
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
function perModuleSection(id: string, title: string, modules: Obj[], value: (m: Obj) => number | null, y: ChartSpec['y'], columns: Array<Column & { get(m: Obj): Cell }>, note?: string): Section {
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
      rows: modules.map((m): Cell[] => [String(m.name), ...columns.map((c) => c.get(m))]),
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

function singularValues(m: Obj): number[] {
  return Array.isArray(m.singularValues) ? m.singularValues.filter((x): x is number => num(x) !== null) : [];
}

export function spectrumPanel(report: unknown, title: string): PanelModel {
  const r = obj(report);
  const s = obj(r?.summary);
  const modules = named(r?.modules);
  const keys = byKey(modules);
  const maxLen = Math.max(0, ...modules.map((m) => singularValues(m).length));
  const ks = Array.from({ length: maxLen }, (_, i) => i + 1);
  const zero = modules.filter((m) => !singularValues(m).some((x) => x > 0));

  // Singular values: one cloud per module kind (a line per module would need a legend of every module).
  const svSeries: Series[] = [...keys].map(([key, ms], i) => ({
    label: key,
    color: SERIES_COLORS[i % SERIES_COLORS.length],
    pointStyle: POINT_STYLES[Math.floor(i / SERIES_COLORS.length) % POINT_STYLES.length],
    data: ms.flatMap((m) => singularValues(m).flatMap((y, j): Point[] => (y > 0 ? [{ x: j + 1, y, label: String(m.name) }] : []))),
  }));

  // Energy kept at rank k: the mean over each kind's modules, and the least any module keeps.
  const curves = new Map(modules.map((m) => [m, cumulativeEnergy(singularValues(m))]));
  const at = (m: Obj, k: number): number | null => {
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
  const e99 = groupByLayer(modules, placeModule, (m) => num(m.energyRank99));
  const ranks = groupByLayer(modules, placeModule, (m) => num(m.rank));
  const heatKeys = [...e99.series.keys()];

  const warnings = strs(r?.warnings);
  const noFactor = named(r?.noFactorForm);
  if (noFactor.length) warnings.push(`${noFactor.length} module${noFactor.length === 1 ? ' has' : 's have'} no exact factor form (${[...new Set(noFactor.map((m) => str(m.rule) ?? '?'))].join(', ')}): not in this spectrum.`);

  const usage = num(s?.rankUsage99);
  return {
    kind: 'spectrum',
    heading: title,
    resize: typeof r?.adapter === 'string' && modules.length > 0,
    verdict: usage !== null ? { text: `${formatCell(num(s?.modules), 'int')} modules, total rank ${formatCell(num(s?.totalRank), 'int')}: 99% of each delta's energy lies in ${formatCell(num(s?.totalEnergyRank99), 'int')} of those ranks (${formatCell(usage, 'percent')}).`, tone: 'neutral' } : null,
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
          rows: modules.map((m): Cell[] => [String(m.name), num(m.rank), ...ks.map((k) => singularValues(m)[k - 1] ?? null)]),
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
              String(m.name),
              p.layer,
              p.key,
              str(m.rule),
              num(m.rank),
              num(m.energyRank90),
              num(m.energyRank95),
              num(m.energyRank99),
              num(m.numericalRank),
              num(m.stableRank),
              num(m.effectiveRank),
              num(m.frobeniusNorm),
              num(m.spectralNorm),
            ];
          }),
        },
      },
    ],
  };
}

export function resizePanel(report: unknown, title: string): PanelModel {
  const r = obj(report);
  const s = obj(r?.summary);
  const modules = named(r?.modules);
  const target = num(r?.rank) !== null ? `rank ${formatCell(num(r?.rank), 'int')}` : num(r?.energy) !== null ? `energy ${formatCell(num(r?.energy), 'percent')}` : null;
  return {
    kind: 'resize',
    heading: title,
    verdict: s ? { text: `${target ? `Resized to ${target}: ` : ''}${formatCell(num(s.fromParams), 'int')} → ${formatCell(num(s.params), 'int')} LoRA parameters; largest relative error ${formatCell(num(s.maxRelError), 'exp')}.`, tone: 'neutral' } : null,
    summary: [
      item('summary-modules', 'Modules', s?.modules, 'int'),
      item('summary-from-params', 'Parameters before', s?.fromParams, 'int'),
      item('summary-params', 'Parameters after', s?.params, 'int'),
      item('summary-mean-energy-kept', 'Mean energy kept', s?.meanEnergyKept, 'percent'),
      item('summary-max-rel-error', 'Largest relative error', s?.maxRelError, 'exp'),
      item('summary-out', 'Written to', r?.out),
    ],
    warnings: strs(r?.warnings),
    sections: [
      perModuleSection('resize-error', 'Relative error of each resized module', modules, (m) => num(m.relError), { title: '‖ΔW − ΔW′‖_F / ‖ΔW‖_F', min: 0, format: 'exp' as const }, [
        { key: 'fromRank', label: 'rank before', format: 'int', get: (m) => num(m.fromRank) },
        { key: 'rank', label: 'rank', format: 'int', get: (m) => num(m.rank) },
        { key: 'energyKept', label: 'energy kept', format: 'percent', get: (m) => num(m.energyKept) },
        { key: 'relError', label: 'relative error', format: 'exp', get: (m) => num(m.relError) },
        { key: 'optimalRelError', label: 'optimum (Eckart–Young)', format: 'exp', get: (m) => num(m.optimalRelError) },
      ], 'Measured on the written fp32 factors, beside the optimum √(Σ_{i>k} σᵢ²) / ‖ΔW‖_F no rank-k adapter can beat.'),
    ],
  };
}

export function extractLoraPanel(report: unknown, title: string): PanelModel {
  const r = obj(report);
  const s = obj(r?.summary);
  const modules = named(r?.modules);
  const noise = (m: Obj): Obj | null => obj(m.roundingNoise);
  const noisy = modules.filter((m) => noise(m) !== null);
  const notCaptured = named(r?.notCaptured);
  const target = num(r?.rank) !== null ? `rank ${formatCell(num(r?.rank), 'int')}` : num(r?.energy) !== null ? `energy ${formatCell(num(r?.energy), 'percent')}` : null;
  const noiseMax = noisy.length ? Math.max(...noisy.map((m) => num(noise(m)!.fraction) ?? 0)) : null;
  return {
    kind: 'extract-lora',
    heading: title,
    verdict: s ? { text: `${formatCell(num(s.modules), 'int')} modules extracted${target ? ` at ${target}` : ''} (${formatCell(num(s.params), 'int')} parameters); mean energy captured ${formatCell(num(s.meanEnergyKept), 'percent')}, largest relative error ${formatCell(num(s.maxRelError), 'exp')}; ${formatCell(num(s.notCaptured), 'int')} changed tensors not captured.`, tone: 'neutral' } : null,
    summary: [
      item('summary-modules', 'Modules extracted', s?.modules, 'int'),
      item('summary-params', 'LoRA parameters', s?.params, 'int'),
      item('summary-mean-energy-kept', 'Mean energy captured', s?.meanEnergyKept, 'percent'),
      item('summary-max-rel-error', 'Largest relative error', s?.maxRelError, 'exp'),
      item('summary-unchanged', 'Linear weights unchanged', s?.unchanged, 'int'),
      item('summary-not-captured', 'Changed, not captured', s?.notCaptured, 'int'),
      item('summary-rounding-noise', 'Largest rounding-noise share', noiseMax, 'percent'),
    ],
    warnings: strs(r?.warnings),
    sections: [
      perModuleSection('energy-captured', 'Energy of each task vector the LoRA captures', modules, (m) => num(m.energyKept), { title: 'energy captured', min: 0, max: 1, format: 'percent' }, [
        { key: 'rank', label: 'rank', format: 'int', get: (m) => num(m.rank) },
        { key: 'energyKept', label: 'energy captured', format: 'percent', get: (m) => num(m.energyKept) },
        { key: 'relError', label: 'relative error', format: 'exp', get: (m) => num(m.relError) },
        { key: 'taskVectorNorm', label: '‖τ‖_F', format: 'exp', get: (m) => num(m.taskVectorNorm) },
        { key: 'noise', label: 'rounding noise', format: 'percent', get: (m) => num(noise(m)?.fraction) },
      ], 'Σ_{i≤rank} σᵢ² / ‖τ‖²_F of each changed linear weight\'s task vector τ, with σᵢ from the randomized SVD; the relative error ‖τ − B′A′‖_F / ‖τ‖_F is measured on the written fp32 factors.'),
      perModuleSection('rounding-noise', 'Share of each task vector that is rounding noise', noisy, (m) => num(noise(m)!.fraction), { title: 'rounding-noise share of ‖τ‖²', min: 0, format: 'percent' }, [
        { key: 'dtype', label: 'stored as', get: (m) => str(noise(m)!.dtype) },
        { key: 'fraction', label: 'noise share', format: 'percent', get: (m) => num(noise(m)!.fraction) },
        { key: 'sigma', label: 'noise σ level', format: 'exp', get: (m) => num(noise(m)!.sigma) },
        { key: 'signalRank', label: 'σᵢ above it', format: 'int', get: (m) => num(noise(m)!.signalRank) },
        { key: 'rank', label: 'rank written', format: 'int', get: (m) => num(m.rank) },
      ], noisy.length
        ? 'The fine-tuned weights are stored at half precision: each element was rounded once (variance ulp²/12). Singular values below the noise level are indistinguishable from that rounding; a rank above "σᵢ above it" captures noise.'
        : 'The fine-tuned weights are stored in fp32: no rounding noise to separate from the task vector.'),
      {
        id: 'not-captured',
        title: 'Changed tensors not captured',
        note: notCaptured.length ? 'Changed tensors that are not 2-D linear weights (norms, biases, embeddings): a LoRA cannot hold them, so they are listed with their norms instead.' : 'Every changed tensor is a 2-D linear weight: the LoRA covers them all.',
        table: notCaptured.length === 0 ? undefined : {
          columns: [{ key: 'tensor', label: 'tensor' }, { key: 'category', label: 'category' }, { key: 'shape', label: 'shape' }, { key: 'l2Norm', label: '‖τ‖', format: 'exp' }],
          rows: notCaptured.map((t): Cell[] => [String(t.name), str(t.category), Array.isArray(t.shape) ? t.shape.join('×') : null, num(t.l2Norm)]),
          tensorColumn: 0,
        },
      },
    ],
  };
}

export function combinePanel(report: unknown, title: string): PanelModel {
  const r = obj(report);
  const s = obj(r?.summary);
  const modules = named(r?.modules);
  const adapters = strs(r?.adapters);
  const weights = Array.isArray(r?.weights) ? r.weights : [];
  const rank = num(r?.rank);
  return {
    kind: 'combine',
    heading: title,
    verdict: s ? { text: `${adapters.length} adapters combined${rank === null ? ' exactly (factors concatenated)' : ` at best rank ${formatCell(rank, 'int')}`}: ${formatCell(num(s.modules), 'int')} modules, ${formatCell(num(s.params), 'int')} parameters; largest relative error ${formatCell(num(s.maxRelError), 'exp')}.`, tone: 'neutral' } : null,
    summary: [
      item('summary-adapters', 'Adapters', adapters.length, 'int'),
      item('summary-rank', 'Rank', rank ?? 'exact (Σ rᵢ)', 'int'),
      item('summary-modules', 'Modules', s?.modules, 'int'),
      item('summary-params', 'LoRA parameters', s?.params, 'int'),
      item('summary-max-rel-error', 'Largest relative error', s?.maxRelError, 'exp'),
      item('summary-out', 'Written to', r?.out),
    ],
    warnings: strs(r?.warnings),
    sections: [
      {
        id: 'inputs',
        title: 'Adapters and weights',
        table: { columns: [{ key: 'adapter', label: 'adapter' }, { key: 'weight', label: 'weight', format: 'general' }], rows: adapters.map((a, i): Cell[] => [a, num(weights[i])]) },
      },
      perModuleSection('combine-ranks', 'Rank of each combined module', modules, (m) => num(m.rank), { title: 'rank written', min: 0, integer: true }, [
        { key: 'rank', label: 'rank', format: 'int', get: (m) => num(m.rank) },
        { key: 'sources', label: 'adapters adapting it', format: 'int', get: (m) => num(m.sources) },
        { key: 'exact', label: 'exact', get: (m) => (typeof m.exact === 'boolean' ? m.exact : null) },
        { key: 'energyKept', label: 'energy kept', format: 'percent', get: (m) => num(m.energyKept) },
        { key: 'relError', label: 'relative error', format: 'exp', get: (m) => num(m.relError) },
      ], 'Exact modules concatenate the factors (rank Σ rᵢ of the adapters adapting them); otherwise the best rank-R approximation of Σ wᵢ·ΔWᵢ, its error measured on the written fp32 factors.'),
    ],
  };
}
