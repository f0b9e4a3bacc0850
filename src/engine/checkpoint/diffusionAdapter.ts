/**
 * Image-model adapter files read into the engine's delta rules (deltaRule.ts), each formula as its
 * format's own code computes it:
 * - kohya-ss LoRA / LoCon (`<module>.lora_down.weight`, `.lora_up.weight`, `.alpha`): ΔW = (alpha / r) ·
 *   up @ down, r the rows of down; a Conv2d's down [r, in, kh, kw] and up [out, r, 1, 1] give
 *   ΔW[o, i·kh·kw] = Σ_r up[o, r] · down[r, i·kh·kw], the base conv weight seen as [out, in·kh·kw].
 * - LyCORIS (KohakuBlueleaf/LyCORIS lycoris/modules/{loha,lokr,full}.py and functional/): LoHa
 *   (alpha / r) · (w1a @ w1b) ⊙ (w2a @ w2b), r the rows of hada_w1_b; LoKr (alpha / r) · kron(w1, w2),
 *   w1 = lokr_w1 or w1_a @ w1_b, w2 = lokr_w2 or w2_a @ w2_b, r the rows of w1_b (else w2_b), scale 1
 *   when neither factor is split; full `diff` (+ `diff_b` on the bias), scale 1. A missing or zero alpha
 *   means alpha = r (scale 1), as kohya and LyCORIS both set it. Tucker (`use_tucker` on a kh×kw
 *   convolution, deltaRule.ts): LoCon's `lora_mid` [r, r, kh, kw] between a 1x1 `lora_down` and `lora_up`;
 *   LoHa's `hada_t1` / `hada_t2` with `hada_w*_a` [r, out] and `hada_w*_b` [r, in]; LoKr's `lokr_t2` with
 *   `lokr_w2_a` [r, out2] and `lokr_w2_b` [r, in2].
 * - diffusers: `<component>.<module>.lora.down/up.weight`, `.lora_linear_layer.down/up.weight`,
 *   `.lora_A/B.weight` (PEFT keys without PEFT's wrapper), an optional `<module>.alpha`, and the old
 *   attention-processor keys `…attn1.processor.to_q_lora.down.weight` (UNet modules, no prefix); scale
 *   alpha / r, or 1 without alpha. ComfyUI's generic keys are of this dotted kind too, with kohya's and
 *   LyCORIS's tails (`diffusion_model.<module>.lora_down.weight`, `.hada_w1_a`, `.lokr_w1`, `.diff`, …),
 *   read as those formats define them.
 * Module names resolve against the base's tensor names (diffusionNames.ts); a name that does not is
 * bad input naming it.
 */
import { LensError } from '../errors';
import { TensorInfo } from '../../shared/safetensors/header';
import { bytesToF32 } from '../safetensors/reader';
import type { AdapterLayout } from './adapter';
import { Checkpoint } from './checkpoint';
import { AdaptedModule, assertModuleHoldsElements, Decomposition, DeltaRule, FactorForm, KroneckerRule, KronFactor, ruleName } from './deltaRule';
import { BaseModuleNames, kohyaMiss } from './diffusionNames';

export type DiffusionFormat = 'kohya' | 'diffusers';

const KOHYA_KEY = /^(lora_(?:unet|te\d?|transformer)_[^.]+)\.(.+)$/;
const PROCESSOR_KEY = /^(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/;
const DIFFUSERS_KEY = /^(.+?)\.(?:lora\.(down|up)\.weight|lora_linear_layer\.(down|up)\.weight|lora_(A|B)\.weight)$/;
const DIFFUSERS_ALPHA = /^(.+)\.alpha$/;
const CLONEOFSIMO_KEY = /^(unet|text_encoder):\d+:(up|down)$/;

/** kohya / LyCORIS tensor roles, by the key's tail after the module name. */
const KOHYA_ROLES: Record<string, string> = {
  'lora_down.weight': 'down',
  'lora_up.weight': 'up',
  'lora_mid.weight': 'mid',
  alpha: 'alpha',
  hada_w1_a: 'hada_w1_a',
  hada_w1_b: 'hada_w1_b',
  hada_w2_a: 'hada_w2_a',
  hada_w2_b: 'hada_w2_b',
  hada_t1: 'hada_t1',
  hada_t2: 'hada_t2',
  lokr_w1: 'lokr_w1',
  lokr_w1_a: 'lokr_w1_a',
  lokr_w1_b: 'lokr_w1_b',
  lokr_w2: 'lokr_w2',
  lokr_w2_a: 'lokr_w2_a',
  lokr_w2_b: 'lokr_w2_b',
  lokr_t2: 'lokr_t2',
  diff: 'diff',
  diff_b: 'diff_b',
  dora_scale: 'dora_scale',
  weight: 'ia3',
  on_input: 'on_input',
};

/**
 * A dotted module path with a kohya / LyCORIS tail (ComfyUI's generic keys). (IA)³'s bare `weight` and its
 * `on_input` are left out: a dotted `….weight` is any checkpoint's tensor.
 */
const DOTTED_KEY = new RegExp(
  `^(.+?)\\.(${Object.keys(KOHYA_ROLES)
    .filter((k) => !['weight', 'on_input', 'alpha'].includes(k))
    .map((k) => k.replace('.', '\\.'))
    .join('|')})$`,
);

/**
 * Parts LoRA Lens recognises but does not merge, and why (one line each). OFT rotates the base weight's
 * output rows by a Cayley transform of skew blocks, and kohya-ss, LyCORIS (diag-oft, BOFT) and PEFT differ
 * in the constraint, the rescale and the side R multiplies, with the same `oft_blocks` key: refused, not guessed.
 */
const OFT = 'OFT / BOFT (orthogonal finetuning: R = (I + Q)(I - Q)^-1 per block rotates the base weight, with a constraint and side that kohya-ss and LyCORIS define differently)';
const UNSUPPORTED: Record<string, string> = {
  oft_blocks: `${OFT}, saved as oft_blocks,`,
  oft_diag: `${OFT}, saved as oft_diag,`,
  rescale: `${OFT}, with its rescale,`,
  w_norm: 'LyCORIS norm tuning (w_norm / b_norm)',
  b_norm: 'LyCORIS norm tuning (w_norm / b_norm)',
};

/** The image-model adapter format of a bare .safetensors adapter, or undefined when it is none of them. */
export function diffusionFormat(c: Checkpoint): DiffusionFormat | undefined {
  const names = c.tensors.map((t) => t.name);
  if (names.some((n) => CLONEOFSIMO_KEY.test(n))) {
    throw new LensError(
      c.path,
      "cloneofsimo's lora format (keys like unet:0:up) numbers modules in the order its injection visited them, which no checkpoint's tensor names record; convert it with that tool to a named format first",
    );
  }
  if (names.length > 0 && names.every((n) => KOHYA_KEY.test(n))) return 'kohya';
  const dotted = (n: string): boolean => PROCESSOR_KEY.test(n) || DIFFUSERS_KEY.test(n) || DOTTED_KEY.test(n);
  if (names.some(dotted) && names.every((n) => dotted(n) || DIFFUSERS_ALPHA.test(n))) {
    return 'diffusers';
  }
  return undefined;
}

interface Parts {
  /** The module name as the adapter spells it. */
  name: string;
  roles: Map<string, TensorInfo>;
}

/** The adapter's tensors grouped by module, each under its role (down, up, alpha, hada_w1_a, …). */
function groupKeys(c: Checkpoint, format: DiffusionFormat): Parts[] {
  const file = c.files[0];
  const modules = new Map<string, Parts>();
  const put = (name: string, role: string, t: TensorInfo): void => {
    const p = modules.get(name) ?? { name, roles: new Map() };
    if (p.roles.has(role)) throw new LensError(file, `second ${role} for module ${name}`, t.name);
    p.roles.set(role, t);
    modules.set(name, p);
  };
  for (const t of c.tensors) {
    if (format === 'kohya') {
      const m = KOHYA_KEY.exec(t.name)!;
      const role = KOHYA_ROLES[m[2]];
      if (role === undefined) {
        const why = UNSUPPORTED[m[2]];
        throw new LensError(file, why ? `${why} is not merged by LoRA Lens yet` : `unknown kohya/LyCORIS tensor role '${m[2]}'`, t.name);
      }
      put(m[1], role, t);
      continue;
    }
    const p = PROCESSOR_KEY.exec(t.name);
    if (p) {
      put(`${p[1]}.${p[2] === 'to_out' ? 'to_out.0' : p[2]}`, p[3], t);
      continue;
    }
    const d = DIFFUSERS_KEY.exec(t.name);
    if (d) {
      const side = d[2] ?? d[3] ?? (d[4] === 'A' ? 'down' : 'up');
      put(d[1], side, t);
      continue;
    }
    const k = DOTTED_KEY.exec(t.name);
    if (k) {
      put(k[1], KOHYA_ROLES[k[2]], t);
      continue;
    }
    put(DIFFUSERS_ALPHA.exec(t.name)![1], 'alpha', t);
  }
  return [...modules.values()];
}

/** A scalar tensor's value (kohya's `.alpha`), read now: it sets the module's scale. */
function scalar(c: Checkpoint, t: TensorInfo): number {
  if (t.numel !== 1) throw new LensError(c.files[0], `alpha has ${t.numel} values, not one`, t.name);
  return bytesToF32(t, c.handles.readBytesSync(t, new Uint8Array(t.byteLength)), new Float32Array(1))[0];
}

/** alpha / r, with kohya's and LyCORIS's rule that a missing or zero alpha means alpha = r. */
function scaleOf(alpha: number | undefined, rank: number): number {
  return alpha === undefined || alpha === 0 ? 1 : alpha / rank;
}

/** Whether a flag tensor (LyCORIS's `on_input`, an integer or float scalar) is set: any non-zero byte. */
function flag(c: Checkpoint, t: TensorInfo): boolean {
  if (t.numel !== 1) throw new LensError(c.files[0], `on_input has ${t.numel} values, not one`, t.name);
  return c.handles.readBytesSync(t, new Uint8Array(t.byteLength)).some((b) => b !== 0);
}

/**
 * One module's delta rule and its ΔW shape [out, in] (a convolution's in counts in·kh·kw); for (IA)³ the
 * axis `on_input` states, if it is stored (the shape is then fitted to the base).
 */
function ruleOf(c: Checkpoint, p: Parts): { rule: DeltaRule; out: number; in: number; ia3Axis?: 'in' | 'out' } {
  const file = c.files[0];
  const r = p.roles;
  const alphaT = r.get('alpha');
  const alpha = alphaT ? scalar(c, alphaT) : undefined;
  const need = (role: string): TensorInfo => {
    const t = r.get(role);
    if (!t) throw new LensError(file, `module ${p.name} has ${[...r.keys()].filter((k) => k !== 'alpha').join(', ')} but no ${role}`, [...r.values()][0].name);
    return t;
  };
  const rows = (t: TensorInfo): number => t.shape[0] ?? 1;
  const cols = (t: TensorInfo): number => (t.shape.length === 0 ? 1 : t.numel / rows(t));
  const bad = (what: string, t: TensorInfo): never => {
    throw new LensError(file, `${what} (${[...r.values()].map((x) => `${x.name.slice(p.name.length + 1)} ${JSON.stringify(x.shape)}`).join(', ')})`, t.name);
  };
  if (r.has('down') || r.has('up') || r.has('mid')) {
    const A = need('down');
    const B = need('up');
    const rank = rows(A);
    // up is [out, r] or a 1x1 conv [out, r, 1, 1].
    if (A.shape.length < 2 || B.shape.length < 2 || cols(B) !== rank) bad('lora_down and lora_up do not form a rank-r product', A);
    const scale = scaleOf(alpha, rank);
    const mid = r.get('mid');
    if (!mid) return { rule: { kind: 'low-rank', factors: { form: 'plain', A, B }, rank, scale, r: rank, alpha: alpha ?? null }, out: rows(B), in: cols(A) };
    // Tucker: down a 1x1 conv [r, in, 1, 1], the core lora_mid [r, r, kh, kw], B = up.
    if (!isCore(mid, rank, rank) || A.shape.slice(2).some((k) => k !== 1)) bad('lora_down, lora_mid and lora_up do not form a Tucker product (down [r, in, 1, 1], mid [r, r, kh, kw])', mid);
    return { rule: { kind: 'low-rank', factors: { form: 'tucker', A, B, mid }, rank, scale, r: rank, alpha: alpha ?? null }, out: rows(B), in: A.shape[1] * kernelSize(mid) };
  }
  if (r.has('hada_w1_a') || r.has('hada_w1_b') || r.has('hada_w2_a') || r.has('hada_w2_b')) {
    const [w1a, w1b, w2a, w2b] = ['hada_w1_a', 'hada_w1_b', 'hada_w2_a', 'hada_w2_b'].map(need);
    const rank = rows(w1b);
    if (r.has('hada_t1') || r.has('hada_t2')) {
      // Tucker: w_a [r, out] and w_b [r, in] on the modes of the cores t [r, r, kh, kw].
      const [t1, t2] = ['hada_t1', 'hada_t2'].map(need);
      const fits = (t: TensorInfo, a: TensorInfo, b: TensorInfo): boolean => a.shape.length === 2 && b.shape.length === 2 && isCore(t, rows(a), rows(b));
      if (
        !fits(t1, w1a, w1b) ||
        !fits(t2, w2a, w2b) ||
        t1.shape.slice(2).join() !== t2.shape.slice(2).join() ||
        w1a.shape[1] !== w2a.shape[1] ||
        w1b.shape[1] !== w2b.shape[1]
      ) {
        bad('LoHa Tucker factors do not form two products of one shape (hada_t [r, r, kh, kw], hada_w_a [r, out], hada_w_b [r, in])', t1);
      }
      return { rule: { kind: 'hadamard', w1a, w1b, w2a, w2b, t1, t2, scale: scaleOf(alpha, rank) }, out: w1a.shape[1], in: w1b.shape[1] * kernelSize(t1) };
    }
    if (
      w1a.shape.length !== 2 ||
      w2a.shape.length !== 2 ||
      w1a.shape[1] !== rank ||
      w2a.shape[1] !== rows(w2b) ||
      rows(w1a) !== rows(w2a) ||
      cols(w1b) !== cols(w2b)
    ) {
      bad('LoHa factors do not form two products of one shape', w1a);
    }
    return { rule: { kind: 'hadamard', w1a, w1b, w2a, w2b, scale: scaleOf(alpha, rank) }, out: rows(w1a), in: cols(w1b) };
  }
  if ([...r.keys()].some((k) => k.startsWith('lokr_'))) {
    const factor = (n: 1 | 2): { f: KronFactor; shape: [number, number]; rank?: number } => {
      const full = r.get(`lokr_w${n}`);
      if (full && n === 2 && r.has('lokr_t2')) bad('lokr_t2 is a Tucker core of lokr_w2_a and lokr_w2_b, but lokr_w2 is whole', r.get('lokr_t2')!);
      if (full) return { f: { full }, shape: [rows(full), cols(full)] };
      const a = need(`lokr_w${n}_a`);
      const b = need(`lokr_w${n}_b`);
      const t = n === 2 ? r.get('lokr_t2') : undefined;
      if (t) {
        // Tucker: a [r, out2] and b [r, in2] on the modes of the core t [r, r, kh, kw].
        if (a.shape.length !== 2 || b.shape.length !== 2 || !isCore(t, rows(a), rows(b))) bad('lokr_w2_a, lokr_t2 and lokr_w2_b do not form a Tucker product (t2 [r, r, kh, kw], w2_a [r, out], w2_b [r, in])', t);
        return { f: { a, b, t }, shape: [a.shape[1], b.shape[1] * kernelSize(t)], rank: rows(b) };
      }
      if (a.shape.length !== 2 || a.shape[1] !== rows(b)) bad(`lokr_w${n}_a and lokr_w${n}_b do not form a product`, a);
      return { f: { a, b }, shape: [rows(a), cols(b)], rank: rows(b) };
    };
    const w1 = factor(1);
    const w2 = factor(2);
    const rank = w1.rank ?? w2.rank;
    const scale = rank === undefined ? 1 : scaleOf(alpha, rank);
    return { rule: { kind: 'kronecker', w1: w1.f, w2: w2.f, shape1: w1.shape, shape2: w2.shape, scale }, out: w1.shape[0] * w2.shape[0], in: w1.shape[1] * w2.shape[1] };
  }
  if (r.has('ia3')) {
    // (IA)³: one value per output feature, or per input channel (`on_input`); the other axis is the base's.
    const vector = r.get('ia3')!;
    const onInput = r.get('on_input');
    const axis = onInput === undefined ? undefined : flag(c, onInput) ? 'in' : 'out';
    if ([...r.keys()].some((k) => k !== 'ia3' && k !== 'on_input' && k !== 'alpha')) bad(`module ${p.name} mixes (IA)³'s weight with other factors`, vector);
    return { rule: { kind: 'scale', vector, axis: axis ?? 'out', offsetOne: true }, out: vector.numel, in: 1, ia3Axis: axis };
  }
  if (r.has('diff')) {
    const diff = r.get('diff')!;
    return { rule: { kind: 'dense', diff, scale: 1 }, out: rows(diff), in: cols(diff) };
  }
  return bad(`module ${p.name} has no delta`, [...r.values()][0]);
}

/** Where a diffusers-format module name is in the base as it is spelled: as it is, without its component, or under `unet.`. */
function diffusersTarget(base: Checkpoint, name: string): TensorInfo | undefined {
  const direct = base.byName.get(`${name}.weight`);
  if (direct) return direct;
  const dot = name.indexOf('.');
  const bare = dot > 0 ? base.byName.get(`${name.slice(dot + 1)}.weight`) : undefined;
  if (bare) return bare;
  // The old attention-processor format names UNet modules bare; a pipeline prefixes them `unet.`.
  return base.components?.some((c) => c.name === 'unet') ? base.byName.get(`unet.${name}.weight`) : undefined;
}

/** The module path of a diffusers-format name as PEFT would write it under its component (`unet.` for bare UNet names; ComfyUI's `diffusion_model.` kept). */
function diffusersModule(name: string): string {
  return /^(unet|text_encoder(_\d)?|transformer|diffusion_model)\./.test(name) ? name : `unet.${name}`;
}

/** A module fitted to a row part of a fused base tensor, waiting for the other parts stacked with it. */
interface PartModule {
  name: string;
  part: number;
  parts: number;
  module: AdaptedModule;
  diffB?: TensorInfo;
}

/**
 * Reads an image-model adapter file into modules, fitted to `base` when given: each module's base tensor
 * found by name, its shape checked (a convolution seen as [out, in·kh·kw]), a `diff_b` as its own dense
 * module on the bias. Modules that are row parts of one fused base tensor (q, k, v in OpenCLIP's
 * in_proj; diffusers FLUX names on a BFL file) become one stacked module on it; the other way round, a
 * module on a fused BFL projection splits by rows onto the diffusers modules stacked in it (splitRows).
 */
export function diffusionLayout(adapter: Checkpoint, format: DiffusionFormat, base?: Checkpoint): AdapterLayout {
  const names = base ? new BaseModuleNames(base) : undefined;
  const modules: AdaptedModule[] = [];
  const stacks = new Map<string, PartModule[]>();
  for (const p of groupKeys(adapter, format)) {
    const diffB = p.roles.get('diff_b');
    const doraScale = p.roles.get('dora_scale');
    p.roles.delete('diff_b');
    p.roles.delete('dora_scale');
    assertModuleHoldsElements(adapter.files[0], p.name, [...p.roles.values(), ...(diffB ? [diffB] : []), ...(doraScale ? [doraScale] : [])]);
    const fitted = ruleOf(adapter, p);
    const { rule, ia3Axis } = fitted;
    let { out, in: inn } = fitted;
    const tensors = [...p.roles.values(), ...(doraScale ? [doraScale] : [])];
    let module = format === 'kohya' ? p.name : diffusersModule(p.name);
    let target: TensorInfo | undefined;
    let bias: TensorInfo | undefined;
    if (base && names) {
      const direct = format === 'diffusers' ? diffusersTarget(base, p.name) : undefined;
      const key = format === 'kohya' ? p.name : module;
      const m = direct ? direct.name.replace(/\.weight$/, '') : names.module(key);
      const fused = m === undefined ? names.fused(key) : undefined;
      if (fused) {
        const whole: AdaptedModule = { module: p.name, rule, tensors, out, in: inn, transpose: false, embedding: false };
        if (doraScale) {
          // Norms per output row split with the rows; per input channel they span every stacked module.
          whole.decompose = decompositionOf(adapter, p.name, rule, doraScale, out, inn, undefined);
          if (whole.decompose.axis !== 'out') {
            throw new LensError(adapter.path, `fused FLUX projection ${p.name} has a dora_scale per input channel, whose norms span the rows of ${fused.join(', ')} together: its split onto them is not supported`, doraScale.name);
          }
        }
        const targets = fused.map((f) => ({ module: f, weight: names.tensor(f, 'weight')!, bias: diffB ? names.tensor(f, 'bias') : undefined }));
        modules.push(...splitRows(adapter, p.name, whole, targets, diffB));
        continue;
      }
      const part = m === undefined ? names.part(key) : undefined;
      if (part) {
        if (doraScale || rule.kind === 'scale') {
          throw new LensError(adapter.path, `${p.name} is ${doraScale ? 'a weight-decomposed (dora_scale)' : 'an (IA)³'} module on rows of the fused base tensor ${names.tensor(part.module, 'weight')!.name}, whose norms and scales span other modules' rows: not supported`, (doraScale ?? tensors[0]).name);
        }
        const list = stacks.get(part.module) ?? [];
        const own: AdaptedModule = { module: p.name, rule, tensors, out, in: inn, transpose: false, embedding: false };
        list.push({ name: p.name, part: part.part, parts: part.parts, module: own, diffB });
        stacks.set(part.module, list);
        continue;
      }
      if (m === null || part === null) throw new LensError(base.path, `${format} module '${p.name}' matches two modules of the base`, p.name);
      if (m === undefined) {
        throw new LensError(
          adapter.path,
          format === 'kohya' ? kohyaMiss(p.name, base.path) : `adapter targets module '${p.name}' but the base ${base.path} has no tensor '${p.name}.weight' (in any layout of it)`,
          format === 'kohya' ? p.name : `${p.name}.weight`,
        );
      }
      module = m;
      target = direct ?? names.tensor(m, 'weight');
      bias = diffB ? names.tensor(m, 'bias') : undefined;
      if (rule.kind === 'scale') {
        [out, inn] = [rows(target!), target!.numel / rows(target!)];
        rule.axis = ia3Axis ?? (rule.vector.numel === out ? 'out' : 'in');
        const want = rule.axis === 'out' ? out : (target!.shape[1] ?? 1);
        if (rule.vector.numel !== want) {
          throw new LensError(adapter.path, `(IA)³ weight of ${rule.vector.numel} values does not fit the ${rule.axis === 'out' ? 'output' : 'input'} features (${want}) of base tensor of shape ${JSON.stringify(target!.shape)}`, rule.vector.name);
        }
      } else if (rows(target!) !== out || target!.numel !== out * inn) {
        throw new LensError(adapter.path, `delta of shape [${out}, ${inn}] does not fit base tensor of shape ${JSON.stringify(target!.shape)}`, target!.name);
      }
    }
    const decompose = doraScale ? decompositionOf(adapter, p.name, rule, doraScale, out, inn, target) : undefined;
    modules.push({ module, rule, tensors, out, in: inn, base: target, transpose: false, embedding: false, ...(decompose ? { decompose } : {}) });
    if (diffB) {
      if (base && (!bias || bias.numel !== diffB.numel)) {
        throw new LensError(adapter.path, `diff_b of ${diffB.numel} values has no bias of that size in the base`, diffB.name);
      }
      modules.push(biasModule(`${module}.bias`, diffB, bias));
    }
  }
  for (const [fused, parts] of stacks) modules.push(...stacked(adapter, fused, parts, names!));
  return { modules, replacements: [], warnings: [] };
}

/** A full `diff_b`: a dense module on the bias. */
function biasModule(module: string, diffB: TensorInfo, bias: TensorInfo | undefined): AdaptedModule {
  return { module, rule: { kind: 'dense', diff: diffB, scale: 1 }, tensors: [diffB], out: diffB.numel, in: 1, base: bias, transpose: false, embedding: false };
}

/**
 * The modules that are row parts of one fused base module, as one stacked module on its weight (and one on
 * its bias for their diff_b): q, k and v each take `in` rows (the model width), in that order, and a
 * fourth part (FLUX's proj_mlp in linear1) the rows after them.
 */
function stacked(adapter: Checkpoint, fused: string, parts: PartModule[], names: BaseModuleNames): AdaptedModule[] {
  const weight = names.tensor(fused, 'weight')!;
  const total = rows(weight);
  const cols = weight.numel / total;
  const n = parts[0].parts;
  const range = (i: number): [number, number] => (i < 3 ? [i * cols, (i + 1) * cols] : [3 * cols, total]);
  if (n < 3 || n > 4 || (n === 3 && total !== 3 * cols) || (n === 4 && total <= 3 * cols)) {
    throw new LensError(adapter.path, `base tensor of shape ${JSON.stringify(weight.shape)} does not stack ${n} projections of width ${cols}`, weight.name);
  }
  const seen = new Set<number>();
  for (const p of parts) {
    const [r0, r1] = range(p.part);
    if (seen.has(p.part)) throw new LensError(adapter.path, `two adapter modules target rows ${r0}..${r1} of ${weight.name}`, p.name);
    seen.add(p.part);
    if (p.module.out !== r1 - r0 || p.module.in !== cols) {
      throw new LensError(adapter.path, `${p.name}: delta of shape [${p.module.out}, ${p.module.in}] does not fit rows ${r0}..${r1} of base tensor ${weight.name} ${JSON.stringify(weight.shape)}`, p.name);
    }
  }
  parts.sort((a, b) => a.part - b.part);
  const stack = (module: string, t: TensorInfo, of: (p: PartModule) => AdaptedModule | undefined, rowLength: number): AdaptedModule => {
    const members = parts.flatMap((p) => {
      const m = of(p);
      return m ? [{ offset: range(p.part)[0] * rowLength, module: m, source: p.name }] : [];
    });
    return { module, rule: { kind: 'stacked', parts: members }, tensors: members.flatMap((m) => m.module.tensors), out: rows(t), in: t.numel / rows(t), base: t, transpose: false, embedding: false };
  };
  const out = [stack(fused, weight, (p) => ({ ...p.module, module: `${fused}[${range(p.part).join(':')}]` }), cols)];
  if (parts.some((p) => p.diffB)) {
    const bias = names.tensor(fused, 'bias');
    const bad = parts.find((p) => p.diffB && (!bias || p.diffB.numel !== p.module.out));
    if (bad || !bias) throw new LensError(adapter.path, `diff_b of ${bad?.diffB?.numel} values has no bias rows of that size in ${fused}`, bad?.diffB?.name);
    out.push(stack(bias.name, bias, (p) => p.diffB && biasModule(`${fused}.bias[${range(p.part).join(':')}]`, p.diffB, undefined), 1));
  }
  return out;
}

/** A stacked base module a fused FLUX projection splits onto: its weight, and its bias where a diff_b needs it. */
interface SplitTarget {
  module: string;
  weight: TensorInfo;
  bias?: TensorInfo;
}

/**
 * A module on a fused FLUX projection (BFL `img_attn.qkv`, `linear1`) as one module per base module stacked
 * in it: each takes its row block of ΔW, which is a delta of the same kind whose output-side factors keep
 * those rows (contiguous bytes of the file) and whose other factors are shared: lora_up's rows (B of
 * s · B @ A), LoHa's hada_w1_a and hada_w2_a, a full diff's rows (and diff_b's); a LoKr keeps its factors
 * and takes its rows of their Kronecker product (KroneckerRule.row0). Scales are unchanged;
 * a weight decomposition per output row (LyCORIS `wd_on_output`) takes its rows of dora_scale.
 */
function splitRows(adapter: Checkpoint, name: string, fused: AdaptedModule, targets: SplitTarget[], diffB: TensorInfo | undefined): AdaptedModule[] {
  const file = adapter.files[0];
  const rule = fused.rule;
  const onto = targets.map((t) => t.module).join(', ');
  const total = targets.reduce((a, t) => a + rows(t.weight), 0);
  const held = outputFactors(rule);
  if (held === undefined) {
    throw new LensError(file, `fused FLUX projection ${name} is ${ruleName(fused)}, whose row blocks are not deltas of its kind: its split onto ${onto} is not supported`, fused.tensors[0].name);
  }
  if (total !== fused.out || targets.some((t) => t.weight.numel !== rows(t.weight) * fused.in)) {
    throw new LensError(file, `fused delta of shape [${fused.out}, ${fused.in}] does not split onto ${targets.map((t) => `${t.weight.name} ${JSON.stringify(t.weight.shape)}`).join(', ')}`, (held[0] ?? fused.tensors[0]).name);
  }
  let row0 = 0;
  return targets.flatMap((t) => {
    const n = rows(t.weight);
    const sliced = new Map<TensorInfo, TensorInfo>();
    const slice = (x: TensorInfo): TensorInfo => {
      const y = rowSlice(x, row0, n);
      sliced.set(x, y);
      return y;
    };
    let part: DeltaRule;
    if (rule.kind === 'low-rank') part = { ...rule, factors: { ...rule.factors, B: slice((rule.factors as { B: TensorInfo }).B) } as FactorForm };
    else if (rule.kind === 'hadamard') part = { ...rule, w1a: slice(rule.w1a), w2a: slice(rule.w2a) };
    else if (rule.kind === 'dense') part = { ...rule, diff: slice(rule.diff) };
    // Kronecker: kron(w1, w2)'s rows come in runs of w2's rows, which need not align with the stacked modules: the factors stay whole.
    else part = { ...(rule as KroneckerRule), row0 };
    // A decomposition per output row (the only one splitRows is given) takes its rows of dora_scale.
    const decompose = fused.decompose && { ...fused.decompose, magnitude: slice(fused.decompose.magnitude) };
    const tensors = fused.tensors.map((x) => sliced.get(x) ?? x);
    const own: AdaptedModule = { module: t.module, rule: part, tensors, out: n, in: fused.in, base: t.weight, transpose: false, embedding: false };
    if (decompose) own.decompose = decompose;
    const bias = diffB && biasPart(file, name, diffB, row0, n, t);
    row0 += n;
    return bias ? [own, bias] : [own];
  });
}

/** The rows of a fused diff_b that a stacked module's bias takes, as a dense module on it. */
function biasPart(file: string, name: string, diffB: TensorInfo, row0: number, n: number, t: SplitTarget): AdaptedModule {
  if (!t.bias || t.bias.numel !== n || diffB.numel !== diffB.shape[0]) throw new LensError(file, `diff_b of fused FLUX projection ${name} has no bias of ${n} values in ${t.module} to take its rows ${row0}..${row0 + n}`, diffB.name);
  return biasModule(`${t.module}.bias`, rowSlice(diffB, row0, n), t.bias);
}

/** The adapter tensors that hold ΔW's rows (each row of ΔW one row of each; a LoKr's rows are its row0), or undefined for a rule whose row blocks are not of its kind. */
function outputFactors(rule: DeltaRule): TensorInfo[] | undefined {
  switch (rule.kind) {
    case 'low-rank':
      return rule.factors.form === 'plain' || rule.factors.form === 'tucker' ? [rule.factors.B] : undefined;
    case 'hadamard':
      // Tucker LoHa stores hada_w*_a [r, out]: its rows are not ΔW's.
      return rule.t1 ? undefined : [rule.w1a, rule.w2a];
    case 'kronecker':
      return [];
    case 'dense':
      return [rule.diff];
    default:
      return undefined;
  }
}

/** Rows [row0, row0 + n) of a tensor stored row-major: a view of its contiguous bytes. */
function rowSlice(t: TensorInfo, row0: number, n: number): TensorInfo {
  const rowBytes = t.byteLength / rows(t);
  return { ...t, shape: [n, ...t.shape.slice(1)], numel: (t.numel / rows(t)) * n, offset: t.offset + row0 * rowBytes, byteLength: n * rowBytes };
}

/**
 * LyCORIS's weight decomposition of a module: `dora_scale` [out, 1, …] normalises per output feature
 * (`wd_on_output`), [1, in, …] per input channel (the default before it), as ComfyUI tells them apart
 * (the first dimension equal to the weight's out); eps fp32's machine epsilon, as LyCORIS adds it.
 */
function decompositionOf(
  adapter: Checkpoint,
  name: string,
  rule: DeltaRule,
  t: TensorInfo,
  out: number,
  inn: number,
  target: TensorInfo | undefined,
): Decomposition {
  if (rule.kind === 'scale' || rule.kind === 'dense') throw new LensError(adapter.files[0], `dora_scale on ${rule.kind === 'scale' ? '(IA)³' : 'a full diff'} (module ${name}) is not a LyCORIS weight decomposition`, t.name);
  const axis = t.shape[0] === out && t.numel === out ? 'out' : 'in';
  const fits = axis === 'out' || (inn % t.numel === 0 && (!target || target.shape[1] === t.numel));
  if (!fits) {
    throw new LensError(adapter.files[0], `dora_scale of shape ${JSON.stringify(t.shape)} fits neither the ${out} output features nor the input channels of the [${out}, ${inn}] weight`, t.name);
  }
  return { magnitude: t, axis, eps: FP32_EPS };
}

/** torch.finfo(torch.float32).eps. */
const FP32_EPS = 2 ** -23;

function rows(t: TensorInfo): number {
  return t.shape[0] ?? 1;
}

/** Whether `t` is a Tucker core [r1, r2, kh, kw] (a convolution's kernel dimensions after the two ranks). */
function isCore(t: TensorInfo, r1: number, r2: number): boolean {
  return t.shape.length > 2 && t.shape[0] === r1 && t.shape[1] === r2;
}

/** kh·kw of a Tucker core. */
function kernelSize(t: TensorInfo): number {
  return t.shape.slice(2).reduce((a, b) => a * b, 1);
}
