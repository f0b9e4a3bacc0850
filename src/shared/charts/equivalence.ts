/**
 * Equivalence panel, from a compare report (`comparison_results.json`): is the adapter's delta what
 * the merged model holds? Per tensor cosine and max abs difference by layer, the two norms against each
 * other, the norms of shared and task-vector-only tensors, and which projections the adapter covers.
 */
import { formatCell } from './format';
import { Cell, PanelModel, Point, Section, Series, SERIES_COLORS, SummaryItem, Tone } from './model';
import { COMPARE_SUMMARY, CompareView, readCompareReport } from '../jobs/reports/compare';
import { read, Read } from '../jobs/reports/read';
import { groupByLayer, layerLabel, layerLabels, placeTensor, Placement } from './tensors';

interface Row {
  name: string;
  place: Placement;
  loraTarget: boolean | null;
  cosine: number | null;
  maxAbsDiff: number | null;
  relFroErr: number | null;
  loraNorm: number | null;
  taskVectorNorm: number | null;
  within: boolean | null;
  /** Within the rounding of the merged model's dtype (null: not judged). */
  withinRounding: boolean | null;
  /** shared: non-zero on both sides; task-vector-only; lora-only. */
  side: 'shared' | 'task-vector-only' | 'lora-only';
}

function rows(report: CompareView): Row[] {
  return report.tensors.flatMap((t): Row[] => {
    const { name, loraNorm, taskVectorNorm } = t;
    if (name === null) return [];
    const side = loraNorm === 0 ? 'task-vector-only' : taskVectorNorm === 0 ? 'lora-only' : 'shared';
    const { loraTarget, cosine, maxAbsDiff, relFroErr, withinTolerance: within, withinRounding } = t;
    return [{ name, place: placeTensor(t, name), loraTarget, cosine, maxAbsDiff, relFroErr, loraNorm, taskVectorNorm, within, withinRounding, side }];
  });
}

function perLayerSeries(grouped: Map<string, Array<number | null>>): Series[] {
  return [...grouped].map(([label, data], i) => ({ label, color: SERIES_COLORS[i % SERIES_COLORS.length], data }));
}

function summaryItems(s: Read<typeof COMPARE_SUMMARY>, idPrefix: string): SummaryItem[] {
  const id = (x: string): string => `${idPrefix}${x}`;
  const equivalent = s?.equivalent ?? null;
  const tolerance = s?.tolerance ?? null;
  const item = (key: string, label: string, v: unknown, fmt?: Parameters<typeof formatCell>[1]): SummaryItem => {
    const value = typeof v === 'number' || typeof v === 'boolean' || typeof v === 'string' ? v : null;
    return { id: id(key), label, text: formatCell(value, fmt), value };
  };
  const dtype = s?.mergedDtype ?? null;
  const dtypeVerdict = s?.dtypeVerdict ?? null;
  const judged: SummaryItem[] =
    dtype !== null && dtypeVerdict !== null
      ? [
          { id: id('summary-dtype-verdict'), label: `Verdict at ${dtype}`, text: DTYPE_VERDICT_TEXT[dtypeVerdict] ?? dtypeVerdict, value: dtypeVerdict, tone: dtypeVerdictTone(dtypeVerdict) },
          item('summary-merged-dtype', 'Merged model dtype', dtype),
        ]
      : [];
  return [
    ...judged,
    // Strictly "no" is a fact, not an alarm, where the difference is the rounding the merged dtype must make.
    { id: id('summary-equivalent'), label: judged.length ? 'Strictly equivalent' : 'Equivalent', text: equivalent === null ? formatCell(null) : equivalent ? `yes (max abs ≤ ${formatCell(tolerance, 'exp')})` : `no (tolerance ${formatCell(tolerance, 'exp')})`, value: equivalent, tone: equivalent === null || dtypeVerdict === 'EXPECTED-LOSS' ? 'neutral' : equivalent ? 'good' : 'bad' },
    item('summary-tolerance', 'Tolerance (max abs)', s?.tolerance ?? null, 'exp'),
    item('summary-shared', 'Shared tensors', s?.shared ?? null, 'int'),
    item('summary-perfect-matches', 'Perfect matches (cos > 0.9999)', s?.perfectMatches ?? null, 'int'),
    item('summary-task-vector-only', 'Task-vector-only tensors', s?.taskVectorOnly ?? null, 'int'),
    item('summary-task-vector-only-norm', 'Task-vector-only norm', s?.taskVectorOnlyNorm ?? null, 'exp'),
    item('summary-lora-only', 'LoRA-only tensors', s?.loraOnly ?? null, 'int'),
    item('mean-cosine', 'Mean cosine', s?.meanCosine ?? null, 'cosine'),
    item('min-cosine', 'Min cosine', s?.minCosine ?? null, 'cosine'),
    item('max-abs-diff', 'Max abs difference', s?.maxAbsDiff ?? null, 'exp'),
  ];
}

const DTYPE_VERDICT_TEXT: Record<string, string> = {
  EQUIVALENT: 'equivalent',
  'EXPECTED-LOSS': 'expected loss (only the rounding its dtype must make)',
  'NOT-EQUIVALENT': 'not equivalent, even allowing for rounding',
};

function dtypeVerdictTone(v: string | null): Tone {
  return v === 'EQUIVALENT' ? 'good' : v === 'EXPECTED-LOSS' ? 'warn' : v === 'NOT-EQUIVALENT' ? 'bad' : 'neutral';
}

/** The charts of one compare report; `idPrefix` keeps ids unique when a validate panel shows several. */
export function equivalenceSections(report: unknown, idPrefix = ''): Section[] {
  const view = readCompareReport(report);
  const all = rows(view);
  const shared = all.filter((r) => r.side === 'shared');
  const tvOnly = all.filter((r) => r.side === 'task-vector-only');
  const loraOnly = all.filter((r) => r.side === 'lora-only');
  const tolerance = view.summary?.tolerance ?? null;
  const byLayer = (a: Row, b: Row): number => (a.place.layer ?? Infinity) - (b.place.layer ?? Infinity) || a.name.localeCompare(b.name);
  const sorted = [...all].sort(byLayer);
  const id = (x: string): string => `${idPrefix}${x}`;

  const cos = groupByLayer(shared, (r) => r.place, (r) => r.cosine);
  const diffs = groupByLayer(shared, (r) => r.place, (r) => (r.maxAbsDiff !== null && r.maxAbsDiff > 0 ? r.maxAbsDiff : null));
  const exact = shared.filter((r) => r.maxAbsDiff === 0).length;
  const diffSeries = perLayerSeries(diffs.series);
  if (tolerance !== null && tolerance > 0 && diffs.labels.length > 0) {
    diffSeries.push({ label: 'tolerance', color: 'red', data: diffs.labels.map(() => tolerance), asLine: true, dashed: true });
  }

  const point = (r: Row): Point => ({ x: r.loraNorm ?? 0, y: r.taskVectorNorm ?? 0, label: r.name });
  const largest = Math.max(0, ...all.map((r) => Math.max(r.loraNorm ?? 0, r.taskVectorNorm ?? 0)));
  const scatter: Series[] = [
    { label: 'shared', color: 'blue', data: shared.map(point), tensorPoints: true },
    { label: 'task-vector only', color: 'orange', data: tvOnly.map(point), tensorPoints: true },
    { label: 'LoRA only', color: 'red', data: loraOnly.map(point), tensorPoints: true },
  ].filter((s) => s.data.length > 0) as Series[];
  if (largest > 0) scatter.push({ label: 'equal norms', color: 'foreground', data: [{ x: 0, y: 0 }, { x: largest, y: largest }], asLine: true, dashed: true });

  const ranked = (rs: Row[]): Row[] => rs.filter((r) => (r.taskVectorNorm ?? 0) > 0).sort((a, b) => b.taskVectorNorm! - a.taskVectorNorm!);
  const rankPoints = (rs: Row[]): Point[] => rs.map((r, i) => ({ x: i + 1, y: r.taskVectorNorm!, label: r.name }));
  const sharedRanked = ranked(shared);
  const tvRanked = ranked(tvOnly);
  // A log axis only where the norms span a decade or more (cast artifacts sit far below the shared
  // tensors); within one decade it would have no 1-2-5 tick to label.
  const normsLog = spansDecade([...sharedRanked, ...tvRanked].map((r) => r.taskVectorNorm!));

  const coverage = coverageOf(all);

  return [
    {
      id: id('cosine'),
      title: 'Cosine similarity per tensor, by layer',
      note: 'Shared tensors (non-zero on both sides). A cosine of 1 means the merged model holds exactly the direction of the LoRA delta.',
      // Points, not bars: cosines crowd just under 1, and bars from 0 would all look the same.
      chart: { type: 'line', labels: cos.labels, series: perLayerSeries(cos.series), x: { title: 'layer' }, y: { title: 'cosine', min: cosineAxisMin(shared.map((r) => r.cosine)), max: 1, format: 'cosine' } },
      table: {
        columns: [{ key: 'name', label: 'tensor' }, { key: 'layer', label: 'layer' }, { key: 'key', label: 'projection' }, { key: 'cosine', label: 'cosine', format: 'cosine' }, { key: 'relFroErr', label: 'relative Frobenius error', format: 'exp' }],
        rows: [...shared].sort(byLayer).map((r) => [r.name, layerLabel(r.place.layer), r.place.key, r.cosine, r.relFroErr]),
        tensorColumn: 0,
      },
    },
    {
      id: id('max-abs-diff'),
      title: 'Max absolute difference per tensor, by layer (log scale)',
      note: exact > 0 ? `${exact} shared tensor(s) match exactly (difference 0) and have no bar on a log scale.` : undefined,
      chart: { type: 'bar', labels: diffs.labels, series: diffSeries, x: { title: 'layer' }, y: { title: 'max |ΔW − τ|', log: true } },
      table: {
        columns: [
          { key: 'name', label: 'tensor' },
          { key: 'maxAbsDiff', label: 'max abs difference', format: 'exp' },
          { key: 'within', label: 'within tolerance' },
          ...(shared.some((r) => r.withinRounding !== null) ? [{ key: 'withinRounding', label: 'within its dtype\'s rounding' }] : []),
        ],
        rows: [...shared]
          .sort(byLayer)
          .map((r) => [r.name, r.maxAbsDiff, r.within, ...(shared.some((x) => x.withinRounding !== null) ? [r.withinRounding] : [])]),
        tensorColumn: 0,
      },
    },
    {
      id: id('norms'),
      title: 'LoRA delta norm vs task-vector norm',
      note: 'Each point is a tensor; equivalent tensors lie on the dashed diagonal. Task-vector-only tensors sit on the vertical axis.',
      chart: { type: 'scatter', series: scatter, x: { title: '‖ΔW‖ (LoRA)', min: 0 }, y: { title: '‖τ‖ (task vector)', min: 0 } },
      table: {
        columns: [{ key: 'name', label: 'tensor' }, { key: 'side', label: 'side' }, { key: 'loraNorm', label: '‖ΔW‖', format: 'exp' }, { key: 'taskVectorNorm', label: '‖τ‖', format: 'exp' }],
        rows: sorted.map((r) => [r.name, r.side, r.loraNorm, r.taskVectorNorm]),
        tensorColumn: 0,
      },
    },
    {
      id: id('norm-distribution'),
      title: `Task-vector norms: shared vs task-vector-only tensors${normsLog ? ' (log scale)' : ''}`,
      note: 'Tensors sorted by their task-vector norm, largest first. Task-vector-only tensors changed although the adapter does not touch them (fp16/bf16 cast artifacts, or a different fine-tune).',
      chart: {
        type: 'scatter',
        series: [
          { label: `shared (${sharedRanked.length})`, color: 'blue', data: rankPoints(sharedRanked), tensorPoints: true },
          { label: `task-vector only (${tvRanked.length})`, color: 'orange', data: rankPoints(tvRanked), tensorPoints: true },
        ],
        x: { title: 'rank', min: 1, integer: true },
        y: { title: '‖τ‖ (task vector)', log: normsLog, min: normsLog ? undefined : 0 },
      },
      table: {
        columns: [{ key: 'rank', label: 'rank' }, { key: 'name', label: 'tensor' }, { key: 'side', label: 'side' }, { key: 'taskVectorNorm', label: '‖τ‖', format: 'exp' }],
        rows: [...sharedRanked, ...tvRanked].map((r, i) => [i < sharedRanked.length ? i + 1 : i - sharedRanked.length + 1, r.name, r.side, r.taskVectorNorm]),
        tensorColumn: 1,
      },
    },
    {
      id: id('coverage'),
      title: 'Architecture coverage per layer',
      note: 'Which projections of each layer the adapter targets (LoRA), and which changed without it (task vector only). Tensors unchanged on both sides are not in a compare report.',
      chart: {
        type: 'bar',
        stacked: true,
        labels: coverage.labels,
        series: [
          { label: 'LoRA targets', color: 'blue', data: coverage.targets },
          { label: 'changed outside the adapter', color: 'orange', data: coverage.others },
        ],
        x: { title: 'layer' },
        y: { title: 'tensors', min: 0, integer: true },
      },
      table: { columns: coverage.columns, rows: coverage.rows, heat: coverage.heat },
    },
  ];
}

/**
 * The bottom of the cosine axis: 1 minus a power of ten just above the largest gap to 1, never closer
 * than 1e-6 (cosines of 1 - 1e-15 would otherwise get an axis of float noise with 15-decimal ticks that
 * repeat) and never below -1. So 0.9999 reads on an axis from 0.999, and 0.95 on one from 0.9.
 */
/** True when the positive values span at least a factor of 10. */
export function spansDecade(values: number[]): boolean {
  const positive = values.filter((v) => Number.isFinite(v) && v > 0);
  return positive.length > 1 && positive.reduce((a, v) => Math.max(a, v), 0) >= 10 * positive.reduce((a, v) => Math.min(a, v), Infinity);
}

export function cosineAxisMin(cosines: Array<number | null>): number {
  const gaps = cosines.filter((c): c is number => c !== null && Number.isFinite(c)).map((c) => 1 - c);
  const gap = Math.max(1e-6, ...gaps.map((g) => g * 1.05));
  return Math.max(-1, 1 - 10 ** Math.ceil(Math.log10(gap) - 1e-9));
}

function coverageOf(all: Row[]): {
  labels: string[];
  targets: number[];
  others: number[];
  columns: { key: string; label: string }[];
  rows: Cell[][];
  heat: Array<Array<number | null>>;
} {
  const labels = layerLabels(all.map((r) => r.place.layer));
  const keys = [...new Set(all.map((r) => r.place.key))].sort();
  const cells = new Map<string, string>();
  const targets = labels.map(() => 0);
  const others = labels.map(() => 0);
  for (const r of all) {
    const i = labels.indexOf(layerLabel(r.place.layer));
    const target = r.loraTarget === true || r.side !== 'task-vector-only';
    (target ? targets : others)[i]++;
    cells.set(`${i}\u0000${r.place.key}`, target ? 'LoRA' : 'changed');
  }
  return {
    labels,
    targets,
    others,
    columns: [{ key: 'layer', label: 'layer' }, ...keys.map((k) => ({ key: k, label: k }))],
    rows: labels.map((l, i) => [l, ...keys.map((k) => cells.get(`${i}\u0000${k}`) ?? '')]),
    heat: labels.map((_, i) => [null, ...keys.map((k) => ({ LoRA: 1, changed: 0.4 })[cells.get(`${i}\u0000${k}`) ?? ''] ?? null)]),
  };
}

export function equivalencePanel(report: unknown, title: string): PanelModel {
  const r = readCompareReport(report);
  const s = r.summary;
  const equivalent = s?.equivalent ?? null;
  const verdict = s?.verdict ?? null;
  // The dtype-aware verdict sets the tone where the engine gave one (a bf16 merge is an expected loss).
  const dtypeVerdict = s?.dtypeVerdict ?? null;
  const tone: Tone = dtypeVerdict !== null ? dtypeVerdictTone(dtypeVerdict) : equivalent === null ? 'neutral' : equivalent ? 'good' : 'bad';
  return {
    kind: 'compare',
    heading: title,
    verdict: verdict !== null || equivalent !== null ? { text: verdict ?? (equivalent ? 'Equivalent' : 'Not equivalent'), tone } : null,
    summary: summaryItems(s, ''),
    warnings: [...r.warnings, ...(r.shapeMismatches.length ? [`${r.shapeMismatches.length} tensor(s) have different shapes on the two sides and were skipped.`] : [])],
    sections: equivalenceSections(report),
  };
}

/** The summary items of a compare report's `summary`, read at the boundary. */
export function equivalenceSummary(summary: unknown, idPrefix: string): SummaryItem[] {
  return summaryItems(read(COMPARE_SUMMARY, summary), idPrefix);
}
