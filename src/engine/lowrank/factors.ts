/**
 * An adapter's deltas in factor form for the low-rank toolbox: each module's ΔW = L·Rᵀ in float64 with
 * L = s·B (out × r) and R = Aᵀ (in × r), from the engine's low-rank rule (PEFT LoRA, rsLoRA, AdaLoRA,
 * VeRA, mlx-lm, MergedLinear: deltaRule.ts's factor forms), whatever the delta's storage orientation
 * (Conv1D and embedding deltas are stored transposed; their singular values and best approximations
 * are the same). Rules with no factor form here (LoHa, LoKr, dense diffs, IA³) are named, not guessed.
 */
import { adapterLayout, AdapterLayout } from '../checkpoint/adapter';
import { Checkpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { AdaptedModule, decomposition, LowRankRule, ruleName, wholeTensor } from '../checkpoint/deltaRule';
import { LensError } from '../errors';
import { Mat, zeros } from '../linalg/dense';
import { bytesToF32 } from '../safetensors/reader';
import { prepare } from '../tensors/delta';
import { TensorInfo } from '../../shared/safetensors/header';

export interface FactorAdapter {
  checkpoint: Checkpoint;
  layout: AdapterLayout;
  /** The modules with a low-rank rule, and the others (by rule name). */
  lowRank: AdaptedModule[];
  other: { name: string; rule: string }[];
}

export function lowRankRule(m: AdaptedModule): LowRankRule {
  if (m.rule.kind !== 'low-rank') throw new Error(`${m.module} is not low-rank`);
  return m.rule;
}

/** Opens an adapter folder that must adapt at least one module. */
export function openFactorAdapter(p: string): FactorAdapter {
  const checkpoint = openCheckpoint(p);
  try {
    if (checkpoint.kind !== 'adapter') throw new LensError(p, 'not an adapter folder (no adapter_config.json)');
    const layout = adapterLayout(checkpoint);
    if (layout.modules.length === 0) throw new LensError(checkpoint.files[0], 'the adapter holds no LoRA factors (lora_A / lora_B): it adapts nothing');
    const lowRank = layout.modules.filter((m) => m.rule.kind === 'low-rank');
    const other = layout.modules.filter((m) => m.rule.kind !== 'low-rank').map((m) => ({ name: m.module, rule: ruleName(m) }));
    return { checkpoint, layout, lowRank, other };
  } catch (e) {
    checkpoint.handles.close();
    throw e;
  }
}

/** Refuses modules the command cannot hold exactly: rules with no factor form, DoRA (it rescales W + ΔW, so a smaller B·A alone is not its best approximation), and lora_bias. */
export function assertPlainLowRank(a: FactorAdapter, command: string): void {
  const other = a.layout.modules.find((m) => m.rule.kind !== 'low-rank');
  if (other) throw new LensError(a.checkpoint.path, `module ${other.module} is ${ruleName(other)}, which has no B·A factor form that ${command} can work on`, other.tensors[0]?.name);
  const dora = a.lowRank.find(wholeTensor);
  if (dora) throw new LensError(a.checkpoint.path, `DoRA adapter (lora_magnitude_vector): its delta is not s·B@A alone, so ${command} has no exact low-rank form to work on`, decomposition(dora)!.magnitude.name);
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
 * A low-rank module's fp32 factors as its rule forms them, without the scale: A (r × in) and B (out × r),
 * row-major, in arrays from `store`; `release` gives them all back (DoRA: its LoRA part).
 */
export function readFactorArrays(c: Checkpoint, m: AdaptedModule, store: FactorStore = plainStore): { A: Float32Array; B: Float32Array; rank: number; release: () => void } {
  const rule = lowRankRule(m);
  const taken: Float32Array[] = [];
  const take = (n: number): Float32Array => {
    const x = store.floats(n);
    taken.push(x);
    return x;
  };
  const release = (): void => taken.forEach((x) => store.release(x));
  try {
    const { A, B, rank } = prepare({ ...m, decompose: undefined, rule: { ...rule, magnitude: undefined } }, (t) => readF32(c, t, take(t.numel), store), take);
    return { A, B, rank, release };
  } catch (e) {
    release();
    throw e;
  }
}

/** L = s·B (out × r) and R = Aᵀ (in × r) of one low-rank module, in float64 (DoRA: its LoRA part). */
export function readFactors(c: Checkpoint, m: AdaptedModule): { L: Mat; R: Mat } {
  const { scale } = lowRankRule(m);
  const { A, B, rank: r } = readFactorArrays(c, m);
  const L = zeros(m.out, r);
  for (let i = 0; i < L.data.length; i++) L.data[i] = scale * B[i];
  const R = zeros(m.in, r);
  for (let k = 0; k < r; k++) for (let j = 0; j < m.in; j++) R.data[j * r + k] = A[k * m.in + j];
  return { L, R };
}

/** The columns of a module's factors. */
export function factorRank(m: AdaptedModule): number {
  return lowRankRule(m).rank;
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
