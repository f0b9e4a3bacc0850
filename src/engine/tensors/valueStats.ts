/**
 * The statistics of one tensor's values, gathered block by block in two passes, in float64: the first
 * finds the range, the compensated sum and the heat-map cells; the second, knowing min, max and mean,
 * fills the histogram and Σ(x − mean)² (exact two-pass variance). NaN and ±Inf are counted and left out.
 */
import type { StatsHeatmap, StatsHistogram, StatsSummary } from '../../shared/jobs/reports/stats';

/** Where block elements sit in the tensor seen as a matrix [rows, cols]. */
export interface MatrixGeometry {
  rows: number;
  cols: number;
}

/** The tensor as a matrix: rows its first dimension, columns the rest (a 1-D tensor is one row). */
export function matrixOf(shape: number[]): MatrixGeometry {
  const numel = shape.reduce((a, b) => a * b, 1);
  const rows = shape.length >= 2 ? shape[0] : 1;
  return { rows, cols: rows === 0 ? 0 : numel / rows };
}

/** Neumaier's compensated sum: the float64 sum of millions of terms without the drift of a plain loop. */
class Sum {
  private s = 0;
  private c = 0;
  add(x: number): void {
    const t = this.s + x;
    this.c += Math.abs(this.s) >= Math.abs(x) ? this.s - t + x : x - t + this.s;
    this.s = t;
  }
  get value(): number {
    return this.s + this.c;
  }
}

/** First pass: counts, range, sums, and the heat map's cells. */
export class RangePass {
  elements = 0;
  finite = 0;
  nan = 0;
  posInf = 0;
  negInf = 0;
  zeros = 0;
  min = Infinity;
  max = -Infinity;
  maxAbs = 0;
  private readonly sum = new Sum();
  private readonly sumSq = new Sum();
  readonly cellRows: number;
  readonly cellCols: number;
  readonly gridRows: number;
  readonly gridCols: number;
  private readonly cellMax: Float64Array;
  private readonly cellSum: Float64Array;
  private readonly cellCount: Float64Array;

  /** `grid`: at most grid × grid cells. */
  constructor(
    private readonly m: MatrixGeometry,
    grid: number,
  ) {
    this.cellRows = Math.max(1, Math.ceil(m.rows / grid));
    this.cellCols = Math.max(1, Math.ceil(m.cols / grid));
    this.gridRows = Math.ceil(m.rows / this.cellRows);
    this.gridCols = Math.ceil(m.cols / this.cellCols);
    const cells = this.gridRows * this.gridCols;
    this.cellMax = new Float64Array(cells);
    this.cellSum = new Float64Array(cells);
    this.cellCount = new Float64Array(cells);
  }

  /** `x` holds the elements from flat index `start` on. */
  add(x: Float32Array, start: number): void {
    const { cols } = this.m;
    let r = Math.floor(start / cols);
    let c = start - r * cols;
    let rowCell = Math.floor(r / this.cellRows) * this.gridCols;
    this.elements += x.length;
    for (let i = 0; i < x.length; i++) {
      const v = x[i];
      if (v !== v) this.nan++;
      else if (v === Infinity) this.posInf++;
      else if (v === -Infinity) this.negInf++;
      else {
        this.finite++;
        if (v < this.min) this.min = v;
        if (v > this.max) this.max = v;
        if (v === 0) this.zeros++;
        this.sum.add(v);
        this.sumSq.add(v * v);
        const a = Math.abs(v);
        if (a > this.maxAbs) this.maxAbs = a;
        const k = rowCell + Math.floor(c / this.cellCols);
        if (a > this.cellMax[k]) this.cellMax[k] = a;
        this.cellSum[k] += a;
        this.cellCount[k]++;
      }
      if (++c === cols) {
        c = 0;
        r++;
        rowCell = Math.floor(r / this.cellRows) * this.gridCols;
      }
    }
  }

  get mean(): number | null {
    return this.finite > 0 ? this.sum.value / this.finite : null;
  }

  get l2Norm(): number {
    return Math.sqrt(this.sumSq.value);
  }

  heatmap(): StatsHeatmap {
    const cells = this.cellCount.length;
    const maxAbs: (number | null)[] = new Array(cells);
    const meanAbs: (number | null)[] = new Array(cells);
    for (let k = 0; k < cells; k++) {
      const n = this.cellCount[k];
      maxAbs[k] = n > 0 ? this.cellMax[k] : null;
      meanAbs[k] = n > 0 ? this.cellSum[k] / n : null;
    }
    return {
      matrixRows: this.m.rows,
      matrixCols: this.m.cols,
      cellRows: this.cellRows,
      cellCols: this.cellCols,
      rows: this.gridRows,
      cols: this.gridCols,
      maxAbs,
      meanAbs,
    };
  }
}

/**
 * numpy's `histogram(x, bins)` edges: `linspace(lo, hi, bins + 1)` over [min, max], widened by ±0.5
 * when every value is the same.
 */
export function histogramEdges(min: number, max: number, bins: number): Float64Array {
  let lo = min;
  let hi = max;
  if (lo === hi) {
    lo -= 0.5;
    hi += 0.5;
  }
  const edges = new Float64Array(bins + 1);
  const step = (hi - lo) / bins;
  for (let i = 0; i < bins; i++) edges[i] = i * step + lo;
  edges[bins] = hi;
  return edges;
}

/** Second pass: the histogram's counts (numpy's bin rule, to the element) and Σ(x − mean)². */
export class SpreadPass {
  readonly counts: Float64Array;
  private readonly sq = new Sum();
  private readonly lo: number;
  private readonly width: number;

  constructor(
    readonly edges: Float64Array,
    private readonly mean: number,
  ) {
    this.counts = new Float64Array(edges.length - 1);
    this.lo = edges[0];
    this.width = edges[edges.length - 1] - edges[0];
  }

  add(x: Float32Array): void {
    const bins = this.counts.length;
    const e = this.edges;
    for (let i = 0; i < x.length; i++) {
      const v = x[i];
      if (v - v !== 0) continue;
      const d = v - this.mean;
      this.sq.add(d * d);
      // As numpy computes it, then corrected against the edges (the division can be off by an ulp).
      let k = Math.trunc(((v - this.lo) / this.width) * bins);
      if (k === bins) k--;
      if (v < e[k]) k--;
      else if (k !== bins - 1 && v >= e[k + 1]) k++;
      this.counts[k]++;
    }
  }

  histogram(): StatsHistogram {
    return { edges: Array.from(this.edges), counts: Array.from(this.counts) };
  }

  /** Population standard deviation of `finite` elements. */
  std(finite: number): number {
    return Math.sqrt(this.sq.value / finite);
  }
}

/** The summary of both passes (`spread` absent when no element was finite). */
export function statsSummary(range: RangePass, spread: SpreadPass | undefined): StatsSummary {
  const any = range.finite > 0;
  return {
    elements: range.elements,
    finite: range.finite,
    nan: range.nan,
    posInf: range.posInf,
    negInf: range.negInf,
    zeros: range.zeros,
    min: any ? range.min : null,
    max: any ? range.max : null,
    mean: range.mean,
    std: any && spread ? spread.std(range.finite) : null,
    l2Norm: range.l2Norm,
    maxAbs: range.maxAbs,
  };
}
