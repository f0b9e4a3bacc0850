/**
 * Exact LoRA trainable parameters from the base's real shapes: `r * (in + out)` per targeted module
 * (grouped-query attention makes k/v narrower than q, so square-projection estimates are wrong), plus
 * DoRA magnitudes (`out` per module) and modules_to_save copies. Shapes come from a model folder's
 * headers or, for a bare config.json, from modelLayout.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { defaultTargetModules, modelLayout } from '../census/architectures';
import { moduleOf } from '../../shared/census/classify';
import { isInputEmbedding, loraTargetPredicate } from '../census/targets';
import { isConv1D } from '../checkpoint/adapter';
import { AdapterConfig, effectiveModulesToSave, isSavedModule, MAX_RANK, parseAdapterConfig, patternValue } from '../checkpoint/adapterConfig';
import { adapterWeights, closeCheckpoint, folderHoldsWeights, openCheckpoint } from '../checkpoint/checkpoint';
import { readJson } from '../checkpoint/json';
import { readWeightsIndex } from '../../shared/weights/read';
import { formatCount, formatInt } from '../../shared/format';
import { LensError } from '../errors';
import { JobContext } from '../util/job';
import { isModelConfigFile } from './census';
import { estimateDiffusion, isDiffusionAdapter } from './estimateDiffusion';
import { EstimateModule, EstimateReport } from '../../shared/jobs/reports/estimate';

export interface EstimateOptions {
  /** A model folder or its config.json. */
  path: string;
  /** A PEFT adapter folder or its adapter_config.json: r, alpha, targets and patterns come from it. */
  adapter?: string;
  r?: number;
  alpha?: number;
  targets?: string[];
}

interface BaseTensor {
  name: string;
  shape: number[];
  numel: number;
  /** Stored [in, out] (GPT-2 Conv1D). */
  conv1d: boolean;
  embedding: boolean;
}

/** The base's tensors with shapes: headers of a model folder, or the layout of a config.json. */
function baseTensors(p: string): { tensors: BaseTensor[]; from: 'weights' | 'config'; config?: Record<string, unknown> } {
  const st = fs.statSync(p, { throwIfNoEntry: false });
  if (!st) throw new LensError(p, 'no such file or folder');
  const cfgPath = st.isFile() ? (isModelConfigFile(p) ? p : undefined) : path.join(p, 'config.json');
  const hasWeights = st.isDirectory() ? folderHoldsWeights(p) : cfgPath === undefined;
  if (!hasWeights) {
    if (cfgPath === undefined || !fs.existsSync(cfgPath)) throw new LensError(p, 'neither model weights nor a config.json');
    const config = readJson(cfgPath);
    const tensors = modelLayout(config).map((t) => ({
      name: t.name,
      shape: t.shape,
      numel: t.shape.reduce((a, b) => a * b, 1),
      conv1d: t.moduleType === 'conv1d',
      embedding: isInputEmbedding(t.name),
    }));
    return { tensors, from: 'config', config };
  }
  const c = openCheckpoint(p);
  try {
    if (c.kind === 'adapter') throw new LensError(p, 'is an adapter; give the base model (folder or config.json) and the adapter with --adapter');
    const tensors = c.tensors.map((t) => ({
      name: t.name,
      shape: t.shape,
      numel: t.numel,
      conv1d: isConv1D(c.config, t.name.replace(/\.weight$/, '')) === true,
      embedding: isInputEmbedding(t.name),
    }));
    return { tensors, from: 'weights', config: c.config };
  } finally {
    closeCheckpoint(c);
  }
}

type TargetConfig = { r: number; loraAlpha: number } & Pick<AdapterConfig, 'targetModules' | 'rankPattern' | 'alphaPattern' | 'layersToTransform' | 'layersPattern' | 'useDora' | 'modulesToSave'>;

export function estimateJob(opts: EstimateOptions, ctx: JobContext): EstimateReport {
  const p = opts.path;
  // A kohya / LyCORIS / diffusers file has no adapter_config.json: its modules and ranks are in its tensors.
  if (opts.adapter !== undefined && isDiffusionAdapter(opts.adapter)) return estimateDiffusion(p, opts.adapter, ctx);
  let cfg: TargetConfig;
  let adapterFileParams: number | null = null;
  if (opts.adapter !== undefined) {
    const file = path.basename(opts.adapter) === 'adapter_config.json' ? opts.adapter : path.join(opts.adapter, 'adapter_config.json');
    if (!fs.existsSync(file)) throw new LensError(opts.adapter, 'not a PEFT adapter: no adapter_config.json');
    const parsed = parseAdapterConfig(file);
    if (parsed.method !== 'LORA') {
      throw new LensError(file, `estimate counts PEFT LoRA parameters (r · (in + out)); this is a ${parsed.method} adapter: census counts what its weights hold`);
    }
    // A classification adapter (task_type SEQ_CLS, …) also trains and saves its head, as PEFT adds it to modules_to_save.
    cfg = { ...parsed, r: parsed.r!, loraAlpha: parsed.loraAlpha!, modulesToSave: effectiveModulesToSave(parsed) };
    const weights = adapterWeights(path.dirname(file));
    if (weights !== undefined) adapterFileParams = readWeightsIndex(weights).tensors.reduce((a, t) => a + t.numel, 0);
  } else {
    if (opts.r === undefined || opts.targets === undefined || opts.targets.length === 0) {
      throw new LensError('lora-lens estimate', 'give --adapter DIR, or --r N and --target a,b,...');
    }
    if (!Number.isSafeInteger(opts.r) || opts.r <= 0 || opts.r > MAX_RANK) throw new LensError('lora-lens estimate', `--r must be a positive integer up to ${MAX_RANK} (got ${opts.r})`);
    const targets = opts.targets.length === 1 && opts.targets[0] === 'all-linear' ? 'all-linear' : opts.targets;
    cfg = {
      r: opts.r,
      loraAlpha: opts.alpha ?? opts.r,
      targetModules: targets,
      rankPattern: {},
      alphaPattern: {},
      layersToTransform: null,
      layersPattern: null,
      useDora: false,
      modulesToSave: [],
    };
  }

  const base = baseTensors(p);
  const isTarget = loraTargetPredicate(cfg, base.config, opts.adapter ?? p);
  const modules: EstimateModule[] = [];
  const modulesToSave: Array<{ name: string; params: number }> = [];
  for (const t of base.tensors) {
    const module = moduleOf(t.name);
    if (isSavedModule(cfg.modulesToSave, module)) {
      const prev = modulesToSave.find((x) => x.name === module);
      if (prev) prev.params += t.numel;
      else modulesToSave.push({ name: module, params: t.numel });
      continue;
    }
    if (!isTarget(t.name, t.shape)) continue;
    const r = patternValue(cfg.rankPattern, module) ?? cfg.r;
    const alpha = patternValue(cfg.alphaPattern, module) ?? cfg.loraAlpha;
    const [rows, cols] = t.shape;
    // Linear stores [out, in]; Conv1D [in, out]; an Embedding [num_embeddings, dim] gets A [r, num] and B [dim, r].
    const [inF, outF] = t.conv1d || t.embedding ? [rows, cols] : [cols, rows];
    const dora = cfg.useDora ? outF : 0;
    modules.push({ name: module, in: inF, out: outF, r, alpha, params: r * (inF + outF) + dora });
  }
  const warnings: string[] = [];
  if (modules.length === 0) warnings.push(`target_modules ${JSON.stringify(cfg.targetModules)} match no module of ${p}`);
  const loraParams = modules.reduce((a, m) => a + m.r * (m.in + m.out), 0);
  const doraParams = modules.reduce((a, m) => a + m.params - m.r * (m.in + m.out), 0);
  const savedParams = modulesToSave.reduce((a, m) => a + m.params, 0);
  const trainableParams = loraParams + doraParams + savedParams;
  if (!Number.isSafeInteger(trainableParams)) throw new LensError(p, `the count of trainable parameters exceeds 2^53 and cannot be exact (r ${cfg.r}); not a real configuration`);
  const baseParams = base.tensors.reduce((a, t) => a + t.numel, 0);
  if (adapterFileParams !== null && adapterFileParams !== trainableParams) {
    warnings.push(`the adapter's weights hold ${formatInt(adapterFileParams)} elements, not the ${formatInt(trainableParams)} this base's shapes give: it was trained on another base, or saves extra tensors`);
  }
  for (const w of warnings) ctx.warn(w);
  return {
    model: p,
    shapesFrom: base.from,
    modelType: typeof base.config?.model_type === 'string' ? base.config.model_type : null,
    r: cfg.r,
    alpha: cfg.loraAlpha,
    targets: cfg.targetModules ?? defaultTargetModules(base.config) ?? [],
    useDora: cfg.useDora,
    trainableParams,
    loraParams,
    doraParams,
    savedParams,
    baseParams,
    percent: baseParams > 0 ? (100 * trainableParams) / baseParams : 0,
    modules,
    modulesToSave,
    adapterFileParams,
    warnings,
  };
}

export function estimateText(r: EstimateReport): string {
  const targets = Array.isArray(r.targets) ? r.targets.join(',') : r.targets;
  // Group modules of the same projection and shape: one line per kind, not one per layer.
  const groups = new Map<string, { count: number; params: number; in: number; out: number; r: number }>();
  for (const m of r.modules) {
    const key = `${m.name.split('.').pop()} [${m.in} -> ${m.out}] r=${m.r}`;
    const g = groups.get(key) ?? { count: 0, params: 0, in: m.in, out: m.out, r: m.r };
    g.count++;
    g.params += m.params;
    groups.set(key, g);
  }
  const lines = [
    `estimate for ${r.model} (${r.modelType ?? 'unknown model type'}; shapes from ${r.shapesFrom === 'weights' ? 'the weights' : 'config.json'})`,
    `  r=${r.r} alpha=${r.alpha} targets=${targets}${r.useDora ? ' DoRA' : ''}`,
    `  trainable parameters: ${formatInt(r.trainableParams)} (${formatCount(r.trainableParams)}) = ${r.percent.toFixed(4)}% of the base's ${formatInt(r.baseParams)} (${formatCount(r.baseParams)})`,
    `  ${r.modules.length} LoRA modules, ${formatInt(r.loraParams)} in LoRA factors` +
      (r.doraParams > 0 ? `, ${formatInt(r.doraParams)} in DoRA magnitudes` : '') +
      (r.savedParams > 0 ? `, ${formatInt(r.savedParams)} in ${r.modulesToSave.length} saved modules` : ''),
    ...[...groups].map(([k, g]) => `    ${g.count} x ${k}: ${formatInt(g.params / g.count)} each, ${formatInt(g.params)} in all`),
  ];
  if (r.adapterFileParams !== null) lines.push(`  the adapter's weights hold ${formatInt(r.adapterFileParams)} elements${r.adapterFileParams === r.trainableParams ? ' (matches)' : ''}`);
  return lines.join('\n');
}
