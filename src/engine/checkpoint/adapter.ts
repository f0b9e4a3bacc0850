/**
 * An adapter's tensors read into the engine's description (deltaRule.ts): one AdaptedModule per adapted
 * base tensor, and the tensors it replaces outright. The formats' key layouts live in adapterKeys.ts.
 */
import { LensError } from '../errors';
import { TensorInfo } from '../../shared/safetensors/header';
import { AdapterConfig, isTargetModule } from './adapterConfig';
import { groupAdapter } from './adapterKeys';
import { Checkpoint } from './checkpoint';
import { diffusionFormat, diffusionLayout } from './diffusionAdapter';
import { AdaptedModule, assertModuleHoldsElements, outputFactor } from './deltaRule';
import { bytesToF32 } from '../safetensors/reader';

/** An adapter tensor that replaces a base tensor outright (modules_to_save, saved biases). */
export interface Replacement {
  source: TensorInfo;
  /** Name in the base, or the adapter-relative name when no base was given or the base lacks it. */
  target: string;
  /** The base tensor it replaces; absent when the tensor is new to the base. */
  base?: TensorInfo;
}

export interface AdapterLayout {
  modules: AdaptedModule[];
  replacements: Replacement[];
  warnings: string[];
}

/** Model families whose Linear layers are GPT-2 `Conv1D` (weight stored [in, out]). */
const CONV1D_MODEL_TYPES = new Set(['gpt2', 'imagegpt', 'decision_transformer']);
const CONV1D_MODULES = /(^|\.)(c_attn|c_proj|c_fc|q_attn)$/;

/** Whether a square module's weight is stored [in, out], from the architecture (shapes cannot tell). */
export function isConv1D(config: Record<string, unknown> | undefined, module: string): boolean | undefined {
  const mt = typeof config?.model_type === 'string' ? config.model_type : undefined;
  if (mt === undefined) return undefined;
  return CONV1D_MODEL_TYPES.has(mt) && CONV1D_MODULES.test(module);
}

/**
 * Finds a base tensor for an adapter-side name, tolerating the head wrapper of task models
 * (`transformer.h.0…` in a GPT2ForSequenceClassification adapter vs `h.0…` in a bare GPT2Model base).
 */
export class BaseNames {
  private readonly stripped = new Map<string, string | null>();

  constructor(private readonly base: Checkpoint) {
    for (const t of base.tensors) {
      const dot = t.name.indexOf('.');
      if (dot < 0) continue;
      const s = t.name.slice(dot + 1);
      this.stripped.set(s, this.stripped.has(s) ? null : t.name);
    }
  }

  resolve(name: string): TensorInfo | undefined {
    const direct = this.base.byName.get(name);
    if (direct) return direct;
    const parts = name.split('.');
    for (let i = 1; i < parts.length - 1; i++) {
      const t = this.base.byName.get(parts.slice(i).join('.'));
      if (t) return t;
    }
    const s = this.stripped.get(name);
    return s ? this.base.byName.get(s) : undefined;
  }
}

/** Reads an adapter into modules and replacements, and fits them to `base` when given. */
export function adapterLayout(adapter: Checkpoint, base?: Checkpoint): AdapterLayout {
  if (!adapter.adapter) {
    // No adapter_config.json: a kohya, LyCORIS or diffusers LoRA file names its format by its keys alone.
    const format = diffusionFormat(adapter);
    if (!format) throw new LensError(adapter.path, 'not an adapter: no adapter_config.json, and not a kohya, LyCORIS or diffusers LoRA file');
    return diffusionLayout(adapter, format, base);
  }
  const cfg = adapter.adapter;
  const { modules, replacements, warnings } = groupAdapter(adapter, cfg);
  for (const m of modules) assertModuleHoldsElements(adapter.files[0], m.module, m.tensors);
  if (!base) return { modules, replacements, warnings };
  const names = new BaseNames(base);
  let flagDisagreements = 0;
  const fitted: AdaptedModule[] = [];
  for (const m of modules) {
    const t = names.resolve(`${m.module}.weight`) ?? (m.embedding ? names.resolve(m.module) : undefined);
    if (!t) throw new LensError(base.path, `adapter targets module '${m.module}' but the base has no tensor '${m.module}.weight'`, `${m.module}.weight`);
    const conv1d = isConv1D(base.config, t.name.replace(/\.weight$/, ''));
    const f = fitToBase(adapter, m, t, conv1d ?? cfg.fanInFanOut);
    if (!f.embedding && f.transpose !== cfg.fanInFanOut && cfg.method !== 'MLX') flagDisagreements++;
    fitted.push(f);
    const bias = iaBias(f, names) ?? loraBias(base, f, names);
    if (bias) fitted.push(bias);
  }
  if (flagDisagreements > 0) {
    warnings.push(
      `fan_in_fan_out=${cfg.fanInFanOut} in adapter_config.json contradicts the base for ${flagDisagreements} module(s); ` +
        `the orientation was taken from the base's shapes and architecture (PEFT does the same for GPT-2 Conv1D)`,
    );
  }
  for (const rep of replacements) {
    const t = names.resolve(rep.target);
    if (!t) {
      // A task head trained from scratch (GPT2ForSequenceClassification's `score`): the merged model gains it.
      warnings.push(`${rep.target}: saved by the adapter (modules_to_save or a new head) but absent from the base; a merge adds it`);
      continue;
    }
    if (t.shape.join(',') !== rep.source.shape.join(',')) {
      // A resized head (e.g. a new classifier) cannot be merged in place.
      throw new LensError(adapter.path, `saved tensor of shape ${JSON.stringify(rep.source.shape)} does not fit base tensor of shape ${JSON.stringify(t.shape)}`, t.name);
    }
    rep.base = t;
    rep.target = t.name;
  }
  assertAdaptsSomething(adapter, base, cfg, fitted, replacements, warnings);
  return { modules: fitted, replacements, warnings };
}

/**
 * Fits a module to its base tensor `t`: the orientation (straight [out, in] or transposed), and the
 * dimensions a rule leaves to the base (VeRA's input slice, IA³'s other axis). `conv1d`: whether a
 * square weight is stored [in, out] (shapes cannot tell).
 */
function fitToBase(adapter: Checkpoint, m: AdaptedModule, t: TensorInfo, conv1d: boolean): AdaptedModule {
  const r = m.rule;
  // A convolution's weight [out, in, kh, kw] takes its delta as [out, in·kh·kw] (PEFT's Conv2d LoRA, LoHa, LoKr).
  const additive = r.kind === 'hadamard' || r.kind === 'kronecker' || (r.kind === 'low-rank' && !r.magnitude);
  if (t.shape.length > 2 && additive && t.shape[0] === m.out && t.numel === m.out * m.in) return { ...m, base: t, transpose: false };
  if (t.shape.length !== 2) throw new LensError(adapter.path, `the adapter's delta is 2-D but the base tensor has shape ${JSON.stringify(t.shape)}`, t.name);
  const [rows, cols] = t.shape;
  if (r.kind === 'scale') {
    // IA³ states one axis: the other comes from the base, whose orientation its architecture gives.
    const transpose = conv1d;
    const out = transpose ? cols : rows;
    const inn = transpose ? rows : cols;
    const want = r.axis === 'out' ? out : inn;
    if (r.vector.numel !== want) {
      throw new LensError(adapter.path, `IA³ vector of ${r.vector.numel} values does not fit the ${r.axis === 'out' ? 'output' : 'input'} features (${want}) of base tensor of shape ${JSON.stringify(t.shape)}`, t.name);
    }
    return { ...m, out, in: inn, base: t, transpose };
  }
  if (r.kind === 'low-rank' && r.factors.form === 'vera') {
    const out = m.out;
    const transpose = rows === out && cols === out ? conv1d : cols === out && rows !== out;
    const inn = transpose ? rows : cols;
    if ((transpose ? cols : rows) !== out) throw new LensError(adapter.path, `VeRA lambda_b has ${out} values; base tensor of shape ${JSON.stringify(t.shape)} has no such output size`, t.name);
    if (inn > r.factors.A.shape[1]) throw new LensError(adapter.path, `shared vera_A has ${r.factors.A.shape[1]} columns, fewer than the ${inn} input features of the base tensor`, t.name);
    return { ...m, in: inn, base: t, transpose };
  }
  const straight = rows === m.out && cols === m.in;
  const transposed = rows === m.in && cols === m.out;
  if (!straight && !transposed) {
    throw new LensError(adapter.path, `delta of shape [${m.out}, ${m.in}] does not fit base tensor of shape ${JSON.stringify(t.shape)}`, t.name);
  }
  const transpose = straight && transposed ? m.embedding || conv1d : transposed;
  if (r.kind === 'low-rank' && r.magnitude && r.magnitude.numel !== (transpose ? m.in : m.out) && r.magnitude.numel !== m.out) {
    throw new LensError(adapter.path, `DoRA magnitude has ${r.magnitude.numel} values, the weight has ${m.out} output rows`, r.magnitude.name);
  }
  return { ...m, base: t, transpose };
}

/** IA³ on a module that is not feed-forward also scales its bias (PEFT's IA3 Linear.merge). */
function iaBias(m: AdaptedModule, names: BaseNames): AdaptedModule | undefined {
  if (m.rule.kind !== 'scale' || m.rule.axis !== 'out') return undefined;
  const bias = names.resolve(`${m.module}.bias`);
  if (!bias || bias.numel !== m.rule.vector.numel) return undefined;
  return { ...m, module: `${m.module}.bias`, rule: { kind: 'scale', vector: m.rule.vector, axis: 'all' }, out: bias.numel, in: 1, base: bias, transpose: false };
}

/**
 * PEFT's lora_bias: the base layer's bias gains `lora_B.bias * scaling` (LoRA Linear.merge); a layer
 * without a bias cannot take it, which PEFT refuses too.
 */
function loraBias(base: Checkpoint, m: AdaptedModule, names: BaseNames): AdaptedModule | undefined {
  if (m.rule.kind !== 'low-rank' || !m.rule.bias) return undefined;
  const lb = m.rule.bias;
  const module = m.base!.name.replace(/\.weight$/, '');
  const bias = names.resolve(`${module}.bias`);
  if (!bias) throw new LensError(base.path, `adapter has lora_B.bias (lora_bias=True) for '${m.module}' but the base layer has no bias '${module}.bias' to merge it into`, lb.name);
  if (bias.numel !== lb.numel) throw new LensError(base.path, `lora_B.bias has ${lb.numel} values, base bias has ${bias.numel}`, bias.name);
  return { ...m, module: `${m.module}.bias`, rule: { kind: 'dense', diff: lb, scale: m.rule.scale }, tensors: [lb], out: bias.numel, in: 1, base: bias, transpose: false, embedding: false };
}

/**
 * Modules whose delta is zero because their output factor (lora_B, mlx-lm's lora_b, VeRA's λ_b) holds
 * only zeros: PEFT initialises lora_B so, and an adapter saved untrained there changes nothing. Reads
 * those factors (small); other rules are not checked.
 */
export function zeroFactorModules(adapter: Checkpoint, modules: AdaptedModule[]): string[] {
  const zero: string[] = [];
  for (const m of modules) {
    const t = outputFactor(m);
    if (!t || t.numel === 0) continue;
    const v = bytesToF32(t, adapter.handles.readBytesSync(t, new Uint8Array(t.byteLength)), new Float32Array(t.numel));
    if (v.every((x) => x === 0)) zero.push(m.module);
  }
  return zero;
}

/** The one-line warning naming all-zero modules (the first few; the report lists them all). */
export function zeroFactorWarning(zero: string[]): string | undefined {
  if (zero.length === 0) return undefined;
  const shown = zero.slice(0, 3).join(', ') + (zero.length > 3 ? `, … (${zero.length - 3} more)` : '');
  return `${zero.length} module${zero.length === 1 ? ' has' : 's have'} all-zero lora_B: ${zero.length === 1 ? 'it changes' : 'they change'} nothing (${shown})`;
}

/**
 * An adapter that adapts nothing is bad input, as PEFT refuses it ("Target modules … not found"):
 * no factor or saved tensor fits the base, or target_modules matches none of its LoRA modules. Factors
 * of modules target_modules leaves out are ones PEFT would not load: a warning names them.
 */
function assertAdaptsSomething(adapter: Checkpoint, base: Checkpoint, cfg: AdapterConfig, modules: AdaptedModule[], replacements: Replacement[], warnings: string[]): void {
  if (modules.length === 0 && !replacements.some((r) => r.base !== undefined)) {
    throw new LensError(adapter.path, `adapts nothing in the base ${base.path}: it holds no LoRA factor and no saved tensor of the base`);
  }
  const tm = cfg.targetModules;
  if (tm === null || tm === 'all-linear' || modules.length === 0) return;
  // A bias module (IA³, lora_bias) belongs to its layer's module.
  const layer = (m: AdaptedModule): string => (m.in === 1 && m.base?.name.endsWith('.bias') ? m.module.replace(/\.bias$/, '') : m.module);
  const outside = modules.filter((m) => !isTargetModule(cfg, layer(m)));
  const shown = JSON.stringify(tm);
  if (outside.length === modules.length) {
    throw new LensError(cfg.file, `target_modules ${shown} matches none of the adapter's ${modules.length} LoRA modules (e.g. '${modules[0].module}'), so PEFT would adapt nothing`);
  }
  if (outside.length > 0) warnings.push(`target_modules ${shown} leaves out ${outside.length} module(s) the adapter has factors for (e.g. '${outside[0].module}'); PEFT would not load them, LoRA Lens applies them`);
}
