/**
 * The panel of `stats`: one tensor's figures (a table), its histogram (bars of the bins, and their
 * table) and its heat map of |x| (max or mean per cell). Shapes the report only; the page draws it.
 */
import { formatCell, formatTick } from './format';
import { Cell, NumberFormat, PanelModel, Section, SummaryItem, Tone } from './model';
import { arr, at, num, obj, str } from './read';

const WHAT: Record<string, string> = {
  values: 'values',
  difference: 'fine-tuned minus base',
  adapter: "the adapter's ΔW",
};

function item(id: string, label: string, v: number | null, fmt?: NumberFormat, tone?: Tone): SummaryItem {
  return { id: `summary-${id}`, label, text: formatCell(v, fmt), value: v, ...(tone ? { tone } : {}) };
}

function nums(x: unknown): Array<number | null> {
  return arr(x).map(num);
}

export function statsPanel(report: unknown, title: string): PanelModel {
  const r = obj(report) ?? {};
  const s = obj(r.summary) ?? {};
  const shape = arr(r.shape).map(num);
  const source = str(r.source) ?? 'values';
  const nonFinite = (num(s.nan) ?? 0) + (num(s.posInf) ?? 0) + (num(s.negInf) ?? 0);
  const summary: SummaryItem[] = [
    item('elements', 'elements', num(s.elements), 'int'),
    item('min', 'min', num(s.min)),
    item('max', 'max', num(s.max)),
    item('mean', 'mean', num(s.mean)),
    item('std', 'std', num(s.std)),
    item('non-finite', 'NaN / ±Inf', nonFinite, 'int', nonFinite > 0 ? 'bad' : undefined),
  ];
  const figures: Array<[string, string, Cell]> = [
    ['elements', 'elements', num(s.elements)],
    ['finite', 'finite elements', num(s.finite)],
    ['nan', 'NaN', num(s.nan)],
    ['pos-inf', '+Inf', num(s.posInf)],
    ['neg-inf', '−Inf', num(s.negInf)],
    ['zeros', 'exact zeros', num(s.zeros)],
    ['min', 'min', num(s.min)],
    ['max', 'max', num(s.max)],
    ['mean', 'mean', num(s.mean)],
    ['std', 'std (population)', num(s.std)],
    ['l2-norm', '‖x‖₂', num(s.l2Norm)],
    ['max-abs', 'max |x|', num(s.maxAbs)],
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
  const edges = nums(at(r, 'histogram', 'edges'));
  const counts = nums(at(r, 'histogram', 'counts'));
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
  const h = obj(r.heatmap);
  const rows = num(h?.rows) ?? 0;
  const cols = num(h?.cols) ?? 0;
  if (h && rows > 0 && cols > 0) {
    const cellRows = num(h.cellRows) ?? 1;
    const cellCols = num(h.cellCols) ?? 1;
    const transposed = r.transposed === true;
    sections.push({
      id: 'heatmap',
      title: 'Heat map of |x|',
      note:
        `The tensor as a ${formatCell(num(h.matrixRows), 'int')} × ${formatCell(num(h.matrixCols), 'int')} matrix${transposed ? ' as the base stores it ([in, out])' : ''}, ` +
        `in cells of ${cellRows} × ${cellCols} elements: each cell's largest (or mean) |x| over its finite elements.`,
      heatmap: {
        rows,
        cols,
        layers: [
          { label: 'max |x|', values: nums(h.maxAbs) },
          { label: 'mean |x|', values: nums(h.meanAbs) },
        ],
        cellRows,
        cellCols,
        matrixRows: num(h.matrixRows) ?? rows,
        matrixCols: num(h.matrixCols) ?? cols,
        x: transposed ? 'output features' : shape.length >= 2 ? 'input features' : 'elements',
        y: transposed ? 'input features' : shape.length >= 2 ? 'output features' : '',
      },
    });
  }
  // The pictures first, where the panel opens; the figures' table after them.
  sections.push(figuresSection);

  const dims = shape.map((d) => (d === null ? '?' : String(d))).join(' × ');
  return {
    kind: 'stats',
    heading: title,
    verdict: { text: `${str(r.tensor) ?? '?'} [${dims}] ${str(r.dtype) ?? ''}: ${WHAT[source] ?? source}`, tone: 'neutral' },
    summary,
    warnings: arr(r.warnings).filter((w): w is string => typeof w === 'string'),
    sections,
  };
}
