import { LensError } from '../errors';
import { TensorInfo } from '../../shared/safetensors/header';
import { AdapterConfig, moduleScaling } from './adapterConfig';
import { Checkpoint } from './checkpoint';

/** One LoRA-adapted module: `delta = scale * B @ A`, shape [B.rows, A.cols], transposed when `transpose`. */
export interface LoraModule {
  /** Module path inside the model, without PEFT's `base_model.model.` prefix. */
  module: string;
  A: TensorInfo;
  B: TensorInfo;
  /** DoRA magnitude vector, one value per output row. */
  magnitude?: TensorInfo;
  embedding: boolean;
  r: number;
  alpha: number;
  scale: number;
  /** Rows and columns of `B @ A`. */
  out: number;
  in: number;
  /** The base weight this delta adds to (when a base was given). */
  base?: TensorInfo;
  /** The delta is stored transposed to `B @ A` in the base (Conv1D, embeddings). */
  transpose: boolean;
}

/** An adapter tensor that replaces a base tensor outright (modules_to_save, saved biases). */
export interface Replacement {
  source: TensorInfo;
  /** Name in the base, or the adapter-relative name when no base was given or the base lacks it. */
  target: string;
  /** The base tensor it replaces; absent when the tensor is new to the base. */
  base?: TensorInfo;
}

export interface AdapterLayout {
  modules: LoraModule[];
  replacements: Replacement[];
  warnings: string[];
}

const PREFIX = 'base_model.model.';
const LORA_KEY = /^(.*)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)(?:\.([^.]+))?(?:\.weight)?$/;

/** Module path of an adapter key, with PEFT's wrapper prefix and adapter-name infixes removed. */
function stripKey(key: string): string {
  let k = key.startsWith(PREFIX) ? key.slice(PREFIX.length) : key;
  k = k.replace(/\.modules_to_save\.[^.]+\./, '.').replace(/\.base_layer\./, '.');
  return k;
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

/** Groups an adapter's tensors into LoRA modules and replacements, and fits them to `base` when given. */
export function adapterLayout(adapter: Checkpoint, base?: Checkpoint): AdapterLayout {
  const cfg = adapter.adapter as AdapterConfig;
  const file = adapter.files[0];
  const parts = new Map<string, Partial<Record<'A' | 'B' | 'M', TensorInfo>> & { embedding?: boolean }>();
  const replacements: Replacement[] = [];
  for (const t of adapter.tensors) {
    const m = LORA_KEY.exec(t.name);
    if (!m) {
      replacements.push({ source: t, target: stripKey(t.name) });
      continue;
    }
    const module = stripKey(m[1] + '.x').slice(0, -2);
    const entry = parts.get(module) ?? {};
    const role = m[2];
    if (role === 'lora_magnitude_vector') entry.M = t;
    else {
      const slot = role.endsWith('A') ? 'A' : 'B';
      if (entry[slot]) throw new LensError(file, `second ${role} for module ${module}`, t.name);
      entry[slot] = t;
      if (role.startsWith('lora_embedding')) entry.embedding = true;
    }
    parts.set(module, entry);
  }

  const warnings: string[] = [];
  const names = base ? new BaseNames(base) : undefined;
  const modules: LoraModule[] = [];
  let flagDisagreements = 0;
  for (const [module, p] of parts) {
    if (!p.A || !p.B) throw new LensError(file, `module has ${p.A ? 'lora_A' : 'lora_B'} but no ${p.A ? 'lora_B' : 'lora_A'}`, (p.A ?? p.B ?? p.M)!.name);
    const { A, B } = p;
    if (A.shape.length !== 2 || B.shape.length !== 2 || A.shape[0] !== B.shape[1]) {
      throw new LensError(file, `lora_A ${JSON.stringify(A.shape)} and lora_B ${JSON.stringify(B.shape)} do not form a rank-r product`, A.name);
    }
    const { r, alpha, scale } = moduleScaling(cfg, module);
    if (A.shape[0] !== r) warnings.push(`${module}: lora_A has rank ${A.shape[0]} but the config gives r=${r}; scale uses r=${r} as PEFT does`);
    const out = B.shape[0];
    const inn = A.shape[1];
    const lm: LoraModule = { module, A, B, magnitude: p.M, embedding: p.embedding === true, r, alpha, scale, out, in: inn, transpose: p.embedding === true || cfg.fanInFanOut };
    if (base && names) {
      const t = names.resolve(`${module}.weight`) ?? (p.embedding ? names.resolve(module) : undefined);
      if (!t) throw new LensError(base.path, `adapter targets module '${module}' but the base has no tensor '${module}.weight'`, `${module}.weight`);
      lm.base = t;
      const straight = t.shape.length === 2 && t.shape[0] === out && t.shape[1] === inn;
      const transposed = t.shape.length === 2 && t.shape[0] === inn && t.shape[1] === out;
      if (!straight && !transposed) {
        throw new LensError(adapter.path, `delta of shape [${out}, ${inn}] does not fit base tensor of shape ${JSON.stringify(t.shape)}`, t.name);
      }
      const conv1d = isConv1D(base.config, t.name.replace(/\.weight$/, ''));
      lm.transpose = straight && transposed ? (p.embedding === true || (conv1d ?? cfg.fanInFanOut)) : transposed;
      if (!p.embedding && lm.transpose !== cfg.fanInFanOut) flagDisagreements++;
      if (p.M && p.M.numel !== (lm.transpose ? inn : out) && p.M.numel !== out) {
        throw new LensError(file, `DoRA magnitude has ${p.M.numel} values, the weight has ${out} output rows`, p.M.name);
      }
    }
    modules.push(lm);
  }
  if (flagDisagreements > 0) {
    warnings.push(
      `fan_in_fan_out=${cfg.fanInFanOut} in adapter_config.json contradicts the base for ${flagDisagreements} module(s); ` +
        `the orientation was taken from the base's shapes and architecture (PEFT does the same for GPT-2 Conv1D)`,
    );
  }
  if (base && names) {
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
  }
  return { modules, replacements, warnings };
}
