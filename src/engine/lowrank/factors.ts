/**
 * An adapter's deltas in factor form for the low-rank toolbox: each module's ΔW = L·Rᵀ in float64, exactly,
 * from the engine's one description of adapter modules (deltaRule.ts), whatever the format (PEFT folders
 * and their pickles, mlx-lm, kohya / LyCORIS / diffusers files), whatever the delta's storage orientation
 * (a transposed delta has the same singular values and best approximations):
 * - low-rank (LoRA, rsLoRA, AdaLoRA, VeRA, mlx-lm, MergedLinear, LoCon with a Tucker core): L = s·B, R = Aᵀ
 *   with A and B the fp32 factors the engine merges with (tensors/delta.ts `prepare`);
 * - LoHa, s·(B₁A₁) ⊙ (B₂A₂): the face-splitting (row-wise Khatri–Rao) product, L[i, (a, b)] = s·B₁[i, a]·B₂[i, b]
 *   and R[j, (a, b)] = A₁[a, j]·A₂[b, j], rank r₁·r₂;
 * - LoKr, s·kron(W₁, W₂): L = s·kron(L₁, L₂), R = kron(R₁, R₂) from each factor's own form (a product a·b,
 *   a Tucker product, or a whole matrix W = W·I), rank p₁·p₂; its singular values are all σᵢ(W₁)·σⱼ(W₂)
 *   (kronSingularValues), so its spectrum needs only the two factors';
 * - a full `diff` D: L = D, R = I (or L = I, R = Dᵀ): rank min(out, in), done only up to DENSE_MAX_SIDE.
 * Not here: (IA)³, which scales the base weight (its delta needs the base), and larger full diffs; they
 * are named with the reason.
 */
import { adapterLayout, AdapterLayout } from '../checkpoint/adapter';
import { Checkpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { AdaptedModule, decomposition, KronFactor, LowRankRule, ruleName, wholeTensor } from '../checkpoint/deltaRule';
import { diffusionFormat, DiffusionFormat } from '../checkpoint/diffusionAdapter';
import { LensError } from '../errors';
import { fromRows, Mat, transpose, zeros } from '../linalg/dense';
import { productSingularValues } from '../linalg/lowrank';
import { bytesToF32 } from '../safetensors/reader';
import { prepare, tuckerCore } from '../tensors/delta';
import { TensorInfo } from '../../shared/safetensors/header';

/** Full diffs up to this many rows or columns (the smaller side) get an exact dense SVD. */
export const DENSE_MAX_SIDE = 512;

export interface FactorAdapter {
  checkpoint: Checkpoint;
  layout: AdapterLayout;
  /** A PEFT-style folder (adapter_config.json: PEFT's methods, mlx-lm), or a kohya / LyCORIS / diffusers file. */
  source: 'peft' | DiffusionFormat;
  /** The modules with a low-rank rule (B·A). */
  lowRank: AdaptedModule[];
  /** Every module with an exact factor form: the low-rank ones, LoHa, LoKr and affordable full diffs. */
  factored: AdaptedModule[];
  /** The others, by rule name, and why. */
  other: { name: string; rule: string; reason: string }[];
}

export function lowRankRule(m: AdaptedModule): LowRankRule {
  if (m.rule.kind !== 'low-rank') throw new Error(`${m.module} is not low-rank`);
  return m.rule;
}

/** Why a module has no factor form here, or undefined when it has one. */
function noFactorForm(m: AdaptedModule): string | undefined {
  if (m.rule.kind === 'scale') return '(IA)³ scales the base weight: its delta needs the base, which spectrum and resize do not read';
  if (m.rule.kind === 'stacked') return 'parts stacked into a fused base tensor';
  if (m.rule.kind === 'kronecker' && m.rule.row0 !== undefined) return "rows of a LoKr's Kronecker product, which are not one";
  if (m.rule.kind === 'dense' && Math.min(m.out, m.in) > DENSE_MAX_SIDE) {
    return `a full diff of [${m.out}, ${m.in}]: its exact spectrum needs a dense SVD of more than ${DENSE_MAX_SIDE} columns, which LoRA Lens does not run`;
  }
  return undefined;
}

/** Opens an adapter (a PEFT-style folder or a kohya / LyCORIS / diffusers file) that must adapt at least one module. */
export function openFactorAdapter(p: string): FactorAdapter {
  const checkpoint = openCheckpoint(p);
  try {
    const format = checkpoint.kind === 'adapter' ? undefined : diffusionFormat(checkpoint);
    if (checkpoint.kind !== 'adapter' && !format) throw new LensError(p, 'not an adapter: no adapter_config.json, and not a kohya, LyCORIS or diffusers LoRA file');
    const layout = adapterLayout(checkpoint);
    if (layout.modules.length === 0) throw new LensError(checkpoint.files[0], 'the adapter holds no LoRA factors (lora_A / lora_B): it adapts nothing');
    const lowRank = layout.modules.filter((m) => m.rule.kind === 'low-rank');
    const factored = layout.modules.filter((m) => noFactorForm(m) === undefined);
    const other = layout.modules.filter((m) => noFactorForm(m) !== undefined).map((m) => ({ name: m.module, rule: ruleName(m), reason: noFactorForm(m)! }));
    return { checkpoint, layout, source: format ?? 'peft', lowRank, factored, other };
  } catch (e) {
    checkpoint.handles.close();
    throw e;
  }
}

/** Refuses what cannot be held as B·A factors: modules with no factor form (`lowRankOnly`: any rule but low-rank), DoRA, and lora_bias. */
export function assertPlainLowRank(a: FactorAdapter, command: string, lowRankOnly = true): void {
  const other = a.layout.modules.find((m) => (lowRankOnly ? m.rule.kind !== 'low-rank' : noFactorForm(m) !== undefined));
  if (other) throw new LensError(a.checkpoint.path, `module ${other.module} is ${ruleName(other)}, which has no B·A factor form that ${command} can work on`, other.tensors[0]?.name);
  // DoRA (PEFT's or LyCORIS's dora_scale): it rescales W + ΔW, so a smaller B·A alone is not its best approximation.
  const dora = a.layout.modules.find(wholeTensor);
  if (dora) throw new LensError(a.checkpoint.path, `DoRA adapter (weight decomposition): its delta is not ΔW alone, so ${command} has no exact low-rank form to work on`, decomposition(dora)!.magnitude.name);
  // lora_bias: the bias delta is not a factor; a written adapter without it would silently lose it.
  const bias = a.lowRank.find((m) => lowRankRule(m).bias !== undefined);
  if (bias) throw new LensError(a.checkpoint.path, `lora_B has a bias (lora_bias=True) in module ${bias.module}: ${command} writes B·A factors only and would drop it`, lowRankRule(bias).bias!.name);
}

/** Where a module's arrays go, and a check of their values (the low-rank products' pool, or plain arrays). */
export interface FactorStore {
  floats(n: number): Float32Array;
  release(x: Float32Array): void;
  firstNonFinite(x: Float32Array): number;
}

const plainStore: FactorStore = {
  floats: (n) => new Float32Array(n),
  release: () => undefined,
  firstNonFinite: (x) => x.findIndex((v) => !Number.isFinite(v)),
};

function readF32(c: Checkpoint, t: TensorInfo, into: Float32Array, store: FactorStore): Float32Array {
  // fp32 straight into its destination; other dtypes through a byte buffer.
  if (t.dtype === 'F32') c.handles.readBytesSync(t, new Uint8Array(into.buffer, into.byteOffset, t.byteLength));
  else bytesToF32(t, c.handles.readBytesSync(t, new Uint8Array(t.byteLength)), into);
  const bad = store.firstNonFinite(into);
  if (bad >= 0) throw new LensError(t.file, `non-finite value at element ${bad}`, t.name);
  return into;
}

/**
 * A module's fp32 arrays as its rule forms them (tensors/delta.ts `prepare`, without DoRA's magnitude): for a
 * low-rank rule A (r × in) and B (out × r), for LoHa both pairs, row-major, in arrays from `store`;
 * `release` gives them all back.
 */
export function readFactorArrays(c: Checkpoint, m: AdaptedModule, store: FactorStore = plainStore): ReturnType<typeof prepare> & { release: () => void } {
  const taken: Float32Array[] = [];
  const take = (n: number): Float32Array => {
    const x = store.floats(n);
    taken.push(x);
    return x;
  };
  const release = (): void => taken.forEach((x) => store.release(x));
  try {
    const rule = m.rule.kind === 'low-rank' ? { ...m.rule, magnitude: undefined } : m.rule;
    return { ...prepare({ ...m, decompose: undefined, rule }, (t) => readF32(c, t, take(t.numel), store), take), release };
  } catch (e) {
    release();
    throw e;
  }
}

/** X (rows × cols, row-major fp32) as a float64 matrix, transposed when `t`. */
function mat(x: Float32Array, rows: number, cols: number, t = false): Mat {
  const m = fromRows(rows, cols, x);
  return t ? transpose(m) : m;
}

/** The identity, n × n. */
function identity(n: number): Mat {
  const m = zeros(n, n);
  for (let i = 0; i < n; i++) m.data[i * n + i] = 1;
  return m;
}

/** A whole matrix W (rows × cols) as L·Rᵀ with the fewer columns: W·I, or I·(Wᵀ)ᵀ. */
function wholeProduct(W: Mat): { L: Mat; R: Mat } {
  return W.cols <= W.rows ? { L: W, R: identity(W.cols) } : { L: identity(W.rows), R: transpose(W) };
}

/** Row-wise Kronecker (face-splitting) product: row i of the result is kron(x[i, :], y[i, :]). */
function faceSplit(x: Mat, y: Mat): Mat {
  const out = zeros(x.rows, x.cols * y.cols);
  for (let i = 0; i < x.rows; i++) {
    for (let a = 0; a < x.cols; a++) {
      const xa = x.data[i * x.cols + a];
      for (let b = 0; b < y.cols; b++) out.data[i * out.cols + a * y.cols + b] = xa * y.data[i * y.cols + b];
    }
  }
  return out;
}

/** kron(x, y). */
function kron(x: Mat, y: Mat): Mat {
  const out = zeros(x.rows * y.rows, x.cols * y.cols);
  for (let i1 = 0; i1 < x.rows; i1++) {
    for (let a = 0; a < x.cols; a++) {
      const v = x.data[i1 * x.cols + a];
      for (let i2 = 0; i2 < y.rows; i2++) {
        for (let b = 0; b < y.cols; b++) out.data[(i1 * y.rows + i2) * out.cols + a * y.cols + b] = v * y.data[i2 * y.cols + b];
      }
    }
  }
  return out;
}

/** One LoKr factor as L·Rᵀ: a·b exactly (L = a, R = bᵀ), a Tucker product (L = aᵀ, R = the core contracted with b, in fp32 as merged), or a whole matrix. */
function kronFactor(c: Checkpoint, f: KronFactor): { L: Mat; R: Mat } {
  const read = (t: TensorInfo): Float32Array => readF32(c, t, new Float32Array(t.numel), plainStore);
  if ('full' in f) return wholeProduct(mat(read(f.full), f.full.shape[0], f.full.numel / f.full.shape[0]));
  const [ra, ca] = [f.a.shape[0], f.a.numel / f.a.shape[0]];
  const [rb, cb] = [f.b.shape[0], f.b.numel / f.b.shape[0]];
  if (!f.t) return { L: mat(read(f.a), ra, ca), R: mat(read(f.b), rb, cb, true) };
  const A = tuckerCore(read(f.t), read(f.b), f.t.shape, (n) => new Float32Array(n));
  return { L: mat(read(f.a), ra, ca, true), R: mat(A, f.t.shape[0], A.length / f.t.shape[0], true) };
}

/** A LoKr module's two factors, each as L·Rᵀ (the scale not applied). */
export function readKronFactors(c: Checkpoint, m: AdaptedModule): { f1: { L: Mat; R: Mat }; f2: { L: Mat; R: Mat }; scale: number } {
  if (m.rule.kind !== 'kronecker') throw new Error(`${m.module} is not LoKr`);
  return { f1: kronFactor(c, m.rule.w1), f2: kronFactor(c, m.rule.w2), scale: m.rule.scale };
}

/** The singular values of s·kron(W₁, W₂): every σᵢ(W₁)·σⱼ(W₂)·|s|, descending. */
export function kronSingularValues(c: Checkpoint, m: AdaptedModule): Float64Array {
  const { f1, f2, scale } = readKronFactors(c, m);
  const s1 = productSingularValues(f1.L, f1.R);
  const s2 = productSingularValues(f2.L, f2.R);
  const s = new Float64Array(s1.length * s2.length);
  s1.forEach((x, i) => s2.forEach((y, j) => (s[i * s2.length + j] = x * y * Math.abs(scale))));
  return s.sort().reverse();
}

/** ΔW = L·Rᵀ of any module with a factor form, in float64 (L out × p, R in × p; DoRA: its additive part). */
export function readFactors(c: Checkpoint, m: AdaptedModule): { L: Mat; R: Mat } {
  const r = m.rule;
  if (r.kind === 'kronecker') {
    const { f1, f2, scale } = readKronFactors(c, m);
    const L = kron(f1.L, f2.L);
    for (let i = 0; i < L.data.length; i++) L.data[i] *= scale;
    return { L, R: kron(f1.R, f2.R) };
  }
  // Stacked parts are a base's fused tensor: spectrum and resize read adapters without a base, so never see one.
  if (r.kind === 'scale' || r.kind === 'stacked') throw new Error(`${m.module}: ${ruleName(m)} has no factor form`);
  const p = readFactorArrays(c, m);
  if (r.kind === 'dense') {
    const D = mat(p.values!, m.out, m.in);
    for (let i = 0; i < D.data.length; i++) D.data[i] *= r.scale;
    return wholeProduct(D);
  }
  const L = mat(p.B, m.out, p.rank);
  for (let i = 0; i < L.data.length; i++) L.data[i] *= r.scale;
  const R = mat(p.A, p.rank, m.in, true);
  if (r.kind === 'low-rank') return { L, R };
  // LoHa: (B₁A₁) ⊙ (B₂A₂) = (B₁ • B₂)(A₁ᵀ • A₂ᵀ)ᵀ with • the face-splitting product.
  return { L: faceSplit(L, mat(p.B2!, m.out, p.rank2!)), R: faceSplit(R, mat(p.A2!, p.rank2!, m.in, true)) };
}

/** The rank of a module's factor form: the columns of its L and R (LoRA: r; LoHa: r₁·r₂; LoKr: p₁·p₂; a full diff: min(out, in)). */
export function factorRank(m: AdaptedModule): number {
  const r = m.rule;
  const side = (f: KronFactor): number => ('full' in f ? Math.min(f.full.shape[0], f.full.numel / f.full.shape[0]) : f.t ? f.a.shape[0] : f.b.shape[0]);
  switch (r.kind) {
    case 'low-rank':
      return r.rank;
    case 'hadamard':
      return (r.t1 ? r.w1a.shape[0] : r.w1a.shape[1]) * (r.t2 ? r.w2a.shape[0] : r.w2a.shape[1]);
    case 'kronecker':
      return side(r.w1) * side(r.w2);
    default:
      return Math.min(m.out, m.in);
  }
}

/** A full diff's bias delta (LyCORIS `diff_b`): no low-rank form, so resize writes it as it is. */
export function isBiasDiff(m: AdaptedModule): boolean {
  return m.rule.kind === 'dense' && m.in === 1 && m.rule.diff.name.endsWith('.diff_b');
}

/** A module's parameters in its source: a low-rank rule's r·(out + in), any other's stored tensors (scalars aside). */
export function sourceParams(m: AdaptedModule): number {
  return m.rule.kind === 'low-rank' ? factorRank(m) * (m.out + m.in) : m.tensors.reduce((a, t) => a + (t.shape.length > 0 ? t.numel : 0), 0);
}

/** Checks --rank / --energy: exactly one, a positive integer rank, an energy in (0, 1]. */
export function rankOrEnergy(command: string, rank: number | undefined, energy: number | undefined): void {
  const usage = (msg: string): never => {
    throw new LensError(`lora-lens ${command}`, msg);
  };
  if ((rank === undefined) === (energy === undefined)) usage('give exactly one of --rank R and --energy E');
  if (rank !== undefined && !(Number.isInteger(rank) && rank >= 1)) usage(`--rank must be a positive integer (got ${rank})`);
  if (energy !== undefined && !(energy > 0 && energy <= 1)) usage(`--energy must be a fraction in (0, 1] (got ${energy})`);
}
