import * as path from 'node:path';

/**
 * Report names for input folders: the folder's basename, lengthened by parent folders until unique
 * (`run1/adapter`, `run2/adapter`), and `#2`, `#3`… for a path given more than once.
 */
export function uniqueNames(paths: string[]): string[] {
  const resolved = paths.map((p) => path.resolve(p));
  const distinct = [...new Set(resolved)];
  const parts = distinct.map((p) => p.split(path.sep).filter((s) => s !== ''));
  const depth = parts.map(() => 1);
  const name = (i: number): string => parts[i].slice(-depth[i]).join('/') || path.sep;
  for (let changed = true; changed; ) {
    changed = false;
    const groups = new Map<string, number[]>();
    parts.forEach((_, i) => groups.set(name(i), [...(groups.get(name(i)) ?? []), i]));
    for (const group of groups.values()) {
      if (group.length < 2) continue;
      for (const i of group) {
        if (depth[i] < parts[i].length) {
          depth[i]++;
          changed = true;
        }
      }
    }
  }
  const seen = new Map<string, number>();
  return resolved.map((r) => {
    const base = name(distinct.indexOf(r));
    const n = (seen.get(base) ?? 0) + 1;
    seen.set(base, n);
    return n === 1 ? base : `${base}#${n}`;
  });
}

/** Compares names with their digit runs as numbers, so `layers.2` sorts before `layers.10`. */
export function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

