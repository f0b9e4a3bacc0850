/**
 * The key layouts of the adapter formats, read into delta rules (deltaRule.ts), before any base is seen.
 * PEFT: `base_model.model.<module>.<role>[.<adapter name>][.weight]`, the module path possibly with
 * `.base_layer`, and for LoRA on a module also in modules_to_save, the wrapper's `.modules_to_save` /
 * `.original_module` copies. mlx-lm: `<module>.lora_a|lora_b|m`, no prefix.
 */
import { LensError } from '../errors';
import { TensorInfo } from '../../shared/safetensors/header';
import { AdapterConfig, AdapterMethod, moduleScaling } from './adapterConfig';
import { Checkpoint } from './checkpoint';
import { AdaptedModule, DeltaRule, KronFactor } from './deltaRule';
import type { Replacement } from './adapter';

const PREFIX = 'base_model.model.';

/** The tensor roles each method saves, as key segments. */
const ROLES: Record<AdapterMethod, readonly string[]> = {
  LORA: ['lora_A', 'lora_B', 'lora_embedding_A', 'lora_embedding_B', 'lora_magnitude_vector'],
  ADALORA: ['lora_A', 'lora_B', 'lora_E'],
  IA3: ['ia3_l'],
  LOHA: ['hada_w1_a', 'hada_w1_b', 'hada_w2_a', 'hada_w2_b', 'hada_t1', 'hada_t2'],
  LOKR: ['lokr_w1', 'lokr_w1_a', 'lokr_w1_b', 'lokr_w2', 'lokr_w2_a', 'lokr_w2_b', 'lokr_t2'],
  VERA: ['vera_lambda_b', 'vera_lambda_d'],
  MLX: ['lora_a', 'lora_b', 'm'],
};

/** The role under which a module keeps lora_B's bias (PEFT `lora_bias`). */
const LORA_BIAS = 'lora_B.bias';

/** VeRA's matrices shared by every module: `base_model.vera_A` [rank, max in], `base_model.vera_B` [max out, rank]. */
const VERA_SHARED = /^(?:base_model\.)?vera_(A|B)(?:\.[^.]+)?$/;

/** Which copy of a module a key belongs to: the module itself, or one side of PEFT's ModulesToSaveWrapper. */
type Copy = 'plain' | 'saved' | 'original';

interface ParsedKey {
  module: string;
  role: string;
  copy: Copy;
}

/** Module, role and wrapper copy of an adapter key; undefined for a tensor that is not a role (a saved tensor). */
function parseKey(key: string, method: AdapterMethod): ParsedKey | undefined {
  const roles = ROLES[method];
  const parts = (key.startsWith(PREFIX) ? key.slice(PREFIX.length) : key).split('.');
  let end = parts.length;
  if (method !== 'MLX' && parts[end - 1] === 'weight') end--;
  let i = -1;
  if (end >= 2 && roles.includes(parts[end - 1])) i = end - 1;
  // PEFT before adapter names were stripped on save: `<role>.<adapter name>`.
  else if (method !== 'MLX' && end >= 3 && roles.includes(parts[end - 2])) i = end - 2;
  if (i < 1) return undefined;
  const mod = parts.slice(0, i).filter((p) => p !== 'base_layer');
  let copy: Copy = 'plain';
  const wrapper = (n: number): boolean => mod[mod.length - n] === 'modules_to_save' || mod[mod.length - n] === 'original_module';
  if (wrapper(1)) copy = mod.pop() === 'modules_to_save' ? 'saved' : 'original';
  else if (mod.length > 2 && wrapper(2)) {
    mod.pop(); // the adapter name: `modules_to_save.default.lora_A`
    copy = mod.pop() === 'modules_to_save' ? 'saved' : 'original';
  }
  return { module: mod.join('.'), role: parts[i], copy };
}

/** Module path of a saved (non-role) tensor, with PEFT's wrapper prefix and infixes removed. */
function stripKey(key: string): string {
  const k = key.startsWith(PREFIX) ? key.slice(PREFIX.length) : key;
  return k.replace(/\.modules_to_save\.[^.]+\./, '.').replace(/\.base_layer\./, '.');
}

export interface Grouped {
  modules: AdaptedModule[];
  replacements: Replacement[];
  warnings: string[];
}

/** Groups an adapter's tensors into modules with their delta rules, and replacements; no base needed. */
export function groupAdapter(adapter: Checkpoint, cfg: AdapterConfig): Grouped {
  const file = adapter.files[0];
  const copies = new Map<string, Record<Copy, Map<string, TensorInfo>>>();
  const replacements: Replacement[] = [];
  const shared: Partial<Record<'A' | 'B', TensorInfo>> = {};
  for (const t of adapter.tensors) {
    const v = cfg.method === 'VERA' ? VERA_SHARED.exec(t.name) : null;
    if (v) {
      shared[v[1] as 'A' | 'B'] = t;
      continue;
    }
    // PEFT's lora_bias (lora_B a Linear with a bias): `…lora_B.bias`, the module's other role.
    const loraBias = cfg.method === 'LORA' && t.name.endsWith('.lora_B.bias');
    const k = parseKey(loraBias ? t.name.replace(/bias$/, 'weight') : t.name, cfg.method);
    if (!k) {
      replacements.push({ source: t, target: stripKey(t.name) });
      continue;
    }
    const role = loraBias ? LORA_BIAS : k.role;
    const entry = copies.get(k.module) ?? { plain: new Map(), saved: new Map(), original: new Map() };
    const roles = entry[k.copy];
    if (roles.has(role)) throw new LensError(file, `second ${role} for module ${k.module}`, t.name);
    roles.set(role, t);
    copies.set(k.module, entry);
  }

  const warnings: string[] = [];
  const modules: AdaptedModule[] = [];
  let originals = 0;
  for (const [module, c] of copies) {
    // PEFT merges the modules_to_save copy's LoRA (the active one) into the saved module; the original's is dropped.
    const parts = c.saved.size > 0 ? c.saved : c.plain;
    if (c.original.size > 0) originals++;
    if (parts.size === 0) continue;
    modules.push(buildModule(file, cfg, module, parts, shared, warnings));
  }
  if (originals > 0) {
    warnings.push(`${originals} module(s) also carry LoRA on modules_to_save's original_module copy; PEFT merges the modules_to_save copy's LoRA, as here`);
  }
  return { modules, replacements, warnings };
}

function buildModule(file: string, cfg: AdapterConfig, module: string, p: Map<string, TensorInfo>, shared: Partial<Record<'A' | 'B', TensorInfo>>, warnings: string[]): AdaptedModule {
  const tensors = [...p.values()];
  const need = (role: string, other: string): TensorInfo => {
    const t = p.get(role);
    if (!t) throw new LensError(file, `module has ${other} but no ${role}`, p.get(other)?.name ?? tensors[0].name);
    return t;
  };
  const base = { module, tensors, embedding: false, transpose: cfg.fanInFanOut };
  const shapeError = (what: string, t: TensorInfo): never => {
    throw new LensError(file, `${what} (${tensors.map((x) => `${x.name.split('.').slice(-2).join('.')} ${JSON.stringify(x.shape)}`).join(', ')})`, t.name);
  };
  switch (cfg.method) {
    case 'IA3': {
      const l = p.get('ia3_l')!;
      // PEFT stores [out, 1], or [1, in] for a feed-forward module (its input features are scaled).
      const axis = l.shape.length === 2 && l.shape[0] === 1 && l.shape[1] !== 1 ? 'in' : 'out';
      const n = l.numel;
      return { ...base, rule: { kind: 'scale', vector: l, axis }, out: axis === 'out' ? n : 0, in: axis === 'in' ? n : 0 };
    }
    case 'LOHA': {
      if (p.has('hada_t1') || p.has('hada_t2')) throw new LensError(file, 'LoHa with Tucker factors (hada_t1/hada_t2, a convolution) is not supported', p.get('hada_t1')?.name ?? p.get('hada_t2')!.name);
      const [w1a, w1b, w2a, w2b] = [need('hada_w1_a', 'hada_w1_b'), need('hada_w1_b', 'hada_w1_a'), need('hada_w2_a', 'hada_w2_b'), need('hada_w2_b', 'hada_w2_a')];
      if (![w1a, w1b, w2a, w2b].every((t) => t.shape.length === 2) || w1a.shape[1] !== w1b.shape[0] || w2a.shape[1] !== w2b.shape[0] || w1a.shape[0] !== w2a.shape[0] || w1b.shape[1] !== w2b.shape[1]) {
        shapeError('LoHa factors do not form two products of one shape', w1a);
      }
      const { scale } = moduleScaling(cfg, module, w1a.shape[1]);
      return { ...base, rule: { kind: 'hadamard', w1a, w1b, w2a, w2b, scale }, out: w1a.shape[0], in: w1b.shape[1] };
    }
    case 'LOKR': {
      if (p.has('lokr_t2')) throw new LensError(file, 'LoKr with a Tucker factor (lokr_t2, a convolution) is not supported', p.get('lokr_t2')!.name);
      const factor = (n: 1 | 2): { f: KronFactor; shape: [number, number] } => {
        const full = p.get(`lokr_w${n}`);
        if (full) {
          if (full.shape.length !== 2) shapeError(`lokr_w${n} is not a matrix (a convolution is not supported)`, full);
          return { f: { full }, shape: [full.shape[0], full.shape[1]] };
        }
        const a = need(`lokr_w${n}_a`, `lokr_w${n}_b`);
        const b = need(`lokr_w${n}_b`, `lokr_w${n}_a`);
        if (a.shape.length !== 2 || b.shape.length !== 2 || a.shape[1] !== b.shape[0]) shapeError(`lokr_w${n}_a and lokr_w${n}_b do not form a product`, a);
        return { f: { a, b }, shape: [a.shape[0], b.shape[1]] };
      };
      const w1 = factor(1);
      const w2 = factor(2);
      const { scale } = moduleScaling(cfg, module, cfg.r ?? 1);
      return { ...base, rule: { kind: 'kronecker', w1: w1.f, w2: w2.f, shape1: w1.shape, shape2: w2.shape, scale }, out: w1.shape[0] * w2.shape[0], in: w1.shape[1] * w2.shape[1] };
    }
    case 'VERA': {
      const lambdaB = need('vera_lambda_b', 'vera_lambda_d');
      const lambdaD = need('vera_lambda_d', 'vera_lambda_b');
      const { A, B } = shared;
      if (!A || !B) {
        throw new LensError(file, 'VeRA adapter without its shared vera_A / vera_B (saved with save_projection=False): they come from PEFT\'s seeded generator and cannot be rebuilt here', lambdaB.name);
      }
      const rank = lambdaD.numel;
      if (A.shape.length !== 2 || B.shape.length !== 2 || A.shape[0] !== rank || B.shape[1] !== rank || lambdaB.numel > B.shape[0]) {
        throw new LensError(file, `VeRA lambda_d (${rank}) and lambda_b (${lambdaB.numel}) do not fit vera_A ${JSON.stringify(A.shape)} and vera_B ${JSON.stringify(B.shape)}`, lambdaB.name);
      }
      const rule: DeltaRule = { kind: 'low-rank', factors: { form: 'vera', A, B, lambdaB, lambdaD }, rank, scale: 1, r: cfg.r, alpha: null };
      return { ...base, tensors: [...tensors, A, B], rule, out: lambdaB.numel, in: A.shape[1] };
    }
    default:
      return loraModule(file, cfg, module, p, base, need, shapeError, warnings);
  }
}

/** PEFT LoRA (with DoRA, embeddings, old MergedLinear), AdaLoRA, and mlx-lm LoRA / DoRA. */
function loraModule(
  file: string,
  cfg: AdapterConfig,
  module: string,
  p: Map<string, TensorInfo>,
  base: Pick<AdaptedModule, 'module' | 'tensors' | 'embedding' | 'transpose'>,
  need: (role: string, other: string) => TensorInfo,
  shapeError: (what: string, t: TensorInfo) => never,
  warnings: string[],
): AdaptedModule {
  const mlx = cfg.method === 'MLX';
  const embedding = p.has('lora_embedding_A') || p.has('lora_embedding_B');
  const [nA, nB] = mlx ? ['lora_a', 'lora_b'] : embedding ? ['lora_embedding_A', 'lora_embedding_B'] : ['lora_A', 'lora_B'];
  if (!p.has(nA) && !p.has(nB)) {
    const first = [...p.values()][0];
    throw new LensError(file, `module has ${first.name.split('.').slice(-2).join('.')} but no ${nA} / ${nB}`, first.name);
  }
  const A = need(nA, nB);
  const B = need(nB, nA);
  const magnitude = p.get(mlx ? 'm' : 'lora_magnitude_vector');
  const notRankR = (): never => shapeError(`${nA} and ${nB} do not form a rank-r product`, A);
  if (A.shape.length !== 2 && !(A.shape.length === 4 && !mlx)) notRankR();
  if (mlx) {
    // mlx-lm: y = x Wᵀ + scale (x @ lora_a) @ lora_b, so ΔW = scale (lora_a @ lora_b)ᵀ.
    if (B.shape.length !== 2 || A.shape[1] !== B.shape[0]) notRankR();
    const rank = A.shape[1];
    const { r, alpha, scale } = moduleScaling(cfg, module, rank);
    return { ...base, transpose: false, rule: { kind: 'low-rank', factors: { form: 'transposed', a: A, b: B }, rank, scale, r, alpha, magnitude }, out: B.shape[1], in: A.shape[0] };
  }
  const rank = A.shape[0];
  const { r, alpha, scale, divisor } = moduleScaling(cfg, module, rank);
  if (A.shape.length === 2 && B.shape.length === 3 && B.shape[2] === 1) {
    // Old PEFT MergedLinear: lora_B is a grouped Conv1d weight [out of the enabled slices, r, 1].
    const enable = cfg.enableLora;
    if (!enable) shapeError(`${nB} is a grouped Conv1d weight (old PEFT MergedLinear) but adapter_config.json states no enable_lora`, B);
    const groups = enable.filter((e) => e).length;
    if (groups === 0 || B.shape[1] * groups !== rank || B.shape[0] % groups !== 0) notRankR();
    if (r !== null && B.shape[1] !== r) warnings.push(`${module}: lora_B has rank ${B.shape[1]} per slice but the config gives r=${r}; scale uses r=${r} as PEFT does`);
    const out = (B.shape[0] / groups) * enable.length;
    return { ...base, rule: { kind: 'low-rank', factors: { form: 'grouped', A, B, enable }, rank, scale, r, alpha }, out, in: A.shape[1] };
  }
  // PEFT's Conv2d LoRA: lora_A a conv [r, in, kh, kw], lora_B a 1x1 conv [out, r, 1, 1]; ΔW = B @ A flattened, as [out, in·kh·kw].
  if (A.shape.length === 4 && !mlx && B.shape.length === 4 && B.shape[1] === rank && B.shape[2] === 1 && B.shape[3] === 1 && cfg.method === 'LORA') {
    return { ...base, rule: { kind: 'low-rank', factors: { form: 'plain', A, B }, rank, scale, r, alpha, magnitude }, out: B.shape[0], in: A.numel / rank };
  }
  if (A.shape.length !== 2 || B.shape.length !== 2 || B.shape[1] !== rank) notRankR();
  if (cfg.method === 'ADALORA') {
    const E = need('lora_E', nA);
    if (E.numel !== rank) shapeError(`lora_E has ${E.numel} values for rank ${rank}`, E);
    return { ...base, rule: { kind: 'low-rank', factors: { form: 'svd', A, B, E }, rank, scale, r, alpha, divisor }, out: B.shape[0], in: A.shape[1] };
  }
  if (r !== null && rank !== r) warnings.push(`${module}: lora_A has rank ${rank} but the config gives r=${r}; scale uses r=${r} as PEFT does`);
  const bias = p.get(LORA_BIAS);
  if (bias && (embedding || bias.numel !== B.shape[0])) shapeError(`lora_B's bias has ${bias.numel} values for ${B.shape[0]} output features`, bias);
  return { ...base, embedding, transpose: embedding || cfg.fanInFanOut, rule: { kind: 'low-rank', factors: { form: 'plain', A, B }, rank, scale, r, alpha, magnitude, bias }, out: B.shape[0], in: A.shape[1] };
}
