/**
 * The panel of `stats`: one tensor's figures (a table), its histogram (bars of the bins, and their
 * table) and its heat map of |x| (max or mean per cell). Shapes the report only; the page draws it.
 */
import { readStatsReport, StatsSummary } from '../jobs/reports/stats';
import { formatCell, formatTick } from './format';
import { Cell, NumberFormat, PanelModel, Section, SummaryItem, Tone } from './model';

const WHAT: Record<string, string> = {
  values: 'values',
  difference: 'fine-tuned minus base',
  adapter: "the adapter's ΔW",
};

function item(id: string, label: string, v: number | null, fmt?: NumberFormat, tone?: Tone): SummaryItem {
  return { id: `summary-${id}`, label, text: formatCell(v, fmt), value: v, ...(tone ? { tone } : {}) };
}

export function statsPanel(report: unknown, title: string): PanelModel {
  const r = readStatsReport(report);
  const figure = (k: keyof StatsSummary): number | null => r.summary?.[k] ?? null;
  const source = r.source ?? 'values';
  const nonFinite = (figure('nan') ?? 0) + (figure('posInf') ?? 0) + (figure('negInf') ?? 0);
  const summary: SummaryItem[] = [
    item('elements', 'elements', figure('elements'), 'int'),
    item('min', 'min', figure('min')),
    item('max', 'max', figure('max')),
    item('mean', 'mean', figure('mean')),
    item('std', 'std', figure('std')),
    item('non-finite', 'NaN / ±Inf', nonFinite, 'int', nonFinite > 0 ? 'bad' : undefined),
  ];
  const figures: Array<[string, string, Cell]> = [
    ['elements', 'elements', figure('elements')],
    ['finite', 'finite elements', figure('finite')],
    ['nan', 'NaN', figure('nan')],
    ['pos-inf', '+Inf', figure('posInf')],
    ['neg-inf', '−Inf', figure('negInf')],
    ['zeros', 'exact zeros', figure('zeros')],
    ['min', 'min', figure('min')],
    ['max', 'max', figure('max')],
    ['mean', 'mean', figure('mean')],
    ['std', 'std (population)', figure('std')],
    ['l2-norm', '‖x‖₂', figure('l2Norm')],
    ['max-abs', 'max |x|', figure('maxAbs')],
  ];
  const figuresSection: Section = {
    id: 'figures',
    title: 'Figures',
    note: 'Of the finite elements; NaN and ±Inf are counted and left out. std is the population standard deviation (numpy’s default).',
    table: {
      columns: [{ key: 'figure', label: 'figure' }, { key: 'value', label: 'value', format: 'general' }],
      rows: figures.map(([, label, v]) => [label, v]),
      rowIds: figures.map(([id]) => `figure-${id}`),
    },
  };
  const sections: Section[] = [];
  const edges = r.histogram?.edges ?? [];
  const counts = r.histogram?.counts ?? [];
  if (counts.length > 0 && edges.length === counts.length + 1) {
    // Three significant digits: the axis labels a bin; its exact edges are in the table.
    const mid = (i: number): string => formatTick(((edges[i] ?? 0) + (edges[i + 1] ?? 0)) / 2);
    sections.push({
      id: 'histogram',
      title: 'Histogram',
      note: `${counts.length} equal bins from min to max (numpy's histogram); each bin holds [from, to), the last one its right edge too.`,
      chart: {
        type: 'bar',
        labels: counts.map((_, i) => mid(i)),
        series: [{ label: 'elements', color: 'blue', data: counts }],
        x: { title: `${WHAT[source] ?? source} (bin centre)` },
        y: { title: 'elements', integer: true },
      },
      table: {
        columns: [{ key: 'from', label: 'from', format: 'general' }, { key: 'to', label: 'to', format: 'general' }, { key: 'count', label: 'elements', format: 'int' }],
        rows: counts.map((c, i) => [edges[i], edges[i + 1], c]),
      },
    });
  }
  const h = r.heatmap;
  const rows = h?.rows ?? 0;
  const cols = h?.cols ?? 0;
  if (h && rows > 0 && cols > 0) {
    const cellRows = h.cellRows ?? 1;
    const cellCols = h.cellCols ?? 1;
    const transposed = r.transposed === true;
    sections.push({
      id: 'heatmap',
      title: 'Heat map of |x|',
      note:
        `The tensor as a ${formatCell(h.matrixRows, 'int')} × ${formatCell(h.matrixCols, 'int')} matrix${transposed ? ' as the base stores it ([in, out])' : ''}, ` +
        `in cells of ${cellRows} × ${cellCols} elements: each cell's largest (or mean) |x| over its finite elements.`,
      heatmap: {
        rows,
        cols,
        layers: [
          { label: 'max |x|', values: h.maxAbs },
          { label: 'mean |x|', values: h.meanAbs },
        ],
        cellRows,
        cellCols,
        matrixRows: h.matrixRows ?? rows,
        matrixCols: h.matrixCols ?? cols,
        x: transposed ? 'output features' : r.shape.length >= 2 ? 'input features' : 'elements',
        y: transposed ? 'input features' : r.shape.length >= 2 ? 'output features' : '',
      },
    });
  }
  // The pictures first, where the panel opens; the figures' table after them.
  sections.push(figuresSection);

  const dims = r.shape.map((d) => (d === null ? '?' : String(d))).join(' × ');
  return {
    kind: 'stats',
    heading: title,
    verdict: { text: `${r.tensor ?? '?'} [${dims}] ${r.dtype ?? ''}: ${WHAT[source] ?? source}`, tone: 'neutral' },
    summary,
    warnings: r.warnings,
    sections,
  };
}
