/**
 * The engine's one description of what an adapter does to its base: for each base tensor, a delta rule.
 * Every adapter format (PEFT's methods, mlx-lm, and the diffusion formats) is read into it, and every
 * job (merge, compare, precision, validate, census, estimate, UNMERGE, convert) works from it alone.
 *
 * Orientation: ΔW is [out, in], like a Linear weight, whatever the format stores; `transpose` on the
 * module says the base stores that weight [in, out] (GPT-2 Conv1D, embeddings), so ΔW lands transposed.
 *
 * The rules, each with its formula from the format's own source:
 * - `low-rank`: ΔW = scale · B @ A with fp32 factors A [rank, in] and B [out, rank], formed from the
 *   adapter's tensors as `factors` says (see FactorForm). This is the factor form B' / A' the low-rank
 *   toolbox (spectrum, resize, UNMERGE) works on; `magnitude` makes it DoRA: W' = m / ||W + ΔW||_row · (W + ΔW).
 * - `hadamard` (LoHa, PEFT `hada_*`, LyCORIS): ΔW = ((w1a @ w1b) ⊙ (w2a @ w2b)) · scale; with Tucker
 *   cores (a convolution) each product is the core t [r, r, kh, kw] contracted with w_a [r, out] on its
 *   first mode and w_b [r, in] on its second.
 * - `kronecker` (LoKr, PEFT `lokr_*`, LyCORIS): ΔW = kron(w1, w2) · scale, w1 = w1a @ w1b and
 *   w2 = w2a @ w2b where factored (w2 a Tucker product where a core `lokr_t2` is given); `row0` takes a
 *   row block of it.
 *
 * Tucker (LyCORIS `use_tucker` on a kh×kw convolution): P[o, c, k] = Σ_{i,j} w_a[i, o] · t[i, j, k] · w_b[j, c],
 * LoCon's `lora_mid` likewise between `lora_up` [out, r] and `lora_down` [r, in]; seen as [out, in·kh·kw]
 * it is the rank-r product B @ A with A[i, c·K + k] = Σ_j t[i, j, k] · w_b[j, c] (K = kh·kw).
 * - `dense` (LyCORIS full `diff`; PEFT `lora_bias` on the base's bias): ΔW = diff · scale, stored like the
 *   base tensor, rounded as torch does it (the fp32 product with the fp32 scale).
 * - `scale` (IA³): not additive: W' = W ⊙ l, l scaling the output features (rows of ΔW's orientation),
 *   the input features (`feedforward_modules`; a convolution's input channel spans kh·kw columns), or
 *   every element (a 1-D bias). LyCORIS stores l − 1 (`weight`, W' = W ⊙ (1 + weight)).
 * - `stacked`: several modules' deltas stacked by rows into one fused base tensor (OpenCLIP's
 *   `in_proj_weight` holds q, k and v; BFL FLUX's `img_attn.qkv` and `linear1` likewise): each part's
 *   delta, computed as its own rule computes it, lands on its rows; rows no part adapts are unchanged.
 * Weight decomposition (LyCORIS `dora_scale`, on any additive rule): W' = (W + ΔW) · m / (||W + ΔW|| + eps),
 * see Decomposition; PEFT's DoRA is the low-rank rule's `magnitude`.
 * A full replacement (modules_to_save, saved biases) is not a rule: see Replacement in adapter.ts.
 */
import { TensorInfo } from '../../shared/safetensors/header';
import { LensError } from '../errors';

/**
 * How the fp32 factors A [rank, in] and B [out, rank] of a low-rank rule are formed. Each is exact: the
 * fp32 values are what the format's own code multiplies (its elementwise products rounded to fp32, as
 * torch forms them before the matmul).
 */
export type FactorForm =
  /** PEFT LoRA, kohya / diffusers up-down: A and B as stored. */
  | { form: 'plain'; A: TensorInfo; B: TensorInfo }
  /** mlx-lm: `lora_a` [in, rank] and `lora_b` [rank, out], so A = lora_aᵀ and B = lora_bᵀ. */
  | { form: 'transposed'; a: TensorInfo; b: TensorInfo }
  /** AdaLoRA (PEFT SVDLinear): A ⊙ E with E [rank, 1] the singular values, B as stored. */
  | { form: 'svd'; A: TensorInfo; B: TensorInfo; E: TensorInfo }
  /**
   * VeRA: A = diag(λ_d) · vera_A[:, :in] and B = diag(λ_b) · vera_B[:out, :], slices of the matrices
   * shared by every module (`base_model.vera_A` [rank, max in], `base_model.vera_B` [max out, rank]).
   */
  | { form: 'vera'; A: TensorInfo; B: TensorInfo; lambdaB: TensorInfo; lambdaD: TensorInfo }
  /**
   * Old PEFT MergedLinear (fused query_key_value): `lora_A` [rank, in] with rank = r · enabled slices;
   * `lora_B` a grouped Conv1d weight [out of the enabled slices, r, 1]. B is block-diagonal: output
   * slice s (of `enable.length` equal slices) takes group g's columns when it is the g-th enabled one,
   * and no delta when it is disabled.
   */
  | { form: 'grouped'; A: TensorInfo; B: TensorInfo; enable: boolean[] }
  /**
   * LyCORIS LoCon with a Tucker core: B = `lora_up` [out, r(, 1, 1)], and A [r, in·K] the core `lora_mid`
   * [r, r, kh, kw] contracted with `lora_down` [r, in(, 1, 1)] (summed in float64, rounded once).
   */
  | { form: 'tucker'; A: TensorInfo; B: TensorInfo; mid: TensorInfo };

export interface LowRankRule {
  kind: 'low-rank';
  factors: FactorForm;
  /** Columns of B and rows of A (MergedLinear: r times the enabled slices). */
  rank: number;
  scale: number;
  /** r and alpha as the config states them (null where the format states none: MLX states the scale). */
  r: number | null;
  alpha: number | null;
  /**
   * AdaLoRA: PEFT's `(B @ (A ⊙ E)) * scaling / (ranknum + 1e-5)` rounds twice, so the exact delta is
   * f(f(f(B @ A) · f(alpha)) / divisor) with divisor = f(ranknum + f(1e-5)); `scale` = alpha / divisor
   * is that value unrounded, for what does not need PEFT's bits (norms, spectra).
   */
  divisor?: number;
  /** DoRA's magnitude, one value per output feature. */
  magnitude?: TensorInfo;
  /**
   * PEFT's `lora_bias`: lora_B's bias, which a merge adds to the base layer's bias times the scale
   * (`base.bias += lora_B.bias * scaling`). Fitted to a base, it becomes a module of its own on the bias.
   */
  bias?: TensorInfo;
}

export interface HadamardRule {
  kind: 'hadamard';
  /** [out, r] and [r, in]; with Tucker cores [r, out] and [r, in] (LyCORIS's 1-mode and 2-mode factors). */
  w1a: TensorInfo;
  w1b: TensorInfo;
  w2a: TensorInfo;
  w2b: TensorInfo;
  /** Tucker cores [r, r, kh, kw] of the two products (LyCORIS `hada_t1`, `hada_t2`). */
  t1?: TensorInfo;
  t2?: TensorInfo;
  scale: number;
}

/**
 * One Kronecker factor: a full matrix, a pair whose product it is, or (`t`) a Tucker product of the core
 * t [r, r, kh, kw] with a [r, out2] and b [r, in2], seen as [out2, in2·kh·kw].
 */
export type KronFactor = { full: TensorInfo } | { a: TensorInfo; b: TensorInfo; t?: TensorInfo };

export interface KroneckerRule {
  kind: 'kronecker';
  w1: KronFactor;
  w2: KronFactor;
  /** Shapes of w1 [out1, in1] and w2 [out2, in2]: ΔW[i1·out2 + i2, j1·in2 + j2] = w1[i1, j1] · w2[i2, j2] · scale. */
  shape1: [number, number];
  shape2: [number, number];
  scale: number;
  /**
   * ΔW is rows row0 .. row0 + out of kron(w1, w2) · scale: a diffusers module's row block of a LoKr on a
   * fused BFL FLUX projection (w2's runs of rows need not align with the modules stacked in it).
   */
  row0?: number;
}

export interface DenseRule {
  kind: 'dense';
  /** Stored with the base weight's shape and layout. */
  diff: TensorInfo;
  scale: number;
}

export interface ScaleRule {
  kind: 'scale';
  vector: TensorInfo;
  /** Which features of ΔW's [out, in] orientation the vector scales; `all` for a 1-D tensor (a bias). */
  axis: 'out' | 'in' | 'all';
  /** The vector holds l − 1 (LyCORIS (IA)³, initialised to zero): l = f(1 + vector). */
  offsetOne?: boolean;
}

/** One module's delta on a range of a fused base tensor. */
export interface StackedPart {
  /** The base tensor's element where the part's rows begin (its first row times the row length). */
  offset: number;
  /** The part's own module: an additive rule, its ΔW [out, in] (no base of its own, never transposed). */
  module: AdaptedModule;
  /** The module as the adapter names it (`transformer.transformer_blocks.0.attn.to_q`). */
  source: string;
}

export interface StackedRule {
  kind: 'stacked';
  parts: StackedPart[];
}

export type DeltaRule = LowRankRule | HadamardRule | KroneckerRule | DenseRule | ScaleRule | StackedRule;

/** What one adapter module does to one base tensor. */
export interface AdaptedModule {
  /** Module path inside the model, without any wrapper prefix (PEFT's `base_model.model.`). */
  module: string;
  rule: DeltaRule;
  /** Every adapter tensor the rule reads (shared VeRA matrices included). */
  tensors: TensorInfo[];
  /** Rows and columns of ΔW ([out, in]); for a 1-D target, out = its length and in = 1. */
  out: number;
  in: number;
  /** The base tensor the rule applies to (when a base was given). */
  base?: TensorInfo;
  /** The base stores ΔW's orientation transposed (Conv1D, embeddings). */
  transpose: boolean;
  embedding: boolean;
  /** LyCORIS weight decomposition of the rule's W + ΔW (`dora_scale`). */
  decompose?: Decomposition;
}

/**
 * DoRA's weight decomposition: W' = (W + ΔW) · m / (||W + ΔW|| + eps), the norm per output feature (a row
 * of [out, in·kh·kw]) or per input channel (its kh·kw columns, over every row), m one value per feature.
 */
export interface Decomposition {
  magnitude: TensorInfo;
  axis: 'out' | 'in';
  /** Added to each fp32 norm: LyCORIS adds fp32's machine epsilon (2⁻²³), PEFT nothing. */
  eps: number;
}

/** A module's weight decomposition, LyCORIS's or PEFT's DoRA (its `magnitude`, per output feature, no eps). */
export function decomposition(m: AdaptedModule): Decomposition | undefined {
  if (m.decompose) return m.decompose;
  if (m.rule.kind === 'low-rank' && m.rule.magnitude) return { magnitude: m.rule.magnitude, axis: 'out', eps: 0 };
  return undefined;
}

/** Whether the merged tensor needs the base weight beyond W + ΔW (DoRA's norms, IA³'s scaling). */
export function needsBase(m: AdaptedModule): boolean {
  return m.rule.kind === 'scale' || wholeTensor(m);
}

/** Whether the rule needs the whole base tensor at once (DoRA's norms span it). */
export function wholeTensor(m: AdaptedModule): boolean {
  return decomposition(m) !== undefined;
}

/** The factor tensors that hold a module's low-rank delta (for "all-zero lora_B" checks), by role. */
export function outputFactor(m: AdaptedModule): TensorInfo | undefined {
  if (m.rule.kind !== 'low-rank') return undefined;
  const f = m.rule.factors;
  return f.form === 'transposed' ? f.b : f.form === 'vera' ? f.lambdaB : f.B;
}

/**
 * Whether an adapter tensor's stored bytes were seen already (`seen` keeps them): a fused FLUX projection
 * split onto its stacked modules shares its input-side factors among them, and its row slices are disjoint.
 */
export function seenBefore(t: TensorInfo, seen: Set<string>): boolean {
  const key = `${t.file}:${t.offset}:${t.byteLength}`;
  if (seen.has(key)) return true;
  seen.add(key);
  return false;
}

/**
 * The rank a module's method states: a LoRA's rank, a LoHa's inner dimension, a LoKr's factored side;
 * undefined where it states none (a whole-factor LoKr, a full diff, an (IA)³ vector, stacked parts).
 */
export function statedRank(m: AdaptedModule): number | undefined {
  const r = m.rule;
  if (r.kind === 'low-rank') return r.rank;
  if (r.kind === 'hadamard') return r.w1b.shape[0];
  if (r.kind === 'kronecker') return 'b' in r.w1 ? r.w1.b.shape[0] : 'b' in r.w2 ? r.w2.b.shape[0] : undefined;
  return undefined;
}

/** What a stacked module is, in words naming the fused base tensor and the adapter modules stacked in it. */
export function stackedParts(m: AdaptedModule, r: StackedRule): string {
  return `${m.module} is one fused base tensor onto whose rows ${r.parts.length} adapter modules (${r.parts.map((p) => p.source).join(', ')}) each add their own delta`;
}

/** A short human name of the rule, for reports. */
export function ruleName(m: AdaptedModule): string {
  if (!m.decompose) return baseRuleName(m);
  const name = baseRuleName(m);
  return name === 'LoRA' ? 'DoRA' : `DoRA (${name})`;
}

function baseRuleName(m: AdaptedModule): string {
  const r = m.rule;
  switch (r.kind) {
    case 'low-rank':
      return r.magnitude ? 'DoRA' : { plain: 'LoRA', transposed: 'LoRA (MLX)', svd: 'AdaLoRA', vera: 'VeRA', grouped: 'LoRA (MergedLinear)', tucker: 'LoCon (Tucker)' }[r.factors.form];
    case 'hadamard':
      return r.t1 ? 'LoHa (Tucker)' : 'LoHa';
    case 'kronecker':
      return 'a' in r.w2 && r.w2.t ? 'LoKr (Tucker)' : 'LoKr';
    case 'dense':
      return 'full diff';
    case 'scale':
      return 'IA³';
    case 'stacked':
      return `${[...new Set(r.parts.map((p) => ruleName(p.module)))].join(' + ')} (${r.parts.length} stacked)`;
  }
}

/**
 * A module whose factors hold no element (rank 0: lora_A [0, in]) adapts nothing: bad input naming it,
 * as PEFT refuses r = 0, never a module merged as if it changed its tensor.
 */
export function assertModuleHoldsElements(file: string, module: string, tensors: TensorInfo[]): void {
  const empty = tensors.find((t) => t.numel === 0);
  if (empty) throw new LensError(file, `module '${module}' adapts nothing: its factor of shape ${JSON.stringify(empty.shape)} holds no element (rank 0; PEFT refuses r = 0)`, empty.name);
}
