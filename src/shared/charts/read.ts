/**
 * Defensive reads of a report received as `unknown`: reports come from other engine versions, from
 * files users saved, or from a restored panel, so a field that is absent or of another type reads as
 * null (drawn as "—") instead of throwing.
 */

export type Obj = Record<string, unknown>;

export function obj(x: unknown): Obj | null {
  return typeof x === 'object' && x !== null && !Array.isArray(x) ? (x as Obj) : null;
}

export function arr(x: unknown): unknown[] {
  return Array.isArray(x) ? x : [];
}

/** Array of objects, skipping anything else. */
export function objs(x: unknown): Obj[] {
  return arr(x).map(obj).filter((o): o is Obj => o !== null);
}

export function num(x: unknown): number | null {
  return typeof x === 'number' && Number.isFinite(x) ? x : null;
}

export function str(x: unknown): string | null {
  return typeof x === 'string' ? x : null;
}

export function bool(x: unknown): boolean | null {
  return typeof x === 'boolean' ? x : null;
}

export function strs(x: unknown): string[] {
  return arr(x).filter((s): s is string => typeof s === 'string');
}

/** `o.a.b.c`, or undefined as soon as a step is not an object. */
export function at(o: unknown, ...path: string[]): unknown {
  let cur: unknown = o;
  for (const p of path) {
    const c = obj(cur);
    if (c === null) return undefined;
    cur = c[p];
  }
  return cur;
}
