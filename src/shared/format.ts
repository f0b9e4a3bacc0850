/** Counts and sizes as every room writes them: the CLI's text, the census tree, the panels and the viewer. */

/** 1234567 -> "1,234,567". */
export function formatInt(n: number): string {
  return n.toLocaleString('en-US');
}

const COUNT_UNITS = [
  [1e3, 'K', 1],
  [1e6, 'M', 2],
  [1e9, 'B', 2],
  [1e12, 'T', 2],
] as const;

/**
 * A count in decimal units next to (or instead of) its exact value: 12345678 -> "12.35 M", 3030371328 -> "3.03 B",
 * 2048 -> "2.0 K", below a thousand the exact count. The unit is chosen after rounding, so 999999 reads "1.00 M".
 */
export function formatCount(n: number): string {
  if (n < 1e3) return String(n);
  let i = COUNT_UNITS.findIndex(([v]) => n < v * 1e3);
  if (i < 0) i = COUNT_UNITS.length - 1;
  const [v, unit, digits] = COUNT_UNITS[i];
  const x = (n / v).toFixed(digits);
  if (Number(x) < 1e3 || i === COUNT_UNITS.length - 1) return `${x} ${unit}`;
  const [v2, unit2, digits2] = COUNT_UNITS[i + 1];
  return `${(n / v2).toFixed(digits2)} ${unit2}`;
}

/** Binary units, two decimals above a KiB: 1536 -> "1.50 KiB"; below 1024 the exact "512 B". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let x = n;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return `${i === 0 ? x : x.toFixed(2)} ${units[i]}`;
}
