/**
 * What a report panel draws, as plain data: a summary header, then sections of one chart and the table
 * of the same numbers (for screen readers, copying, and anyone who distrusts a picture). The shaping
 * modules beside this file turn each engine report into a PanelModel by grouping and sorting only; the
 * webview turns a PanelModel into DOM and chart.js without looking at the report itself.
 */

/** Theme colours, mapped by the webview to VS Code's `--vscode-charts-*` variables. */
export type SeriesColor = 'blue' | 'green' | 'red' | 'orange' | 'purple' | 'yellow' | 'foreground';
export const SERIES_COLORS: readonly SeriesColor[] = ['blue', 'orange', 'green', 'purple', 'red', 'yellow'];

/** `warn`: a loss the user should weigh (an expected rounding loss, a large bf16 loss). */
export type Tone = 'good' | 'bad' | 'warn' | 'neutral';

export interface SummaryItem {
  /** DOM id of the value (`summary-shared`, `mean-cosine`, `verdict`): stable, tests read it. */
  id: string;
  label: string;
  /** Displayed text. */
  text: string;
  /** The raw number (or boolean) behind the text, exposed as `data-value`. */
  value: number | boolean | string | null;
  tone?: Tone;
  /** Items of one group (a dtype) are drawn together under this heading. */
  group?: string;
}

export interface Point {
  /** A number, or a category label when the chart has `labels` (a strip plot). */
  x: number | string;
  y: number;
  /** The tensor or item the point stands for, shown in the tooltip. */
  label?: string;
}

export interface Series {
  label: string;
  color: SeriesColor;
  /** Bar and line charts: one value per category label (null: no bar). Scatter: points. */
  data: Array<number | null> | Point[];
  /** Draw this series as a line over a bar chart (a threshold, a reference). */
  asLine?: boolean;
  dashed?: boolean;
  /** The points' labels are tensor names: clicking a point reveals the tensor in the census tree. */
  tensorPoints?: boolean;
  /** Scatter points' marker: series of one colour (one dtype) told apart by shape (the merge rule). */
  pointStyle?: 'circle' | 'triangle' | 'rect' | 'rectRot';
}

export interface Axis {
  title: string;
  log?: boolean;
  /** How tick labels read (cosines need 7 digits, fractions read as percent). */
  format?: NumberFormat;
  /** Whole-number ticks only (counts, layer indices, ranks); chart.js still spaces them out on long axes. */
  integer?: boolean;
  min?: number;
  max?: number;
}

export interface ChartSpec {
  type: 'bar' | 'scatter' | 'line';
  /** Category labels of bar and line charts, and of a scatter's x axis when its points are per category. */
  labels?: string[];
  series: Series[];
  x: Axis;
  y: Axis;
  stacked?: boolean;
  /** Bars along the y axis (long category names read better). */
  horizontal?: boolean;
}

export type Cell = string | number | boolean | null;

export interface Column {
  key: string;
  label: string;
  /** How numbers in this column are shown. */
  format?: NumberFormat;
  /** Long text (a metadata value) that wraps anywhere instead of widening the table. */
  wrap?: boolean;
}

/** `general`: integers whole, others to 5 significant digits or in exponent form. */
export type NumberFormat = 'general' | 'int' | 'exp' | 'percent' | 'cosine';

export interface TableSpec {
  columns: Column[];
  rows: Cell[][];
  /** Per cell intensity in [0, 1] for a heat map table (null: no shading). */
  heat?: Array<Array<number | null>>;
  /** DOM ids of the rows (`coefficient-<adapter>`), where tests need one row. */
  rowIds?: string[];
  /** Index of a column holding tensor names: its cells link to the census tree. */
  tensorColumn?: number;
  /** A last column with a button per row acting on the row's tensor (the viewer's "Statistics"). */
  tensorAction?: { label: string; title: string };
  /** A filter box over the rows (any cell's text); `noun` names the rows in its count ("2 of 21 tensors"). */
  filter?: { label: string; noun: string };
}

/**
 * A matrix of cells drawn as colours (a tensor's |x| downsampled): each layer is one reading of the
 * same cells (max |x|, mean |x|) that the page can switch between; null cells have no finite value.
 */
export interface HeatmapSpec {
  rows: number;
  cols: number;
  layers: Array<{ label: string; values: Array<number | null> }>;
  /** Elements per cell along each axis, and the matrix's extent, for the axes and the hover text. */
  cellRows: number;
  cellCols: number;
  matrixRows: number;
  matrixCols: number;
  x: string;
  y: string;
}

export interface Section {
  /** Stable id: the section is `#section-<id>`, its chart `#chart-<id>`, its table `#table-<id>`. */
  id: string;
  title: string;
  /** One or two sentences: what is drawn, what was left out and why. */
  note?: string;
  /** Key figures of this section (validate: one block per dtype). */
  summary?: SummaryItem[];
  chart?: ChartSpec;
  table?: TableSpec;
  heatmap?: HeatmapSpec;
}

export interface PanelModel {
  kind: string;
  heading: string;
  /** Sentence under the heading: the verdict in words, or what the report is. */
  verdict: { text: string; tone: Tone } | null;
  summary: SummaryItem[];
  warnings: string[];
  sections: Section[];
  /** The weights viewer: an "Open in Census" button for its file. */
  openInCensus?: boolean;
  /** The spectrum panel: a "Resize…" button that starts resize for its adapter. */
  resize?: boolean;
}

/**
 * A bar chart of a single bar says nothing its table does not: such sections keep the table alone
 * (a census of a one-dtype checkpoint, a validate of one dtype).
 */
export function withoutOneBarCharts(m: PanelModel): PanelModel {
  const oneBar = (c: ChartSpec): boolean => c.type === 'bar' && (c.labels?.length ?? 0) <= 1;
  return { ...m, sections: m.sections.map((s) => (s.chart && s.table && oneBar(s.chart) ? { ...s, chart: undefined } : s)) };
}

/** Values drawn (bars or points), threshold lines excluded: what tests and screen readers can count. */
export function valueCount(spec: ChartSpec): number {
  return spec.series.filter((s) => !s.asLine).reduce((n, s) => n + (s.data as unknown[]).filter((v) => v !== null).length, 0);
}
