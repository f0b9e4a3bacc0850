/** Number display shared by summaries, tables and tooltips. Missing values are "—", never NaN. */
import { Cell, NumberFormat } from './model';

export const MISSING = '—';

export function formatCell(v: Cell | undefined, fmt?: NumberFormat): string {
  if (v === null || v === undefined) return MISSING;
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'string') return v;
  if (!Number.isFinite(v)) return MISSING;
  switch (fmt) {
    case 'int':
      return Math.round(v).toLocaleString('en-US');
    case 'exp':
      return v === 0 ? '0' : v.toExponential(2);
    case 'percent':
      return `${(100 * v).toPrecision(3)}%`;
    case 'cosine':
      // Enough digits to tell 0.99999 from 0.9999999.
      return v.toFixed(7);
    case 'fixed':
      return v.toFixed(4);
    default:
      return Number.isInteger(v) ? v.toLocaleString('en-US') : Math.abs(v) >= 1e-3 && Math.abs(v) < 1e6 ? v.toPrecision(5) : v.toExponential(2);
  }
}
