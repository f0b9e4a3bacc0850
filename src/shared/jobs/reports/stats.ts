/** The report of `stats`: one tensor's values, or the ΔW of one tensor, summarised for a look at them. */
import { boolean, fields, listOf, number, Present, readReport, string } from './read';

/** What the statistics are of. */
export type StatsSource =
  /** The tensor's values in `model`. */
  | 'values'
  /** `model` minus `base` (fp32, as extract's task vector). */
  | 'difference'
  /** The delta `adapter` adds to `base`'s tensor (s·B@A and every other rule; DoRA and IA³: fp32 merge minus base). */
  | 'adapter';

export interface StatsSummary {
  /** All elements, and the finite ones the figures below are of (NaN and ±Inf are counted, not used). */
  elements: number;
  finite: number;
  nan: number;
  posInf: number;
  negInf: number;
  zeros: number;
  /** Null when no element is finite. */
  min: number | null;
  max: number | null;
  mean: number | null;
  /** Population standard deviation (ddof 0, numpy's default), from the second pass's Σ(x − mean)². */
  std: number | null;
  /** ‖x‖₂ and max |x| of the finite elements. */
  l2Norm: number;
  maxAbs: number;
}

export interface StatsHistogram {
  /** bins + 1 edges, numpy's `histogram(x, bins)` over the finite elements: [min, max], widened by ±0.5 when min = max. */
  edges: number[];
  /** Elements in [edges[i], edges[i+1]); the last bin includes its right edge. */
  counts: number[];
}

/**
 * The tensor as a matrix (rows = its first dimension, columns = the rest, as stored), cut into cells of
 * `cellRows` × `cellCols` elements; each cell holds the max |x| and the mean |x| of its finite elements
 * (null where it has none), row-major, `rows` × `cols` cells.
 */
export interface StatsHeatmap {
  matrixRows: number;
  matrixCols: number;
  cellRows: number;
  cellCols: number;
  rows: number;
  cols: number;
  maxAbs: (number | null)[];
  meanAbs: (number | null)[];
}

export interface StatsReport {
  tensor: string;
  source: StatsSource;
  model: string | null;
  base: string | null;
  adapter: string | null;
  /** The stored dtype (the fine-tuned side's for a difference; fp32 for an adapter's delta). */
  dtype: string;
  shape: number[];
  /** The base stores the matrix [in, out] (GPT-2 Conv1D, embeddings): ΔW is shown as stored. */
  transposed: boolean;
  summary: StatsSummary;
  histogram: StatsHistogram | null;
  heatmap: StatsHeatmap;
  warnings: string[];
  seconds: number;
}

/** Bins and cells keep their places: an entry of the wrong shape is null where it stands. */
const cells = listOf(number, { keepNull: true });

/** A stats report as its panel reads it (read.ts); the source as any string, shown as it is. */
export const STATS_REPORT = fields<StatsReport>()({
  tensor: string,
  source: string,
  dtype: string,
  shape: cells,
  transposed: boolean,
  summary: fields<StatsSummary>()({
    elements: number,
    finite: number,
    nan: number,
    posInf: number,
    negInf: number,
    zeros: number,
    min: number,
    max: number,
    mean: number,
    std: number,
    l2Norm: number,
    maxAbs: number,
  }),
  histogram: fields<StatsHistogram>()({ edges: cells, counts: cells }),
  heatmap: fields<StatsHeatmap>()({
    matrixRows: number,
    matrixCols: number,
    cellRows: number,
    cellCols: number,
    rows: number,
    cols: number,
    maxAbs: cells,
    meanAbs: cells,
  }),
  warnings: listOf(string),
});
export type StatsView = Present<typeof STATS_REPORT>;

export function readStatsReport(x: unknown): StatsView {
  return readReport(STATS_REPORT, x);
}
