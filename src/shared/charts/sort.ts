/** Table sorting for display: the row order for one column, missing values last either way. */
import { Cell } from './model';

function rank(c: Cell): number {
  return c === null ? 2 : typeof c === 'string' ? 1 : 0;
}

export function sortedRowOrder(rows: Cell[][], column: number, descending: boolean): number[] {
  const cmp = (a: Cell, b: Cell): number => {
    if (rank(a) !== rank(b)) return rank(a) - rank(b);
    if (typeof a === 'string' && typeof b === 'string') return a.localeCompare(b, 'en', { numeric: true });
    if (a === null || b === null) return 0;
    return Number(a) - Number(b);
  };
  const order = rows.map((_, i) => i);
  // Stable: ties keep their original order.
  return order.sort((i, j) => {
    const a = rows[i][column] ?? null;
    const b = rows[j][column] ?? null;
    if (a === null || b === null) return cmp(a, b) || i - j;
    return (descending ? -cmp(a, b) : cmp(a, b)) || i - j;
  });
}
