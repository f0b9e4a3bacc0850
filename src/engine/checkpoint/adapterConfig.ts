import { LensError } from '../errors';
import { readJson } from './json';
import { patternMatcher } from './patterns';

/**
 * The adapter methods LoRA Lens merges: PEFT's mergeable `peft_type`s, and mlx-lm's LoRA (`MLX`, an
 * adapter_config.json with `lora_parameters` beside `adapters.safetensors`).
 */
export type AdapterMethod = 'LORA' | 'ADALORA' | 'IA3' | 'LOHA' | 'LOKR' | 'VERA' | 'MLX';
const PEFT_METHODS = new Set(['LORA', 'ADALORA', 'IA3', 'LOHA', 'LOKR', 'VERA']);
/** PEFT's prompt-learning methods: they add virtual tokens or prefixes and change no weight of the base. */
const PROMPT_METHODS = new Set(['PROMPT_TUNING', 'P_TUNING', 'PREFIX_TUNING', 'MULTITASK_PROMPT_TUNING', 'ADAPTION_PROMPT', 'CPT']);

/** Every field of an adapter config that changes what the adapter's weights mean. */
export interface AdapterConfig {
  file: string;
  method: AdapterMethod;
  /** The weights file beside the config. */
  weightsFile: 'adapter_model.safetensors' | 'adapters.safetensors';
  /** r as the config states it (AdaLoRA: init_r); null where the method has none (IA³, MLX: rank from the factors). */
  r: number | null;
  /** lora_alpha (LoHa, LoKr: alpha); null where the method has none (IA³, VeRA, MLX). */
  loraAlpha: number | null;
  /** The delta's scale as the config states it outright (MLX's lora_parameters.scale); null elsewhere. */
  scale: number | null;
  /** IA³: modules whose input features (columns) are scaled instead of the output features. */
  feedforwardModules: string[] | string | null;
  /** Old PEFT MergedLinear (fused qkv): which equal slices of the output the delta lands on. */
  enableLora: boolean[] | null;
  /** A list of module-name suffixes, a regex matched against the whole module name, or null. */
  targetModules: string[] | string | null;
  useRslora: boolean;
  useDora: boolean;
  fanInFanOut: boolean;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  modulesToSave: string[];
  bias: 'none' | 'all' | 'lora_only';
  layersToTransform: number[] | null;
  layersPattern: string[] | null;
  baseModel: string | null;
  taskType: string | null;
  raw: Record<string, unknown>;
}

/** Whether a parsed adapter_config.json is mlx-lm's (it states `lora_parameters`, not `peft_type`). */
function isMlxConfig(raw: Record<string, unknown>): boolean {
  return raw.peft_type === undefined && raw.lora_parameters !== null && typeof raw.lora_parameters === 'object';
}

/** The largest LoRA rank taken from a config or a flag: far above any real adapter's, low enough that counts stay exact. */
export const MAX_RANK = 1 << 20;

export function parseAdapterConfig(file: string): AdapterConfig {
  const raw = readJson(file);
  const bad = (field: string, what: string): never => {
    throw new LensError(file, `${field} ${what} (found ${JSON.stringify(raw[field])})`);
  };
  if (isMlxConfig(raw)) return parseMlxConfig(file, raw);
  const peftType = raw.peft_type ?? 'LORA';
  if (typeof peftType === 'string' && PROMPT_METHODS.has(peftType)) {
    throw new LensError(file, `peft_type ${peftType} adds virtual tokens or prefixes and changes no weight of the base: there is nothing to merge or compare`);
  }
  if (typeof peftType !== 'string' || !PEFT_METHODS.has(peftType)) {
    throw new LensError(file, `peft_type ${JSON.stringify(peftType)} is not supported; LoRA Lens reads ${[...PEFT_METHODS].join(', ')} and mlx-lm adapters`);
  }
  const method = peftType as AdapterMethod;
  // PEFT's own defaults where a config omits a field (LoraConfig r=8, lora_alpha=8; LoHa/LoKr alpha=8; AdaLoRA init_r=12).
  const rField = method === 'ADALORA' ? 'init_r' : 'r';
  const r = method === 'IA3' ? null : (raw[rField] ?? (method === 'ADALORA' ? 12 : 8));
  if (r !== null && (!Number.isSafeInteger(r) || (r as number) <= 0 || (r as number) > MAX_RANK)) bad(rField, `must be a positive integer up to ${MAX_RANK}`);
  const alphaField = method === 'LOHA' || method === 'LOKR' ? 'alpha' : 'lora_alpha';
  const alpha = method === 'IA3' || method === 'VERA' ? null : (raw[alphaField] ?? 8);
  if (alpha !== null && (typeof alpha !== 'number' || !Number.isFinite(alpha))) bad(alphaField, 'must be a number');
  const tm = raw.target_modules ?? null;
  const names = (v: unknown): boolean => v === null || typeof v === 'string' || (Array.isArray(v) && v.every((x) => typeof x === 'string'));
  if (!names(tm)) bad('target_modules', 'must be a list of names or a regex string');
  const ff = raw.feedforward_modules ?? null;
  if (!names(ff)) bad('feedforward_modules', 'must be a list of names or a regex string');
  const el = raw.enable_lora ?? null;
  if (el !== null && !(Array.isArray(el) && el.length > 0 && el.every((x) => typeof x === 'boolean'))) bad('enable_lora', 'must be a list of booleans');
  const bias = raw.bias ?? 'none';
  if (bias !== 'none' && bias !== 'all' && bias !== 'lora_only') bad('bias', "must be 'none', 'all' or 'lora_only'");
  const numberMap = (field: string, integer: boolean): Record<string, number> => {
    // AdaLoRA's rank_pattern holds per-module masks of kept ranks, already applied to the saved shapes.
    const v = method === 'ADALORA' && field === 'rank_pattern' ? {} : (raw[field] ?? {});
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return bad(field, 'must be an object');
    for (const x of Object.values(v as Record<string, unknown>)) {
      if (typeof x !== 'number' || !Number.isFinite(x) || (integer && (!Number.isSafeInteger(x) || x <= 0 || x > MAX_RANK))) bad(field, `values must be ${integer ? `positive integers up to ${MAX_RANK}` : 'finite numbers'}`);
    }
    return v as Record<string, number>;
  };
  const ltt = raw.layers_to_transform ?? null;
  let layersToTransform: number[] | null = null;
  if (typeof ltt === 'number') layersToTransform = [ltt];
  else if (Array.isArray(ltt) && ltt.every((x) => Number.isInteger(x))) layersToTransform = ltt as number[];
  else if (ltt !== null) bad('layers_to_transform', 'must be an integer or a list of integers');
  const lp = raw.layers_pattern ?? null;
  const layersPattern = typeof lp === 'string' ? [lp] : Array.isArray(lp) ? (lp as string[]) : null;
  // Every regex is compiled now, so that a bad one is named with its file before any work.
  if (typeof tm === 'string' && tm !== 'all-linear') patternMatcher(tm, 'fullmatch', file, 'target_modules');
  const rankPattern = numberMap('rank_pattern', true);
  const alphaPattern = numberMap('alpha_pattern', false);
  for (const key of Object.keys(rankPattern)) patternMatcher(key, 'key', file, 'rank_pattern key');
  for (const key of Object.keys(alphaPattern)) patternMatcher(key, 'key', file, 'alpha_pattern key');
  const mts = raw.modules_to_save ?? null;
  if (mts !== null && !(Array.isArray(mts) && mts.every((x) => typeof x === 'string'))) bad('modules_to_save', 'must be a list of names');
  return {
    file,
    method,
    weightsFile: 'adapter_model.safetensors',
    r: r as number | null,
    loraAlpha: alpha as number | null,
    scale: null,
    feedforwardModules: ff as string[] | string | null,
    enableLora: el as boolean[] | null,
    targetModules: tm as string[] | string | null,
    useRslora: raw.use_rslora === true,
    useDora: raw.use_dora === true,
    fanInFanOut: raw.fan_in_fan_out === true,
    rankPattern,
    alphaPattern,
    modulesToSave: (mts as string[] | null) ?? [],
    bias: bias as AdapterConfig['bias'],
    layersToTransform,
    layersPattern,
    baseModel: typeof raw.base_model_name_or_path === 'string' ? raw.base_model_name_or_path : null,
    taskType: typeof raw.task_type === 'string' ? raw.task_type : null,
    raw,
  };
}

/**
 * mlx-lm's adapter config: `lora_parameters: {rank, scale, dropout, keys?}` (older files also state an
 * `alpha` that mlx-lm's LoRA layers never read). The delta is `scale * (x @ lora_a) @ lora_b`: the scale
 * is stated outright, so r and alpha stay unstated rather than being made up to fit it.
 */
function parseMlxConfig(file: string, raw: Record<string, unknown>): AdapterConfig {
  const lp = raw.lora_parameters as Record<string, unknown>;
  const ft = raw.fine_tune_type ?? 'lora';
  if (ft !== 'lora' && ft !== 'dora') throw new LensError(file, `mlx-lm fine_tune_type ${JSON.stringify(ft)} is not an adapter LoRA Lens reads (lora, dora)`);
  const scale = lp.scale;
  if (typeof scale !== 'number' || !Number.isFinite(scale)) {
    throw new LensError(file, `lora_parameters.scale must be a number (found ${JSON.stringify(scale)}): mlx-lm scales the delta by it`);
  }
  const keys = lp.keys ?? null;
  return {
    file,
    method: 'MLX',
    weightsFile: 'adapters.safetensors',
    r: Number.isInteger(lp.rank) && (lp.rank as number) > 0 ? (lp.rank as number) : null,
    loraAlpha: null,
    scale,
    feedforwardModules: null,
    enableLora: null,
    targetModules: Array.isArray(keys) && keys.every((k) => typeof k === 'string') ? (keys as string[]) : null,
    useRslora: false,
    useDora: ft === 'dora',
    fanInFanOut: false,
    rankPattern: {},
    alphaPattern: {},
    modulesToSave: [],
    bias: 'none',
    layersToTransform: null,
    layersPattern: null,
    baseModel: typeof raw.model === 'string' ? raw.model : null,
    taskType: null,
    raw,
  };
}

/** Heads PEFT adds to modules_to_save by task type (PeftModelForSequenceClassification, …ForTokenClassification, …ForQuestionAnswering). */
const TASK_HEADS: Record<string, string[]> = { SEQ_CLS: ['classifier', 'score'], TOKEN_CLS: ['classifier', 'score'], QUESTION_ANS: ['qa_outputs'] };

/** modules_to_save as PEFT applies it: the config's list plus the task head of a classification or QA adapter. */
export function effectiveModulesToSave(cfg: Pick<AdapterConfig, 'modulesToSave' | 'taskType'>): string[] {
  const heads = TASK_HEADS[cfg.taskType ?? ''] ?? [];
  return [...new Set([...cfg.modulesToSave, ...heads])];
}

/**
 * Whether PEFT saves the module holding a tensor in full: its `_set_trainable` wraps every module whose
 * path ends with a modules_to_save entry, as a plain string suffix (`pre_classifier` ends with
 * `classifier`), and a wrapped module takes its submodules along.
 */
export function isSavedModule(modulesToSave: readonly string[], module: string): boolean {
  if (modulesToSave.length === 0) return false;
  const parts = module.split('.');
  for (let i = parts.length; i > 0; i--) {
    const path = parts.slice(0, i).join('.');
    if (modulesToSave.some((m) => m !== '' && path.endsWith(m))) return true;
  }
  return false;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** PEFT's pattern lookup: an exact key, else the first key matching the end of the module path. */
export function patternValue(patterns: Record<string, number>, module: string): number | undefined {
  if (Object.prototype.hasOwnProperty.call(patterns, module)) return patterns[module];
  for (const [key, value] of Object.entries(patterns)) if (patternMatcher(key, 'key')(module)) return value;
  return undefined;
}

/**
 * Rank, alpha and scale `s` of one LoRA-like module: `s = alpha / r`, `alpha / sqrt(r)` with rsLoRA;
 * AdaLoRA `alpha / (ranknum + 1e-5)` with ranknum the saved rank (`rank`, PEFT's fp32 buffer) and
 * alpha = r when lora_alpha is 0; MLX its stated scale. `rank` is the factors' rank.
 */
export function moduleScaling(cfg: AdapterConfig, module: string, rank = cfg.r ?? 0): { r: number | null; alpha: number | null; scale: number; divisor?: number } {
  if (cfg.method === 'MLX') return { r: rank, alpha: null, scale: cfg.scale! };
  if (cfg.method === 'VERA') return { r: cfg.r, alpha: null, scale: 1 };
  if (cfg.method === 'ADALORA') {
    const alpha = cfg.loraAlpha! > 0 ? cfg.loraAlpha! : rank;
    // ranknum is an fp32 buffer: torch adds the scalar 1e-5 as fp32 and rounds the sum to fp32.
    const divisor = Math.fround(rank + Math.fround(1e-5));
    return { r: rank, alpha, scale: alpha / divisor, divisor };
  }
  const r = patternValue(cfg.rankPattern, module) ?? cfg.r!;
  const alpha = patternValue(cfg.alphaPattern, module) ?? cfg.loraAlpha!;
  return { r, alpha, scale: cfg.useRslora ? alpha / Math.sqrt(r) : alpha / r };
}

/** Whether PEFT would put LoRA on this module (target_modules and layers_to_transform). */
export function isTargetModule(cfg: Pick<AdapterConfig, 'targetModules' | 'layersToTransform' | 'layersPattern'>, module: string): boolean {
  const tm = cfg.targetModules;
  if (tm === null) return false;
  let hit: boolean;
  if (typeof tm === 'string') {
    if (tm === 'all-linear') hit = true;
    else {
      hit = patternMatcher(tm, 'fullmatch')(module);
    }
  } else {
    hit = tm.some((t) => module === t || module.endsWith('.' + t));
  }
  if (!hit || cfg.layersToTransform === null) return hit;
  const patterns = cfg.layersPattern ?? ['layers', 'h', 'block', 'blocks', 'layer'];
  for (const p of patterns) {
    const m = new RegExp(`\\.${escapeRe(p)}\\.(\\d+)\\.`).exec(module);
    if (m) return cfg.layersToTransform.includes(Number(m[1]));
  }
  return false;
}
