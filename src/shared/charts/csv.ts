/**
 * A panel table as CSV (RFC 4180): the raw values (full precision, not the rounded text the page
 * shows), a header of column labels, fields quoted where they hold a comma, quote or line break.
 */
import { TableSpec } from './model';

function field(v: string | number | boolean | null): string {
  if (v === null) return '';
  const s = typeof v === 'number' ? (Number.isFinite(v) ? String(v) : '') : String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function tableCsv(t: TableSpec): string {
  const lines = [t.columns.map((c) => field(c.label)), ...t.rows.map((r) => r.map(field))];
  return lines.map((l) => l.join(',')).join('\r\n') + '\r\n';
}
