/**
 * A panel table as CSV (RFC 4180): the raw values (full precision, not the rounded text the page
 * shows), a header of column labels, fields quoted where they hold a comma, quote or line break.
 */
import { HeatmapSpec, Section, TableSpec } from './model';

function field(v: string | number | boolean | null): string {
  if (v === null) return '';
  const s = typeof v === 'number' ? (Number.isFinite(v) ? String(v) : '') : String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function tableCsv(t: TableSpec): string {
  const lines = [t.columns.map((c) => field(c.label)), ...t.rows.map((r) => r.map(field))];
  return lines.map((l) => l.join(',')).join('\r\n') + '\r\n';
}

/** A heat map's cells as CSV: one row per cell with its element ranges and each layer's value. */
export function heatmapCsv(h: HeatmapSpec): string {
  const rows: (string | number | null)[][] = [];
  for (let i = 0; i < h.rows; i++) {
    for (let j = 0; j < h.cols; j++) {
      const k = i * h.cols + j;
      const [r0, c0] = [i * h.cellRows, j * h.cellCols];
      const [r1, c1] = [Math.min(h.matrixRows, r0 + h.cellRows) - 1, Math.min(h.matrixCols, c0 + h.cellCols) - 1];
      rows.push([r0, r1, c0, c1, ...h.layers.map((l) => l.values[k] ?? null)]);
    }
  }
  const head = ['first row', 'last row', 'first column', 'last column', ...h.layers.map((l) => l.label)];
  return [head.map(field), ...rows.map((r) => r.map(field))].map((l) => l.join(',')).join('\r\n') + '\r\n';
}

/** A section's data as CSV: its table, else its heat map's cells; undefined when it has neither. */
export function sectionCsv(s: Section): string | undefined {
  return s.table ? tableCsv(s.table) : s.heatmap ? heatmapCsv(s.heatmap) : undefined;
}
