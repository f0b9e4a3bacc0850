/**
 * LoRA deltas where only some elements are needed: a masked element of `s * B @ A` costs r products,
 * so compressing or decomposing a LoRA adapter never expands its full delta (a DoRA one must, once per
 * module, for its norms).
 */
import { Checkpoint } from '../checkpoint/checkpoint';
import { AdaptedModule, decomposition, ruleName, stackedParts } from '../checkpoint/deltaRule';
import { LensError } from '../errors';
import { Kernels, LoraFactors } from '../kernels/kernels';
import { assertFloat, bytesToF32 } from '../safetensors/reader';
import { TensorInfo } from '../../shared/safetensors/header';
import { doraScale, DoraScale, prepare } from '../tensors/delta';

async function readF32(c: Checkpoint, t: TensorInfo): Promise<Float32Array> {
  assertFloat(t);
  const raw = await c.handles.readBytes(t, new Uint8Array(t.byteLength));
  return bytesToF32(t, raw, new Float32Array(t.numel));
}

function readF32Sync(c: Checkpoint, t: TensorInfo): Float32Array {
  assertFloat(t);
  return bytesToF32(t, c.handles.readBytesSync(t, new Uint8Array(t.byteLength)), new Float32Array(t.numel));
}

/** UNMERGE works on low-rank deltas (its masked values cost r products each): other rules are refused by name. */
export function assertLowRank(adapter: Checkpoint, lm: AdaptedModule): void {
  if (lm.rule.kind === 'stacked') {
    throw new LensError(
      adapter.path,
      `UNMERGE takes one low-rank delta per base tensor, and ${stackedParts(lm, lm.rule)}: give the base in the adapter's own layout, whose modules are its modules (the diffusers folder, not a single file that fuses them)`,
      lm.tensors[0].name,
    );
  }
  if (lm.rule.kind !== 'low-rank') {
    throw new LensError(adapter.path, `UNMERGE reads low-rank adapters (LoRA, DoRA, AdaLoRA, VeRA, mlx-lm); module ${lm.module} is ${ruleName(lm)}`, lm.tensors[0].name);
  }
}

/** The factors of a low-rank module in their fp32 factor form (deltaRule.ts), oriented as its base weight. */
export async function readFactors(adapter: Checkpoint, lm: AdaptedModule): Promise<LoraFactors> {
  assertLowRank(adapter, lm);
  if (lm.rule.kind !== 'low-rank') throw new Error('unreachable');
  const { A, B, rank } = prepare({ ...lm, rule: { ...lm.rule, magnitude: undefined } }, (t) => readF32Sync(adapter, t), (n) => new Float32Array(n));
  const f = lm.rule.factors;
  const stored = f.form === 'transposed' ? { A: f.a, B: f.b } : f;
  for (const [t, v] of [[stored.A, A], [stored.B, B]] as const) {
    // Finite factors give finite products in float64: the delta can then only overflow fp32, which topK counts.
    for (let i = 0; i < v.length; i++) if (!Number.isFinite(v[i])) throw new LensError(adapter.path, `non-finite value at element ${i} of a LoRA factor`, t.name);
  }
  return { A, B, r: rank, out: lm.out, in: lm.in, scale: lm.rule.scale, transpose: lm.transpose };
}

/**
 * What a DoRA module changes, for UNMERGE: the task vector a fine-tune with it has, i.e. exactly what
 * `merge --dtype fp32` followed by `extract` gives, `tau = f(f(g * f(W + dW)) - W)`, dW = s B A and
 * g = f(m / f(||W + dW||)) per output feature (a row, or a column of a Conv1D / embedding weight).
 * Not `s B A` alone: DoRA rescales every element of W, so a merged DoRA model differs from its base
 * also where dW is small, and decomposing such a model needs dictionary vectors that say so.
 */
export interface Dora extends DoraScale {
  /** The base weight as fp32, in its own layout. */
  w: Float32Array;
}

/** g of a DoRA module from the base `w` and the full LoRA delta `d` (both in the base layout), as an fp32 merge forms it. */
export async function doraOf(kernels: Kernels, adapter: Checkpoint, lm: AdaptedModule, w: Float32Array, d: Float32Array): Promise<Dora> {
  const dec = decomposition(lm);
  const magnitude = dec ? await readF32(adapter, dec.magnitude) : undefined;
  return { w, ...(await doraScale(kernels, lm, magnitude, w, d, 'F32', 'fp32-cast')) };
}

/** The full DoRA task vector into `out`, by the merge kernels (`d` the full LoRA delta; `merged` scratch bytes). */
export async function doraDelta(kernels: Kernels, dora: Dora, d: Float32Array, merged: Uint8Array, out: Float32Array): Promise<Float32Array> {
  const { factor, ...geometry } = dora;
  await kernels.mergeDora({ ...geometry, d, dtype: 'F32', rule: 'fp32-cast' }, factor, merged);
  return kernels.subtract(new Float32Array(merged.buffer, merged.byteOffset, dora.w.length), dora.w, out);
}

/** Turns LoRA delta values at `indices` into DoRA task-vector values, in place, bit for bit as doraDelta. */
export function doraValuesAt(dora: Dora, indices: Uint32Array, values: Float32Array): Float32Array {
  const { w, factor, cols, featureIsColumn } = dora;
  for (let t = 0; t < indices.length; t++) {
    const idx = indices[t];
    const g = factor[featureIsColumn ? idx % cols : Math.floor(idx / cols)];
    values[t] = Math.fround(Math.fround(g * Math.fround(w[idx] + values[t])) - w[idx]);
  }
  return values;
}

/**
 * `out[t] = delta[indices[t]]`, `delta` the module's delta laid out as its base weight (transposed for
 * Conv1D and embeddings), each value exactly as `Kernels.loraDelta` defines it: the products summed in
 * float64 in rank order, rounded to fp32, times the fp32 scale (loraDeltaRows).
 */
export function loraValuesAt(f: LoraFactors, indices: Uint32Array, out: Float32Array): Float32Array {
  const { A, B, r, in: n, out: m, transpose } = f;
  const scale = Math.fround(f.scale);
  for (let t = 0; t < indices.length; t++) {
    const idx = indices[t];
    const i = transpose ? idx % m : Math.floor(idx / n);
    const j = transpose ? Math.floor(idx / m) : idx % n;
    let acc = 0;
    for (let k = 0; k < r; k++) {
      const b = B[i * r + k];
      if (b !== 0) acc += b * A[k * n + j];
    }
    out[t] = Math.fround(acc) * scale;
  }
  return out;
}

/** `||s B A||_F^2 = s^2 trace((B^T B)(A A^T))` in float64: r x r work, no expansion. */
export function loraNormSq(f: LoraFactors): number {
  const { A, B, r, in: n, out: m, scale } = f;
  const btb = new Float64Array(r * r);
  const aat = new Float64Array(r * r);
  for (let p = 0; p < r; p++) {
    for (let q = p; q < r; q++) {
      let sb = 0;
      for (let i = 0; i < m; i++) sb += B[i * r + p] * B[i * r + q];
      let sa = 0;
      for (let j = 0; j < n; j++) sa += A[p * n + j] * A[q * n + j];
      btb[p * r + q] = btb[q * r + p] = sb;
      aat[p * r + q] = aat[q * r + p] = sa;
    }
  }
  let tr = 0;
  for (let i = 0; i < r * r; i++) tr += btb[i] * aat[i];
  return Math.max(0, tr) * scale * scale;
}
