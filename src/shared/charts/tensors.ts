/**
 * Where a tensor sits, for grouping: its layer and the series it belongs to in a per-layer chart. Uses
 * the report's own `layer` / `projection` when it has them, else the census classifier on the name.
 */
import { classifyTensor, moduleOf } from '../census/classify';

export const OUTSIDE_LAYERS = 'outside layers';

export interface Placement {
  /** Block index, null outside the blocks (embeddings, final norm). */
  layer: number | null;
  /** Series key: the projection (`q_proj`, `mlp.c_fc`), `.bias` marked; outside the blocks, the module. */
  key: string;
  category: string;
}

/** `t`: a report's entry for the tensor, read for its own `layer`, `category` and `projection`. */
export function placeTensor(t: { readonly [field: string]: unknown }, name: string): Placement {
  const c = classifyTensor(name);
  const layer = typeof t.layer === 'number' ? t.layer : t.layer === null ? null : c.layer;
  const category = typeof t.category === 'string' ? t.category : c.category;
  const projection = typeof t.projection === 'string' ? t.projection : c.projection;
  const module = moduleOf(name);
  const short = projection ?? (layer === null ? module : module.split('.').slice(-1)[0]);
  const key = name.endsWith('.bias') ? `${short}.bias` : short;
  return { layer, key, category };
}

export function layerLabel(layer: number | null): string {
  return layer === null ? OUTSIDE_LAYERS : String(layer);
}

/** Layer labels in block order, tensors outside the blocks last. */
export function layerLabels(layers: Iterable<number | null>): string[] {
  const set = new Set(layers);
  const nums = [...set].filter((l): l is number => l !== null).sort((a, b) => a - b);
  return [...nums.map(String), ...(set.has(null) ? [OUTSIDE_LAYERS] : [])];
}

/**
 * One value per (layer label, series key): the grouping behind the per-layer bar charts. A second
 * tensor landing in a taken cell (two biases of one module, say) gets a series of its own.
 */
export function groupByLayer<T>(
  items: T[],
  place: (t: T) => Placement,
  value: (t: T) => number | null,
): { labels: string[]; series: Map<string, Array<number | null>> } {
  const labels = layerLabels(items.map((t) => place(t).layer));
  const index = new Map(labels.map((l, i) => [l, i]));
  const series = new Map<string, Array<number | null>>();
  const taken = new Set<string>();
  // A projection name two categories share (GPT-2's c_proj in attention and in the MLP) is named with its category.
  const categories = new Map<string, Set<string>>();
  for (const t of items) {
    const p = place(t);
    categories.set(p.key, (categories.get(p.key) ?? new Set()).add(p.category));
  }
  for (const t of items) {
    const p = place(t);
    const i = index.get(layerLabel(p.layer))!;
    let key = categories.get(p.key)!.size > 1 && p.category !== '' ? `${p.category} ${p.key}` : p.key;
    for (let n = 2; taken.has(`${i}\u0000${key}`); n++) key = `${p.key} (${n})`;
    taken.add(`${i}\u0000${key}`);
    if (!series.has(key)) series.set(key, new Array<number | null>(labels.length).fill(null));
    series.get(key)![i] = value(t);
  }
  return { labels, series };
}
