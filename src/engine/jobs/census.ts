/**
 * Census: every tensor of a checkpoint classified (category, layer, projection, LoRA target), with
 * totals by category, layer and dtype. Reads headers only, so a 12 GB checkpoint takes milliseconds.
 * Tensor counts and element counts are always reported under different names.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { modelLayout } from '../census/architectures';
import { CATEGORIES, Category, classifyTensor, Stack } from '../../shared/census/classify';
import { cachedSnapshot } from '../../shared/weights/hfCache';
import { loraTargetPredicate } from '../census/targets';
import { AdapterLayout, adapterLayout, zeroFactorModules, zeroFactorWarning } from '../checkpoint/adapter';
import { ruleName, seenBefore } from '../checkpoint/deltaRule';
import { diffusionFormat } from '../checkpoint/diffusionAdapter';
import { AdapterConfig, parseAdapterConfig } from '../checkpoint/adapterConfig';
import { adapterWeights, Checkpoint, closeCheckpoint, folderHoldsWeights, openCheckpoint } from '../checkpoint/checkpoint';
import { readJson } from '../checkpoint/json';
import { LensError } from '../errors';
import { trainingMetadata, trainingMetadataLines } from '../../shared/safetensors/trainingMetadata';
import { byteSize } from '../../shared/safetensors/dtypes';
import { formatBytes, formatCount, formatInt } from '../../shared/format';
import { JobContext } from '../util/job';
import { CensusTensor, Totals, CensusAdapter, CensusReport } from '../../shared/jobs/reports/census';

/** A PEFT LoRA parameter: lora_A / lora_B (Linear, Conv1D), lora_embedding_A / _B, DoRA's magnitude vector. */
const LORA_FACTOR = /\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)(\.|$)/;
const LORA_FACTOR_SUFFIX = /\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)(\..*)?$/;

export interface CensusOptions {
  /** A model or adapter folder, a .safetensors or .bin file, or a config.json. */
  path: string;
  /** A PEFT adapter folder (or its adapter_config.json alone) whose targets are marked in the base. */
  adapter?: string;
  /** target_modules suffixes to mark without an adapter. */
  targets?: string[];
}

interface Source {
  kind: string;
  files: string[];
  config?: Record<string, unknown>;
  tensors: Array<{ name: string; dtype: string; shape: number[]; numel: number; bytes: number }>;
  checkpoint?: Checkpoint;
}

/** A model's config.json, under any name (`gemma-2b.json`), but not an adapter's config or a shard index. */
export function isModelConfigFile(p: string): boolean {
  const b = path.basename(p);
  return b.endsWith('.json') && b !== 'adapter_config.json' && !b.endsWith('.index.json');
}

/** A checkpoint's headers, or the layout of a bare config.json (a folder holding only a config). */
function openSource(p: string): Source {
  const configOnly = (cfgPath: string): Source => {
    const config = readJson(cfgPath);
    const tensors = modelLayout(config).map((t) => {
      const numel = t.shape.reduce((a, b) => a * b, 1);
      return { name: t.name, dtype: t.dtype, shape: t.shape, numel, bytes: byteSize(t.dtype, numel) ?? 0 };
    });
    return { kind: 'config', files: [], config, tensors };
  };
  const st = fs.statSync(p, { throwIfNoEntry: false });
  if (st?.isFile() && isModelConfigFile(p)) return configOnly(p);
  if (st?.isDirectory() && fs.existsSync(path.join(p, 'config.json')) && !fs.existsSync(path.join(p, 'adapter_config.json')) && !folderHoldsWeights(p)) {
    return configOnly(path.join(p, 'config.json'));
  }
  const c = openCheckpoint(p);
  return {
    kind: c.kind,
    files: c.files,
    config: c.config,
    tensors: c.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, numel: t.numel, bytes: t.byteLength })),
    checkpoint: c,
  };
}

/** An adapter folder with weights, or adapter_config.json alone (then targets come from the config). */
function openAdapter(p: string): { checkpoint?: Checkpoint; config?: AdapterConfig } {
  const cfgFile = path.basename(p) === 'adapter_config.json' ? p : path.join(p, 'adapter_config.json');
  if (!fs.existsSync(cfgFile)) {
    // A kohya, LyCORIS or diffusers LoRA file (or the folder holding it) states its format in its keys.
    const checkpoint = openCheckpoint(p);
    if (checkpoint.kind !== 'adapter' && diffusionFormat(checkpoint) === undefined) {
      closeCheckpoint(checkpoint);
      throw new LensError(p, 'not an adapter: no adapter_config.json, and not a kohya, LyCORIS or diffusers LoRA file');
    }
    return { checkpoint, config: checkpoint.adapter };
  }
  if (adapterWeights(path.dirname(cfgFile)) === undefined) return { config: parseAdapterConfig(cfgFile) };
  const checkpoint = openCheckpoint(path.dirname(cfgFile));
  return { checkpoint, config: checkpoint.adapter! };
}

/** What a kohya / LyCORIS / diffusers file is, from its modules' rules and its training metadata (it has no config). */
function diffusionAdapterInfo(p: string, c: Checkpoint, layout: AdapterLayout): CensusAdapter {
  const meta = trainingMetadata(c.metadata);
  const methods = [...new Set(layout.modules.map(ruleName))];
  const seen = new Set<string>();
  const factors = layout.modules.flatMap((m) => m.tensors).filter((t) => !t.name.endsWith('.alpha') && !seenBefore(t, seen));
  return {
    path: p,
    method: `${diffusionFormat(c)} ${methods.join(' + ')}`,
    r: meta?.rank ?? null,
    alpha: meta?.alpha ?? null,
    scale: null,
    targets: null,
    useRslora: false,
    useDora: false,
    fanInFanOut: false,
    rankPattern: {},
    alphaPattern: {},
    modulesToSave: [],
    layersToTransform: null,
    baseModel: meta?.baseModel ?? null,
    cachedBase: null,
    loraModules: layout.modules.length,
    trainableParams: c.tensors.reduce((a, t) => a + t.numel, 0),
    loraParams: factors.reduce((a, t) => a + t.numel, 0),
    savedTensors: 0,
    zeroModules: zeroFactorModules(c, layout.modules),
  };
}

function adapterInfo(p: string, cfg: AdapterConfig, c: Checkpoint | undefined, loraModules: number, zeroModules: string[] | null): CensusAdapter {
  const lora = c?.tensors.filter((t) => /\.lora_(embedding_)?[AB](\.|$)/.test(t.name));
  const saved = c?.tensors.filter((t) => !/\.lora_(embedding_)?[AB](\.|$)|\.lora_magnitude_vector/.test(t.name));
  return {
    path: p,
    method: cfg.method,
    r: cfg.r,
    alpha: cfg.loraAlpha,
    scale: cfg.scale,
    targets: cfg.targetModules,
    useRslora: cfg.useRslora,
    useDora: cfg.useDora,
    fanInFanOut: cfg.fanInFanOut,
    rankPattern: cfg.rankPattern,
    alphaPattern: cfg.alphaPattern,
    modulesToSave: cfg.modulesToSave,
    layersToTransform: cfg.layersToTransform,
    baseModel: cfg.baseModel,
    cachedBase: cfg.baseModel !== null ? (cachedSnapshot(cfg.baseModel) ?? null) : null,
    loraModules,
    trainableParams: c ? c.tensors.reduce((a, t) => a + t.numel, 0) : null,
    loraParams: lora ? lora.reduce((a, t) => a + t.numel, 0) : null,
    savedTensors: saved ? saved.length : null,
    zeroModules,
  };
}

/** Layers per stack, where the model has an encoder and a decoder stack. */
function stackLayers(perLayer: CensusReport['perLayer']): { stackLayers?: Partial<Record<Stack, number>> } {
  const counts: Partial<Record<Stack, number>> = {};
  for (const l of perLayer) if (l.stack) counts[l.stack] = (counts[l.stack] ?? 0) + 1;
  return Object.keys(counts).length > 0 ? { stackLayers: counts } : {};
}

/** The census of an adapter without its base says where its targets are marked. */
function adaptsBaseWarning(what: string, modules: number): string {
  return `${what}: its ${modules} module${modules === 1 ? '' : 's'} adapt tensors of a base; census BASE --adapter DIR marks those targets`;
}

export function censusJob(opts: CensusOptions, ctx: JobContext): CensusReport {
  const p = opts.path;
  const src = openSource(p);
  const opened: Checkpoint[] = src.checkpoint ? [src.checkpoint] : [];
  try {
    const warnings: string[] = [];
    const targets = new Set<string>();
    const replaced = new Set<string>();
    let adapter: CensusAdapter | null = null;

    // An adapter alone (a PEFT or mlx-lm folder, a kohya / LyCORIS / diffusers file, a bare PEFT file):
    // its factors are its own tensors, not LoRA targets; the tensors they adapt are in a base not given.
    const bareLora = src.checkpoint && src.kind === 'file' && opts.adapter === undefined && diffusionFormat(src.checkpoint) !== undefined;
    const factors = new Set<string>();
    if (src.kind === 'adapter' || bareLora) {
      const c = src.checkpoint!;
      const layout = adapterLayout(c);
      for (const m of layout.modules) for (const t of m.tensors) factors.add(t.name);
      for (const r of layout.replacements) replaced.add(r.source.name);
      for (const w of layout.warnings) warnings.push(w);
      warnings.push(adaptsBaseWarning(src.kind === 'adapter' ? 'an adapter' : 'a bare LoRA file', layout.modules.length));
      adapter = c.adapter ? adapterInfo(p, c.adapter, c, layout.modules.length, zeroFactorModules(c, layout.modules)) : diffusionAdapterInfo(p, c, layout);
    } else if (opts.adapter !== undefined) {
      const a = openAdapter(opts.adapter);
      if (a.checkpoint) opened.push(a.checkpoint);
      if (a.checkpoint && src.checkpoint) {
        const layout = adapterLayout(a.checkpoint, src.checkpoint);
        for (const m of layout.modules) targets.add(m.base!.name);
        for (const r of layout.replacements) if (r.base) replaced.add(r.base.name);
        for (const w of layout.warnings) warnings.push(w);
        adapter = a.config
          ? adapterInfo(opts.adapter, a.config, a.checkpoint, layout.modules.length, zeroFactorModules(a.checkpoint, layout.modules))
          : diffusionAdapterInfo(opts.adapter, a.checkpoint, layout);
      } else if (!a.config) {
        throw new LensError(p, 'a kohya, LyCORIS or diffusers LoRA file is matched to a base by its weights; give a base with weights, not a config');
      } else {
        // No adapter weights, or a base without weights: PEFT's matching rules on the names.
        const hit = loraTargetPredicate(a.config, src.config, a.config.file);
        for (const t of src.tensors) if (hit(t.name, t.shape)) targets.add(t.name);
        const modules = a.checkpoint ? adapterLayout(a.checkpoint).modules : undefined;
        adapter = adapterInfo(
          opts.adapter,
          a.config,
          a.checkpoint,
          modules ? modules.length : targets.size,
          modules && a.checkpoint ? zeroFactorModules(a.checkpoint, modules) : null,
        );
      }
      if (targets.size === 0) warnings.push(`the adapter's target_modules ${JSON.stringify(a.config?.targetModules ?? null)} match no tensor of ${p}`);
    } else if (opts.targets !== undefined) {
      const hit = loraTargetPredicate({ targetModules: opts.targets, layersToTransform: null, layersPattern: null }, src.config, p);
      for (const t of src.tensors) if (hit(t.name, t.shape)) targets.add(t.name);
    } else {
      // A bare adapter_model.safetensors (no adapter_config.json beside it, so no layout): PEFT's factor names.
      const named = src.tensors.filter((t) => LORA_FACTOR.test(t.name));
      for (const t of named) factors.add(t.name);
      const modules = new Set(named.map((t) => t.name.replace(LORA_FACTOR_SUFFIX, '')));
      if (modules.size > 0) warnings.push(adaptsBaseWarning('a bare LoRA file', modules.size));
    }

    const zeroWarning = adapter?.zeroModules ? zeroFactorWarning(adapter.zeroModules) : undefined;
    if (zeroWarning) warnings.push(zeroWarning);

    // The six language-model categories always; an image model's own (resnet, time_embedding, vae) when it has them.
    const zero = (): Partial<Record<Category, number>> => Object.fromEntries(CATEGORIES.slice(0, 6).map((c) => [c, 0])) as Partial<Record<Category, number>>;
    const categories = zero();
    const categoryParams = zero();
    const dtypes: Record<string, number> = {};
    const dtypeParams: Record<string, number> = {};
    // Layers per stack: an encoder-decoder's encoder layer 3 and decoder layer 3 are two layers.
    const layers = new Map<string, CensusReport['perLayer'][number]>();
    const outsideLayers: Totals = { tensors: 0, params: 0 };
    const blocks = new Map<string, CensusReport['perBlock'][number]>();
    const tensors: CensusTensor[] = [];
    let params = 0;
    let bytes = 0;
    let loraTargetParams = 0;
    // Stacks are named where there are two (an encoder-decoder); one stack (BERT's encoder) is just the layers.
    const stacks = new Set(src.tensors.map((t) => classifyTensor(t.name).stack).filter((x) => x !== undefined));
    for (const t of src.tensors) {
      const cls = classifyTensor(t.name);
      if (stacks.size < 2) delete cls.stack;
      const loraTarget = targets.has(t.name);
      tensors.push({
        name: t.name,
        dtype: t.dtype,
        shape: t.shape,
        numel: t.numel,
        bytes: t.bytes,
        ...cls,
        loraTarget,
        replaced: replaced.has(t.name),
        ...(factors.has(t.name) ? { loraFactor: true } : {}),
      });
      categories[cls.category] = (categories[cls.category] ?? 0) + 1;
      categoryParams[cls.category] = (categoryParams[cls.category] ?? 0) + t.numel;
      dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
      dtypeParams[t.dtype] = (dtypeParams[t.dtype] ?? 0) + t.numel;
      params += t.numel;
      bytes += t.bytes;
      if (loraTarget) loraTargetParams += t.numel;
      if (cls.component !== undefined) {
        const key = `${cls.component}\u0000${cls.block ?? ''}`;
        const b = blocks.get(key) ?? { component: cls.component, block: cls.block ?? null, tensors: 0, params: 0, loraTargetTensors: 0 };
        b.tensors++;
        b.params += t.numel;
        if (loraTarget) b.loraTargetTensors++;
        blocks.set(key, b);
      }
      if (cls.layer === null) {
        outsideLayers.tensors++;
        outsideLayers.params += t.numel;
      } else {
        const key = `${cls.stack ?? ''}\u0000${cls.layer}`;
        const l = layers.get(key) ?? { layer: cls.layer, ...(cls.stack ? { stack: cls.stack } : {}), tensors: 0, params: 0, loraTargetTensors: 0 };
        l.tensors++;
        l.params += t.numel;
        if (loraTarget) l.loraTargetTensors++;
        layers.set(key, l);
      }
    }
    ctx.progress({ phase: 'census', done: tensors.length, total: tensors.length });
    for (const w of warnings) ctx.warn(w);
    const loraTargetTensors = tensors.filter((t) => t.loraTarget).length;
    const config = src.config;
    const arch = Array.isArray(config?.architectures) && typeof config.architectures[0] === 'string' ? config.architectures[0] : null;
    return {
      path: p,
      kind: src.kind,
      modelType: typeof config?.model_type === 'string' ? config.model_type : null,
      architecture: arch,
      files: src.files,
      summary: {
        tensors: tensors.length,
        params,
        bytes,
        layers: layers.size,
        ...stackLayers([...layers.values()]),
        loraTargetTensors,
        nonTargetTensors: tensors.length - loraTargetTensors,
        loraTargetParams,
        categories,
        categoryParams,
        dtypes,
        dtypeParams,
      },
      perLayer: [...layers.values()].sort((a, b) => (a.stack ?? '').localeCompare(b.stack ?? '') || a.layer - b.layer),
      perBlock: [...blocks.values()],
      outsideLayers,
      adapter,
      warnings,
      trainingMetadata: trainingMetadata(src.checkpoint?.metadata),
      tensors,
    };
  } finally {
    opened.forEach(closeCheckpoint);
  }
}

export function censusText(r: CensusReport): string {
  const s = r.summary;
  const pct = (x: number): string => (s.params > 0 ? `${((100 * x) / s.params).toFixed(2)}%` : '-');
  const what = [r.kind, r.modelType, r.architecture].filter((x) => x !== null).join(', ');
  const lines = [
    `census of ${r.path} (${what}; ${r.kind === 'config' ? 'layout from config.json, no weights' : `${r.files.length} file${r.files.length === 1 ? '' : 's'}`})`,
    `  ${formatInt(s.tensors)} tensors, ${formatInt(s.params)} elements (${formatCount(s.params)}), ${formatBytes(s.bytes)} of data, ${s.layers} layers${s.stackLayers ? ` (${Object.entries(s.stackLayers).map(([k, v]) => `${v} ${k}`).join(' + ')})` : ''}`,
    `  dtypes: ${Object.entries(s.dtypes).map(([d, n]) => `${d} ${formatInt(n)} tensors / ${formatInt(s.dtypeParams[d])} elements`).join('; ')}`,
    '',
    `  ${'category'.padEnd(14)}${'tensors'.padStart(9)}${'elements'.padStart(17)}${'share'.padStart(9)}`,
    ...CATEGORIES.filter((c) => (s.categories[c] ?? 0) > 0).map(
      (c) => `  ${c.padEnd(14)}${formatInt(s.categories[c] ?? 0).padStart(9)}${formatInt(s.categoryParams[c] ?? 0).padStart(17)}${pct(s.categoryParams[c] ?? 0).padStart(9)}`,
    ),
  ];
  if (r.perBlock.length > 0) {
    const byComponent = new Map<string, typeof r.perBlock>();
    for (const b of r.perBlock) byComponent.set(b.component, [...(byComponent.get(b.component) ?? []), b]);
    lines.push('');
    for (const [component, bs] of byComponent) {
      const total = bs.reduce((a, b) => a + b.params, 0);
      const inBlocks = bs.filter((b) => b.block !== null);
      lines.push(`  ${component}: ${formatInt(bs.reduce((a, b) => a + b.tensors, 0))} tensors, ${formatInt(total)} elements; ${inBlocks.length} blocks (${inBlocks.map((b) => b.block).join(', ')})`);
    }
  }
  if (r.perLayer.length > 0) {
    const first = r.perLayer[0];
    const uniform = r.perLayer.every((l) => l.tensors === first.tensors && l.params === first.params);
    lines.push('');
    if (uniform) lines.push(`  per layer: ${formatInt(first.tensors)} tensors, ${formatInt(first.params)} elements (all ${r.perLayer.length} layers alike)`);
    else lines.push('  per layer (tensors / elements):', ...r.perLayer.map((l) => `    ${l.stack ? `${l.stack} ` : ''}layer ${String(l.layer).padStart(3)}: ${formatInt(l.tensors)} / ${formatInt(l.params)}`));
    lines.push(`  outside the layers: ${formatInt(r.outsideLayers.tensors)} tensors, ${formatInt(r.outsideLayers.params)} elements`);
  }
  if (r.trainingMetadata) lines.push('', '  training metadata (kohya-ss):', ...trainingMetadataLines(r.trainingMetadata).map((l) => `    ${l}`));
  const a = r.adapter;
  if (a) {
    const targets = Array.isArray(a.targets) ? a.targets.join(',') : String(a.targets);
    lines.push('', `  adapter ${a.path}: r=${a.r} alpha=${a.alpha} targets=${targets}${a.useRslora ? ' rsLoRA' : ''}${a.useDora ? ' DoRA' : ''}`);
    if (a.cachedBase) lines.push(`    base ${a.baseModel}: in the Hugging Face cache at ${a.cachedBase}`);
    if (a.trainableParams !== null) {
      lines.push(`    trainable parameters: ${formatInt(a.trainableParams)} (${formatInt(a.loraParams!)} in LoRA factors of ${a.loraModules} modules, ${a.savedTensors} saved tensors)`);
    }
  }
  if (a || s.loraTargetTensors > 0) {
    lines.push(`  LoRA targets: ${formatInt(s.loraTargetTensors)} tensors (${formatInt(s.loraTargetParams)} elements); not targeted: ${formatInt(s.nonTargetTensors)} tensors`);
  }
  return lines.join('\n');
}
