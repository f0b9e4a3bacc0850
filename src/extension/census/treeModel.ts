/**
 * The Parameter Census tree as plain data: checkpoint -> category -> layer -> tensor, built from a
 * `census` report (and, once a comparison ran, its per-tensor numbers); an image model's (whose census
 * gives each tensor a component and block) is checkpoint -> component -> block -> category -> tensor:
 * UNet down / mid / up blocks, FLUX double / single blocks, text encoder layers, attention vs resnet vs
 * time embedding. No `vscode` import: the view (censusView.ts) only maps these nodes onto TreeItems, and
 * unit tests check labels and counts here.
 */
import { formatBytes, formatCount, formatInt } from '../../shared/format';
import { readCensusReport } from '../../shared/jobs/reports/census';

export type Category = 'attention' | 'cross_attention' | 'mlp' | 'norm' | 'embedding' | 'final_norm' | 'other' | 'resnet' | 'time_embedding' | 'vae';
const CATEGORY_ORDER: readonly Category[] = ['embedding', 'time_embedding', 'attention', 'cross_attention', 'resnet', 'mlp', 'norm', 'final_norm', 'vae', 'other'];
const CATEGORY_TITLES: Record<Category, string> = {
  attention: 'Attention',
  cross_attention: 'Cross-attention',
  mlp: 'MLP',
  norm: 'Norms',
  embedding: 'Embeddings',
  final_norm: 'Final norm',
  other: 'Other',
  resnet: 'ResNets',
  time_embedding: 'Time embedding',
  vae: 'VAE',
};
const COMPONENT_ORDER = ['text_encoder', 'text_encoder_2', 'text_encoder_3', 'unet', 'transformer', 'vae'];
const COMPONENT_TITLES: Record<string, string> = {
  text_encoder: 'Text encoder',
  text_encoder_2: 'Text encoder 2',
  text_encoder_3: 'Text encoder 3',
  unet: 'UNet',
  transformer: 'Transformer',
  vae: 'VAE',
};
/** Block kinds (census `block`: `down.1`, `mid`, `double.7`, `layers.3`, …) in model order, with their titles. */
const BLOCK_KINDS: Array<[string, string]> = [
  ['layers', 'Layer'],
  ['input', 'Input block'],
  ['down', 'Down block'],
  ['middle', 'Middle block'],
  ['mid', 'Mid block'],
  ['output', 'Output block'],
  ['up', 'Up block'],
  ['double', 'Double block'],
  ['single', 'Single block'],
  ['encoder', 'Encoder'],
  ['decoder', 'Decoder'],
];

/** One tensor of a census report (CLI.md: census `tensors[]`). */
export interface CensusTensor {
  name: string;
  dtype: string;
  shape: number[];
  numel: number;
  category: Category;
  layer: number | null;
  projection: string | null;
  loraTarget: boolean;
  /** An adapter's own factor (census of an adapter without its base). */
  loraFactor: boolean;
  /** Encoder-decoder models: the stack of the layer (`encoder`, `decoder`); layers are numbered per stack. */
  stack: string | null;
  /** Image models: the pipeline component (`unet`, `text_encoder`, `transformer`, `vae`) and block (`down.1`, `mid`). */
  component: string | null;
  block: string | null;
}

/** One tensor of a compare report (CLI.md: compare `tensors[]`). */
export interface TensorComparison {
  name: string;
  cosine: number | null;
  maxAbsDiff: number | null;
  relFroErr: number | null;
  loraNorm: number | null;
  taskVectorNorm: number | null;
}

export interface CheckpointEntry {
  /** The folder or file the census ran on. */
  path: string;
  /** The adapter whose targets are marked, if any. */
  adapter?: string;
  report: unknown;
  comparison?: Map<string, TensorComparison>;
  /** Compared tensors with a cosine below this are flagged (icon and colour). */
  cosineThreshold?: number;
}

export type NodeKind = 'checkpoint' | 'component' | 'block' | 'category' | 'layer' | 'tensor';

export interface TreeNode {
  kind: NodeKind;
  /** Unique and stable across refreshes (the view keeps expansion state by it). */
  id: string;
  label: string;
  description: string;
  /** Markdown. */
  tooltip: string;
  /** For `when` clauses of menus: `checkpoint`, `component`, `block`, `category`, `layer`, `tensor`, `tensor.loraTarget`. */
  contextValue: string;
  /** A codicon name. */
  icon: string;
  /** A theme colour id for the icon (a flagged tensor). */
  iconColor?: string;
  /** The checkpoint's path (every node), and the tensor's name (tensor nodes). */
  checkpoint: string;
  tensor?: string;
  children: TreeNode[];
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** The tensors of a census report, checked field by field (a report from an older engine must not break the view). */
export function censusTensors(report: unknown): CensusTensor[] {
  if (!isObject(report) || !Array.isArray(report.tensors)) throw new Error('not a census report: no tensors[]');
  return report.tensors.map((t, i) => {
    if (!isObject(t) || typeof t.name !== 'string') throw new Error(`census report: tensors[${i}] has no name`);
    const shape = Array.isArray(t.shape) ? t.shape.filter((d): d is number => typeof d === 'number') : [];
    return {
      name: t.name,
      dtype: typeof t.dtype === 'string' ? t.dtype : '?',
      shape,
      numel: typeof t.numel === 'number' ? t.numel : shape.reduce((a, b) => a * b, 1),
      category: CATEGORY_ORDER.find((c) => c === t.category) ?? 'other',
      layer: typeof t.layer === 'number' ? t.layer : null,
      projection: typeof t.projection === 'string' ? t.projection : null,
      loraTarget: t.loraTarget === true,
      loraFactor: t.loraFactor === true,
      stack: typeof t.stack === 'string' ? t.stack : null,
      component: typeof t.component === 'string' ? t.component : null,
      block: typeof t.block === 'string' ? t.block : null,
    };
  });
}

/** Per-tensor numbers of a compare report, by tensor name. */
export function comparisonByName(report: unknown): Map<string, TensorComparison> {
  const out = new Map<string, TensorComparison>();
  if (!isObject(report) || !Array.isArray(report.tensors)) return out;
  const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  for (const t of report.tensors) {
    if (!isObject(t) || typeof t.name !== 'string') continue;
    out.set(t.name, {
      name: t.name,
      cosine: num(t.cosine),
      maxAbsDiff: num(t.maxAbsDiff),
      relFroErr: num(t.relFroErr),
      loraNorm: num(t.loraNorm),
      taskVectorNorm: num(t.taskVectorNorm),
    });
  }
  return out;
}

/** A metric for a tree description: 4 significant digits, exponent when tiny; cosine keeps 6 decimals. */
export function formatMetric(v: number | null, digits = 4): string {
  if (v === null) return 'n/a';
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a < 1e-3 || a >= 1e5 ? v.toExponential(digits - 1) : v.toPrecision(digits);
}

const plural = (n: number, one: string, many = one + 's'): string => `${formatInt(n)} ${n === 1 ? one : many}`;

function countLabel(title: string, tensors: CensusTensor[]): string {
  const targets = tensors.filter((t) => t.loraTarget).length;
  return `${title} — ${plural(tensors.length, 'tensor')}${targets > 0 ? `, ${plural(targets, 'LoRA target')}` : ''}`;
}

function elementsOf(tensors: CensusTensor[]): number {
  return tensors.reduce((a, t) => a + t.numel, 0);
}

/**
 * The tensor name without its layer or block prefix (`model.layers.3.self_attn.q_proj.weight` ->
 * `self_attn.q_proj.weight`; `unet.down_blocks.1.resnets.0.conv1.weight` -> `resnets.0.conv1.weight`).
 */
export function shortName(t: CensusTensor): string {
  if (t.block !== null) {
    const [kind, n] = t.block.split('.');
    const names: Record<string, string> = { down: 'down_blocks', up: 'up_blocks', input: 'input_blocks', output: 'output_blocks', double: '(?:double_blocks|transformer_blocks)', single: '(?:single_blocks|single_transformer_blocks)', layers: '(?:layers|resblocks)', mid: 'mid_block', middle: 'middle_block' };
    const prefix = names[kind];
    const m = prefix ? new RegExp(`(?:^|[._])${prefix}${n === undefined ? '' : `[._]${n}`}[._]`).exec(t.name) : null;
    return m ? t.name.slice(m.index + m[0].length) : t.name;
  }
  if (t.layer === null) return t.name;
  const m = new RegExp(`(?:^|\\.)(?:layers|layer|h|blocks|block)\\.${t.layer}\\.`).exec(t.name);
  return m ? t.name.slice(m.index + m[0].length) : t.name;
}

function tensorNode(entry: CheckpointEntry, t: CensusTensor, parentId: string): TreeNode {
  const cmp = entry.comparison?.get(t.name);
  const shape = t.shape.length === 0 ? 'scalar' : t.shape.join('×');
  // The comparison comes first, where a narrow side bar still shows it; norms are in the tooltip.
  const flag = comparisonFlag(cmp, entry.cosineThreshold ?? DEFAULT_COSINE_THRESHOLD);
  const parts = [...(flag ? [flag.text] : []), shape, t.dtype, formatInt(t.numel)];
  if (t.loraTarget) parts.push('LoRA');
  if (t.loraFactor) parts.push('LoRA factor');
  const lines = [
    `**${t.name}**`,
    '',
    `| | |`,
    `|---|---|`,
    `| dtype | ${t.dtype} |`,
    `| shape | [${t.shape.join(', ')}] |`,
    `| elements | ${formatInt(t.numel)} |`,
    `| category | ${CATEGORY_TITLES[t.category]} |`,
    ...(t.component !== null ? [`| component | ${t.component} |`, `| block | ${t.block ?? '—'} |`] : [`| layer | ${t.layer ?? '—'} |`]),
    `| projection | ${t.projection ?? '—'} |`,
    `| LoRA target | ${t.loraTarget ? 'yes' : 'no'} |`,
    ...(t.loraFactor ? ['| adapter factor | yes |'] : []),
  ];
  if (cmp) {
    lines.push(
      `| cosine (LoRA ΔW vs task vector) | ${cmp.cosine === null ? 'n/a' : cmp.cosine.toFixed(8)} |`,
      `| max abs difference | ${formatMetric(cmp.maxAbsDiff)} |`,
      `| relative Frobenius error | ${formatMetric(cmp.relFroErr)} |`,
      `| ‖ΔW‖ (LoRA) | ${formatMetric(cmp.loraNorm)} |`,
      `| ‖τ‖ (task vector) | ${formatMetric(cmp.taskVectorNorm)} |`,
    );
  }
  if (flag?.warn) lines.splice(1, 0, '', `$(warning) ${flag.warn}`);
  return {
    kind: 'tensor',
    id: `${parentId}/${t.name}`,
    label: shortName(t),
    description: parts.join(' · '),
    tooltip: lines.join('\n'),
    contextValue: t.loraTarget ? 'tensor.loraTarget' : 'tensor',
    icon: flag?.warn ? 'warning' : t.loraTarget ? 'target' : 'symbol-array',
    iconColor: flag?.warn ? 'list.warningForeground' : undefined,
    checkpoint: entry.path,
    tensor: t.name,
    children: [],
  };
}

/** The cosine below which a compared tensor is flagged, unless the loraLens.cosineThreshold setting says otherwise. */
export const DEFAULT_COSINE_THRESHOLD = 0.9999;

/**
 * What the tree says about a tensor's comparison: the cosine of a shared tensor (flagged below the
 * threshold), "changed outside the adapter" for a task-vector-only one, "unchanged in the merged
 * model" for an adapter-only one; nothing for a tensor neither side changed.
 */
export function comparisonFlag(cmp: TensorComparison | undefined, threshold: number): { text: string; warn?: string } | undefined {
  if (!cmp) return undefined;
  const lora = (cmp.loraNorm ?? 0) > 0;
  const tau = (cmp.taskVectorNorm ?? 0) > 0;
  if (lora && tau) {
    if (cmp.cosine === null) return { text: 'cos n/a', warn: 'the cosine is undefined (a non-finite value)' };
    const text = `cos ${cmp.cosine.toFixed(6)}`;
    return cmp.cosine < threshold ? { text: `⚠ ${text}`, warn: `cosine ${cmp.cosine.toFixed(6)} is below ${threshold}: the merged model does not hold this delta's direction` } : { text };
  }
  if (tau) return { text: `changed outside the adapter (‖τ‖ ${formatMetric(cmp.taskVectorNorm)})` };
  if (lora) return { text: '⚠ unchanged in the merged model', warn: 'the adapter changes this tensor, the merged model does not' };
  return undefined;
}

function groupNode(entry: CheckpointEntry, kind: 'component' | 'block' | 'category' | 'layer', id: string, title: string, tensors: CensusTensor[], children: TreeNode[]): TreeNode {
  const elements = elementsOf(tensors);
  return {
    kind,
    id,
    label: countLabel(title, tensors),
    description: `${formatCount(elements)} elements`,
    tooltip: `**${title}**\n\n${plural(tensors.length, 'tensor')}, ${formatInt(elements)} elements, ${plural(
      tensors.filter((t) => t.loraTarget).length,
      'LoRA target',
    )}`,
    contextValue: kind,
    icon: { component: 'package', block: 'layers', category: 'symbol-namespace', layer: 'layers' }[kind],
    checkpoint: entry.path,
    children,
  };
}

function categoryNode(entry: CheckpointEntry, category: Category, tensors: CensusTensor[]): TreeNode {
  const id = `${entry.path}/${category}`;
  const outside = tensors.filter((t) => t.layer === null);
  // Layers are numbered per stack: an encoder-decoder's encoder layer 3 and decoder layer 3 are two nodes.
  const byLayer = new Map<string, { stack: string | null; layer: number; tensors: CensusTensor[] }>();
  for (const t of tensors) {
    if (t.layer === null) continue;
    const key = `${t.stack ?? ''} ${t.layer}`;
    const g = byLayer.get(key) ?? { stack: t.stack, layer: t.layer, tensors: [] };
    g.tensors.push(t);
    byLayer.set(key, g);
  }
  const title = (stack: string | null, layer: number): string => (stack ? `${stack[0].toUpperCase()}${stack.slice(1)} layer ${layer}` : `Layer ${layer}`);
  const children = [
    ...outside.map((t) => tensorNode(entry, t, id)),
    ...[...byLayer.values()]
      .sort((a, b) => (a.stack ?? '').localeCompare(b.stack ?? '') || a.layer - b.layer)
      .map(({ stack, layer, tensors: ts }) => {
        const layerId = `${id}/${stack ? `${stack} ` : ''}layer ${layer}`;
        return groupNode(entry, 'layer', layerId, title(stack, layer), ts, ts.map((t) => tensorNode(entry, t, layerId)));
      }),
  ];
  return groupNode(entry, 'category', id, CATEGORY_TITLES[category], tensors, children);
}

/** Tensors by category, in CATEGORY_ORDER, as category nodes under `parentId` (tensors directly inside). */
function categoryGroups(entry: CheckpointEntry, parentId: string, tensors: CensusTensor[]): TreeNode[] {
  return CATEGORY_ORDER.map((c) => [c, tensors.filter((t) => t.category === c)] as const)
    .filter(([, ts]) => ts.length > 0)
    .map(([c, ts]) => {
      const id = `${parentId}/${c}`;
      return groupNode(entry, 'category', id, CATEGORY_TITLES[c], ts, ts.map((t) => tensorNode(entry, t, id)));
    });
}

/** Where a block sorts: its kind's place in BLOCK_KINDS, then its number. */
function blockKey(block: string): [number, number, string] {
  const [kind, n] = block.split('.');
  const k = BLOCK_KINDS.findIndex(([b]) => b === kind);
  return [k < 0 ? BLOCK_KINDS.length : k, n === undefined ? -1 : Number(n), block];
}

function blockTitle(block: string): string {
  const [kind, n] = block.split('.');
  const title = BLOCK_KINDS.find(([b]) => b === kind)?.[1];
  return title === undefined ? block : n === undefined ? title : `${title} ${n}`;
}

/** One component of an image model: its tensors outside blocks by category, then its blocks in model order. */
function componentNode(entry: CheckpointEntry, component: string | null, tensors: CensusTensor[]): TreeNode {
  const id = `${entry.path}/${component ?? 'other'}`;
  const byBlock = new Map<string, CensusTensor[]>();
  for (const t of tensors) if (t.block !== null) byBlock.set(t.block, [...(byBlock.get(t.block) ?? []), t]);
  const blocks = [...byBlock.entries()]
    .sort(([a], [b]) => {
      const [ka, kb] = [blockKey(a), blockKey(b)];
      return ka[0] - kb[0] || ka[1] - kb[1] || ka[2].localeCompare(kb[2]);
    })
    .map(([block, ts]) => {
      const blockId = `${id}/${block}`;
      return groupNode(entry, 'block', blockId, blockTitle(block), ts, categoryGroups(entry, blockId, ts));
    });
  const title = component === null ? 'Other' : (COMPONENT_TITLES[component] ?? component);
  return groupNode(entry, 'component', id, title, tensors, [...categoryGroups(entry, id, tensors.filter((t) => t.block === null)), ...blocks]);
}

/** An image model's components, in pipeline order (text encoders, UNet or transformer, VAE, then the rest). */
function componentNodes(entry: CheckpointEntry, tensors: CensusTensor[]): TreeNode[] {
  const components = [...new Set(tensors.map((t) => t.component))].sort((a, b) => {
    const rank = (c: string | null): number =>
      c === null ? COMPONENT_ORDER.length + 1 : COMPONENT_ORDER.includes(c) ? COMPONENT_ORDER.indexOf(c) : COMPONENT_ORDER.length;
    return rank(a) - rank(b) || String(a).localeCompare(String(b));
  });
  return components.map((c) => componentNode(entry, c, tensors.filter((t) => t.component === c)));
}

function baseName(p: string): string {
  const parts = p.split(/[\\/]/).filter((s) => s !== '');
  return parts[parts.length - 1] ?? p;
}

/** The whole subtree of one checkpoint. */
export function checkpointNode(entry: CheckpointEntry): TreeNode {
  const tensors = censusTensors(entry.report);
  const { kind, summary } = readCensusReport(entry.report);
  const bytes = summary?.bytes ?? undefined;
  const elements = elementsOf(tensors);
  const targets = tensors.filter((t) => t.loraTarget).length;
  const description = [kind ?? undefined, plural(tensors.length, 'tensor'), `${formatCount(elements)} elements`, bytes !== undefined ? formatBytes(bytes) : undefined]
    .filter((s) => s !== undefined)
    .join(' · ');
  const children = tensors.some((t) => t.component !== null)
    ? componentNodes(entry, tensors)
    : CATEGORY_ORDER.map((c) => [c, tensors.filter((t) => t.category === c)] as const)
        .filter(([, ts]) => ts.length > 0)
        .map(([c, ts]) => categoryNode(entry, c, ts));
  const tooltip = [
    `**${entry.path}**`,
    '',
    `${plural(tensors.length, 'tensor')}, ${formatInt(elements)} elements${bytes !== undefined ? `, ${formatInt(bytes)} bytes` : ''}`,
    `${plural(targets, 'LoRA target')}${entry.adapter ? ` of ${entry.adapter}` : ''}`,
    entry.comparison ? `compared: ${plural(entry.comparison.size, 'tensor')} with numbers` : '',
  ]
    .filter((s) => s !== '')
    .join('\n\n');
  return {
    kind: 'checkpoint',
    id: entry.path,
    label: baseName(entry.path),
    description,
    tooltip,
    contextValue: `checkpoint${kind ? '.' + kind : ''}`,
    icon: kind === 'adapter' ? 'extensions' : 'database',
    checkpoint: entry.path,
    children,
  };
}
