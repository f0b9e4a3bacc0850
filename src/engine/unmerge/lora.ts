/**
 * LoRA deltas where only some elements are needed: a masked element of `s * B @ A` costs r products,
 * so compressing or decomposing an adapter never expands its full delta.
 */
import { Checkpoint } from '../checkpoint/checkpoint';
import { LoraModule } from '../checkpoint/adapter';
import { LensError } from '../errors';
import { LoraFactors } from '../kernels/kernels';
import { assertFloat, bytesToF32, TensorInfo } from '../safetensors/reader';

async function readF32(c: Checkpoint, t: TensorInfo): Promise<Float32Array> {
  assertFloat(t);
  const raw = await c.handles.readBytes(t, new Uint8Array(t.byteLength));
  return bytesToF32(t, raw, new Float32Array(t.numel));
}

/** The factors of a module, oriented as its base weight. DoRA's delta needs the base rows: refused here. */
export async function readFactors(adapter: Checkpoint, lm: LoraModule): Promise<LoraFactors> {
  if (lm.magnitude) {
    throw new LensError(adapter.path, 'DoRA adapters (lora_magnitude_vector) are not supported by mask/compress/decompose yet', lm.magnitude.name);
  }
  const [A, B] = await Promise.all([readF32(adapter, lm.A), readF32(adapter, lm.B)]);
  return { A, B, r: lm.A.shape[0], out: lm.out, in: lm.in, scale: lm.scale, transpose: lm.transpose };
}

/**
 * `out[t] = delta[indices[t]]`, `delta` the module's delta laid out as its base weight (transposed for
 * Conv1D and embeddings), each value exactly as `Kernels.loraDelta` defines it: the products summed in
 * float64 in rank order, times the scale, rounded once to fp32.
 */
export function loraValuesAt(f: LoraFactors, indices: Uint32Array, out: Float32Array): Float32Array {
  const { A, B, r, in: n, out: m, scale, transpose } = f;
  for (let t = 0; t < indices.length; t++) {
    const idx = indices[t];
    const i = transpose ? idx % m : Math.floor(idx / n);
    const j = transpose ? Math.floor(idx / m) : idx % n;
    let acc = 0;
    for (let k = 0; k < r; k++) {
      const b = B[i * r + k];
      if (b !== 0) acc += b * A[k * n + j];
    }
    out[t] = acc * scale;
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
