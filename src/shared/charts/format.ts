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
    default:
      return Number.isInteger(v) ? v.toLocaleString('en-US') : Math.abs(v) >= 1e-3 && Math.abs(v) < 1e6 ? v.toPrecision(5) : v.toExponential(2);
  }
}

/**
 * Axis tick labels: short; on a log axis only at 1, 2 and 5 times a power of ten (else crowded); for
 * cosines, as many decimals as the tick spacing `step` needs (cosines of 1 - 1e-9 all read 1.0000000).
 */
export function formatTick(v: number, fmt?: NumberFormat, log = false, step?: number): string {
  if (log) {
    const mantissa = v / 10 ** Math.floor(Math.log10(v) + 1e-9);
    if (![1, 2, 5].some((m) => Math.abs(mantissa - m) < 1e-6)) return '';
  }
  if (fmt === 'cosine' && step !== undefined && step > 0) return v.toFixed(Math.min(15, Math.max(1, Math.ceil(-Math.log10(step) - 1e-9))));
  if (fmt === 'cosine' || fmt === 'percent' || fmt === 'int') return formatCell(v, fmt);
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 1e-3 && a < 1e9 ? Number(v.toPrecision(3)).toLocaleString('en-US', { maximumFractionDigits: 20 }) : v.toExponential(0);
}
