import { LensError } from '../errors';
import { readJson } from './json';

/** Every field of PEFT's LoraConfig that changes what the adapter's weights mean. */
export interface AdapterConfig {
  file: string;
  r: number;
  loraAlpha: number;
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

export function parseAdapterConfig(file: string): AdapterConfig {
  const raw = readJson(file);
  const bad = (field: string, what: string): never => {
    throw new LensError(file, `${field} ${what} (found ${JSON.stringify(raw[field])})`);
  };
  const peftType = raw.peft_type ?? 'LORA';
  if (peftType !== 'LORA') throw new LensError(file, `peft_type ${JSON.stringify(peftType)} is not supported; LoRA Lens reads LORA adapters`);
  const r = raw.r ?? 8;
  if (!Number.isInteger(r) || (r as number) <= 0) bad('r', 'must be a positive integer');
  const alpha = raw.lora_alpha ?? 8;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) bad('lora_alpha', 'must be a number');
  const tm = raw.target_modules ?? null;
  if (tm !== null && typeof tm !== 'string' && !(Array.isArray(tm) && tm.every((x) => typeof x === 'string'))) {
    bad('target_modules', 'must be a list of names or a regex string');
  }
  const bias = raw.bias ?? 'none';
  if (bias !== 'none' && bias !== 'all' && bias !== 'lora_only') bad('bias', "must be 'none', 'all' or 'lora_only'");
  const numberMap = (field: string, integer: boolean): Record<string, number> => {
    const v = raw[field] ?? {};
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return bad(field, 'must be an object');
    for (const x of Object.values(v as Record<string, unknown>)) {
      if (typeof x !== 'number' || (integer && (!Number.isInteger(x) || x <= 0))) bad(field, `values must be ${integer ? 'positive integers' : 'numbers'}`);
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
  const mts = raw.modules_to_save ?? null;
  if (mts !== null && !(Array.isArray(mts) && mts.every((x) => typeof x === 'string'))) bad('modules_to_save', 'must be a list of names');
  return {
    file,
    r: r as number,
    loraAlpha: alpha as number,
    targetModules: tm as string[] | string | null,
    useRslora: raw.use_rslora === true,
    useDora: raw.use_dora === true,
    fanInFanOut: raw.fan_in_fan_out === true,
    rankPattern: numberMap('rank_pattern', true),
    alphaPattern: numberMap('alpha_pattern', false),
    modulesToSave: (mts as string[] | null) ?? [],
    bias: bias as AdapterConfig['bias'],
    layersToTransform,
    layersPattern,
    baseModel: typeof raw.base_model_name_or_path === 'string' ? raw.base_model_name_or_path : null,
    taskType: typeof raw.task_type === 'string' ? raw.task_type : null,
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
  for (const [key, value] of Object.entries(patterns)) {
    let re: RegExp;
    try {
      re = new RegExp(`^(.*\\.)?(${key})$`);
    } catch {
      re = new RegExp(`^(.*\\.)?(${escapeRe(key)})$`);
    }
    if (re.test(module)) return value;
  }
  return undefined;
}

/** Rank, alpha and scale `s` of one module (`s = alpha / r`, or `alpha / sqrt(r)` with rsLoRA). */
export function moduleScaling(cfg: AdapterConfig, module: string): { r: number; alpha: number; scale: number } {
  const r = patternValue(cfg.rankPattern, module) ?? cfg.r;
  const alpha = patternValue(cfg.alphaPattern, module) ?? cfg.loraAlpha;
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
      try {
        hit = new RegExp(`^(?:${tm})$`).test(module);
      } catch {
        hit = false;
      }
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
