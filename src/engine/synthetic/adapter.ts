/**
 * Synthetic PEFT LoRA adapters for a model layout: adapter_config.json as PEFT's save_pretrained writes
 * it, and adapter_model.safetensors under PEFT's exact key names
 * (`base_model.model.<module>.lora_A.weight` [r, in], `lora_B.weight` [out, r], `lora_embedding_A`
 * [r, num_embeddings], `lora_embedding_B` [dim, r], `lora_magnitude_vector` [out], and full copies
 * `base_model.model.<module>.weight|bias` for modules_to_save), as checked against PEFT 0.21's
 * save_pretrained. B is random, not PEFT's zeros, so every delta is non-zero. (PEFT also saves the
 * base embedding as `<module>.base_layer.weight` when an embedding is targeted; this does not.)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LayoutTensor, ModuleType, modelLayout } from '../census/architectures';
import { loraTargetPredicate } from '../census/targets';
import { patternValue } from '../checkpoint/adapterConfig';
import { Dtype } from '../../shared/safetensors/dtypes';
import { writeFileAtomic } from '../safetensors/writer';
import { valueSpec, writeSyntheticWeights } from './model';
import { ValueSpec } from './values';

export interface SyntheticAdapterOptions {
  /** target_modules: module-name suffixes, a regex over the whole module name, or 'all-linear'. */
  targets: string[] | string;
  r: number;
  /** lora_alpha (default 2r). */
  alpha?: number;
  seed?: number;
  /** Storage dtype of the adapter tensors (default F32, as PEFT saves them). */
  dtype?: Dtype;
  useRslora?: boolean;
  /** Adds a DoRA magnitude vector per module (one value per output feature). */
  useDora?: boolean;
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  /** Modules saved in full (e.g. a classifier head); their weight and bias are copied with new values. */
  modulesToSave?: string[];
  layersToTransform?: number[];
  /** Standard deviation-like spread of lora_B (default 0.01). */
  bSpread?: number;
}

export interface SyntheticLoraModule {
  module: string;
  moduleType: ModuleType;
  r: number;
  alpha: number;
  /** Features of the base layer (`in` x `out` whatever its storage orientation). */
  in: number;
  out: number;
}

export interface SyntheticAdapter {
  dir: string;
  modules: SyntheticLoraModule[];
  tensors: LayoutTensor[];
  config: Record<string, unknown>;
}

const PREFIX = 'base_model.model.';

/**
 * Writes an adapter folder for a base given by its config.json (laid out with modelLayout) or by its
 * layout. `dir` is created if needed.
 */
export function writeSyntheticAdapter(dir: string, base: Record<string, unknown> | LayoutTensor[], opts: SyntheticAdapterOptions): SyntheticAdapter {
  const layout = Array.isArray(base) ? base : modelLayout(base);
  const baseConfig = Array.isArray(base) ? undefined : base;
  const isTarget = loraTargetPredicate(
    { targetModules: opts.targets, layersToTransform: opts.layersToTransform ?? null, layersPattern: null },
    baseConfig,
    dir,
  );
  const dtype = opts.dtype ?? 'F32';
  const alpha = opts.alpha ?? 2 * opts.r;
  const modules: SyntheticLoraModule[] = [];
  const tensors: LayoutTensor[] = [];
  const spreads = new Map<string, ValueSpec>();
  const push = (name: string, shape: number[], t: LayoutTensor, v: ValueSpec): void => {
    tensors.push({ name: PREFIX + name, dtype, shape, module: t.module, moduleType: t.moduleType });
    spreads.set(PREFIX + name, v);
  };

  for (const t of layout) {
    if (t.moduleType === 'norm' || !isTarget(t.name, t.shape) || opts.modulesToSave?.some((m) => t.module === m || t.module.endsWith('.' + m))) continue;
    const r = patternValue(opts.rankPattern ?? {}, t.module) ?? opts.r;
    const a = patternValue(opts.alphaPattern ?? {}, t.module) ?? alpha;
    const [rows, cols] = t.shape;
    const m = t.module;
    if (t.moduleType === 'embedding') {
      // An Embedding's weight is [num_embeddings, dim]; PEFT's delta is (B @ A)^T.
      modules.push({ module: m, moduleType: 'embedding', r, alpha: a, in: rows, out: cols });
      push(`${m}.lora_embedding_A`, [r, rows], t, { center: 0, spread: 1 / Math.sqrt(rows) });
      push(`${m}.lora_embedding_B`, [cols, r], t, { center: 0, spread: opts.bSpread ?? 0.01 });
      if (opts.useDora) push(`${m}.lora_magnitude_vector`, [cols], t, { center: 0.6, spread: 0.1 });
      continue;
    }
    const [inF, outF] = t.moduleType === 'conv1d' ? [rows, cols] : [cols, rows];
    modules.push({ module: m, moduleType: t.moduleType, r, alpha: a, in: inF, out: outF });
    push(`${m}.lora_A.weight`, [r, inF], t, { center: 0, spread: Math.sqrt(3 / inF) });
    push(`${m}.lora_B.weight`, [outF, r], t, { center: 0, spread: opts.bSpread ?? 0.01 });
    if (opts.useDora) push(`${m}.lora_magnitude_vector`, [outF], t, { center: 0.6, spread: 0.1 });
  }
  for (const t of layout) {
    if (opts.modulesToSave?.some((m) => t.module === m || t.module.endsWith('.' + m))) push(t.name, t.shape, t, valueSpec(t));
  }
  if (modules.length === 0) throw new Error(`target_modules ${JSON.stringify(opts.targets)} match no module of the base`);

  const conv1d = modules.some((m) => m.moduleType === 'conv1d');
  const config = {
    alpha_pattern: opts.alphaPattern ?? {},
    auto_mapping: null,
    base_model_name_or_path: typeof baseConfig?._name_or_path === 'string' ? baseConfig._name_or_path : 'synthetic/base',
    bias: 'none',
    fan_in_fan_out: conv1d,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: opts.layersToTransform ?? null,
    lora_alpha: alpha,
    lora_dropout: 0.0,
    modules_to_save: opts.modulesToSave ?? null,
    peft_type: 'LORA',
    r: opts.r,
    rank_pattern: opts.rankPattern ?? {},
    revision: null,
    target_modules: opts.targets,
    task_type: 'CAUSAL_LM',
    use_dora: opts.useDora === true,
    use_rslora: opts.useRslora === true,
  };
  fs.mkdirSync(dir, { recursive: true });
  writeSyntheticWeights(dir, tensors, { seed: opts.seed }, 'adapter_model', (t) => spreads.get(t.name)!);
  writeFileAtomic(path.join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2) + '\n');
  return { dir, modules, tensors, config };
}
