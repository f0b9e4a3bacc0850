/** Counts and sizes as every room writes them: the CLI's text, the census tree, the panels and the viewer. */

/** 1234567 -> "1,234,567". */
export function formatInt(n: number): string {
  return n.toLocaleString('en-US');
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
