/**
 * UNMERGE panels: the mask (`mask.json`: elements kept per layer x projection, per projection, and how
 * much of each dictionary adapter's norm survives) and a decomposition (coefficients, the truth when
 * known, and whether the target is made of the dictionary).
 */
import { readDecomposeReport } from '../jobs/reports/decompose';
import { MaskView, readMaskReport } from '../jobs/reports/mask';
import { formatCell } from './format';
import { Cell, PanelModel, SERIES_COLORS, SummaryItem } from './model';
import { groupByLayer, Placement } from './tensors';

type MaskModule = MaskView['perModule'][number] & { name: string };

/** Safe as a DOM id: letters, digits, `-` and `_`. */
export function domId(s: string): string {
  return s.replace(/[^A-Za-z0-9_-]/g, '_');
}

export function maskPanel(report: unknown, title: string): PanelModel {
  const r = readMaskReport(report);
  const modules = r.perModule.filter((m): m is MaskModule => m.name !== null);
  const place = (m: MaskModule): Placement => ({ layer: m.layer, key: m.projection ?? m.name, category: '' });
  const grid = groupByLayer(modules, place, (m) => m.selected);
  const keys = [...grid.series.keys()];
  const largest = Math.max(0, ...modules.map((m) => m.selected ?? 0));
  // Top-k per module keeps the same count everywhere (k, or the whole of a smaller module): a chart of
  // equal bars says nothing, so it is drawn only where the counts differ.
  const uniform = new Set(modules.map((m) => m.selected)).size <= 1;
  const projections = Object.entries(r.perProjection).sort(([a], [b]) => a.localeCompare(b));
  const preservation = Object.entries(r.normPreservation);
  const energy = new Map(Object.entries(r.energyPreservation));
  const item = (id: string, label: string, v: number | null, fmt?: Parameters<typeof formatCell>[1]): SummaryItem => ({
    id,
    label,
    text: formatCell(v, fmt),
    value: v,
  });
  return {
    kind: 'mask',
    heading: title,
    verdict: r.k !== null ? { text: `Top ${formatCell(r.k, 'int')} elements of each of ${formatCell(r.modules, 'int')} modules kept: ${formatCell(r.selected, 'int')} of ${formatCell(r.elements, 'int')} elements.`, tone: 'neutral' } : null,
    summary: [
      item('summary-budget', 'Budget (elements)', r.budget, 'int'),
      item('summary-modules', 'Modules', r.modules, 'int'),
      item('summary-k', 'k per module', r.k, 'int'),
      item('summary-selected', 'Elements kept', r.selected, 'int'),
      item('summary-elements', 'Elements masked over', r.elements, 'int'),
    ],
    // The mask job's warnings go to the log as it runs; its report has none.
    warnings: [],
    sections: [
      {
        id: 'mask-layers',
        title: 'Elements kept per layer and projection',
        note: uniform
          ? `Every module keeps the same ${formatCell(largest, 'int')} elements (top-k per module), so there is no chart; which adapters survive the mask is below.`
          : 'The table is a heat map: the stronger a cell\'s colour, the more elements it keeps (modules smaller than k keep all of theirs).',
        chart: uniform ? undefined : { type: 'bar', stacked: true, labels: grid.labels, series: keys.map((k, i) => ({ label: k, color: SERIES_COLORS[i % SERIES_COLORS.length], data: grid.series.get(k)! })), x: { title: 'layer' }, y: { title: 'elements kept', min: 0 } },
        table: {
          columns: [{ key: 'layer', label: 'layer' }, ...keys.map((k) => ({ key: k, label: k, format: 'int' as const }))],
          rows: grid.labels.map((l, i): Cell[] => [l, ...keys.map((k) => grid.series.get(k)![i])]),
          heat: grid.labels.map((_, i) => [
            null,
            ...keys.map((k) => {
              const v = grid.series.get(k)![i];
              return v === null || largest === 0 ? null : v / largest;
            }),
          ]),
        },
      },
      {
        id: 'mask-projections',
        title: 'Elements kept per projection',
        chart: new Set(projections.map(([, v]) => v)).size <= 1 ? undefined : { type: 'bar', labels: projections.map(([k]) => k), series: [{ label: 'elements kept', color: 'blue', data: projections.map(([, v]) => v) }], x: { title: 'projection' }, y: { title: 'elements kept', min: 0 } },
        table: { columns: [{ key: 'projection', label: 'projection' }, { key: 'selected', label: 'elements kept', format: 'int' }], rows: projections },
      },
      {
        id: 'norm-preservation',
        title: 'Norm each dictionary adapter keeps under the mask',
        note: 'The fraction of each adapter\'s delta norm the mask keeps, ‖mask ⊙ Δ‖ / ‖Δ‖ over every module it targets; the energy kept is its square.',
        chart: {
          type: 'bar',
          horizontal: true,
          labels: preservation.map(([k]) => k),
          series: [
            { label: '‖mask ⊙ Δ‖ / ‖Δ‖', color: 'green', data: preservation.map(([, v]) => v) },
            { label: 'energy kept', color: 'blue', data: preservation.map(([k]) => energy.get(k) ?? null) },
          ],
          x: { title: 'fraction kept', min: 0, max: 1, format: 'percent' },
          y: { title: 'adapter' },
        },
        table: { columns: [{ key: 'adapter', label: 'adapter' }, { key: 'norm', label: 'norm kept', format: 'percent' }, { key: 'energy', label: 'energy kept', format: 'percent' }], rows: preservation.map(([k, v]) => [k, v, energy.get(k) ?? null]) },
      },
    ],
  };
}

export function decomposePanel(report: unknown, title: string): PanelModel {
  const r = readDecomposeReport(report);
  const coefficients = Object.entries(r.coefficients);
  const dictionary = new Map(r.dictionary.flatMap((d) => (d.name === null ? [] : [[d.name, d] as const])));
  const names = [...new Set([...coefficients.map(([k]) => k), ...dictionary.keys()])];
  const coefficient = new Map(coefficients);
  // A report scored against no truth has none (read as no entries).
  const truth = Object.keys(r.truth).length > 0 ? new Map(Object.entries(r.truth)) : null;
  const support = new Set(r.support);
  const decomposable = r.decomposable;
  const verdict = r.verdict;
  const item = (id: string, label: string, value: number | string | boolean | null, fmt?: Parameters<typeof formatCell>[1]): SummaryItem => ({
    id,
    label,
    text: formatCell(value, fmt),
    value,
  });
  return {
    kind: 'decompose',
    heading: title,
    verdict: verdict !== null || decomposable !== null ? { text: [verdict ?? (decomposable ? 'decomposable' : 'not decomposable'), r.explanation].filter(Boolean).join(': '), tone: decomposable === null ? 'neutral' : decomposable ? 'good' : 'bad' } : null,
    summary: [
      { ...item('summary-decomposable', 'Decomposable', decomposable), tone: decomposable === null ? 'neutral' : decomposable ? 'good' : 'bad' },
      item('summary-verdict', 'Verdict', verdict),
      item('summary-method', 'Method', r.method),
      item('summary-support', 'Support size', support.size, 'int'),
      item('summary-relative-residual', 'Relative residual', r.relativeResidual, 'exp'),
      item('summary-reconstruction-error', 'Reconstruction error', r.reconstructionError, 'exp'),
      item('summary-cosine', 'cos(target, reconstruction)', r.cosine, 'cosine'),
      item('summary-explained-energy', 'Explained energy', r.explainedEnergy, 'percent'),
      ...(truth ? [
        item('summary-precision', 'Precision vs truth', r.precision, 'percent'),
        item('summary-recall', 'Recall vs truth', r.recall, 'percent'),
        item('summary-coefficient-error', 'Coefficient error (relative)', r.coefficientError, 'exp'),
      ] : []),
    ],
    warnings: r.warnings,
    sections: [
      {
        id: 'coefficients',
        title: truth ? 'Recovered coefficients and the truth' : 'Recovered coefficients',
        note: 'One bar per dictionary adapter: how much of it the target holds. ‖c·Δ‖ / ‖target‖ is each adapter\'s scaled norm against the target\'s; the adapters overlap, so these do not add up to 100%.',
        chart: {
          type: 'bar',
          labels: names,
          series: [
            { label: 'recovered', color: 'blue', data: names.map((n) => coefficient.get(n) ?? null) },
            ...(truth ? [{ label: 'truth', color: 'green' as const, data: names.map((n) => truth.get(n) ?? 0) }] : []),
          ],
          x: { title: 'dictionary adapter' },
          y: { title: 'coefficient' },
        },
        table: {
          columns: [
            { key: 'adapter', label: 'adapter' },
            { key: 'coefficient', label: 'coefficient', format: 'general' },
            ...(truth ? [{ key: 'truth', label: 'truth', format: 'general' as const }] : []),
            // ‖c·Δ‖ / ‖target‖ per adapter: the adapters' deltas overlap, so these do not add up to 100%.
            { key: 'share', label: '‖c·Δ‖ / ‖target‖', format: 'percent' },
            { key: 'inSupport', label: 'in support' },
          ],
          rows: names.map((n): Cell[] => {
            const share = dictionary.get(n)?.share ?? null;
            return [n, coefficient.get(n) ?? null, ...(truth ? [truth.get(n) ?? 0] : []), share, support.has(n)];
          }),
          rowIds: names.map((n) => `coefficient-${domId(n)}`),
        },
      },
    ],
  };
}


