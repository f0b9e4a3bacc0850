import { allFinite, doraNormsRange, maxAbsRange, mergeDoraRange, mergeRange, pairStatsRange, precisionRange, subtractRange } from './cpuMath';
import { DoraOperand, HalfDtype, Kernels, LoraFactors, MergeDtype, PairStats, PrecisionStats } from './kernels';
import { foldLoraRows, loraRows, wasmLora } from './wasm';
import { MergeRule } from '../../shared/jobs/choices';
import { FloatDtype } from '../../shared/safetensors/dtypes';
import { TensorInfo } from '../../shared/safetensors/header';
import { bytesToF32 } from '../safetensors/reader';

/** The CPU backend on the calling thread. */
export class CpuKernels implements Kernels {
  readonly device = 'cpu' as const;
  readonly description = `CPU (main thread${wasmLora() ? ', WebAssembly SIMD' : ''})`;
  readonly sharedMemory = false;

  async decode(t: TensorInfo, raw: Uint8Array, out: Float32Array): Promise<Float32Array> {
    return bytesToF32(t, raw, out);
  }

  async allFinite(dtype: FloatDtype, raw: Uint8Array): Promise<boolean> {
    return allFinite(dtype, raw);
  }

  async loraDelta(f: LoraFactors, out: Float32Array = new Float32Array(f.out * f.in)): Promise<Float32Array> {
    loraRows(f, 0, f.out, out);
    return out;
  }

  async merge(w: Float32Array, d: Float32Array | null, dtype: MergeDtype, rule: MergeRule, out: Uint8Array): Promise<Uint8Array> {
    mergeRange(w, d, dtype, rule, out, 0, w.length);
    return out;
  }

  async doraNorms(v: DoraOperand): Promise<Float64Array> {
    const acc = new Float64Array(v.featureIsColumn ? v.cols : v.rows);
    doraNormsRange(v, acc, 0, v.rows);
    for (let i = 0; i < acc.length; i++) acc[i] = Math.sqrt(acc[i]);
    return acc;
  }

  async mergeDora(v: DoraOperand, factor: Float32Array, out: Uint8Array): Promise<Uint8Array> {
    mergeDoraRange(v, factor, out, 0, v.rows);
    return out;
  }

  async pairStats(a: Float32Array, b: Float32Array | null): Promise<PairStats> {
    return pairStatsRange(a, b, 0, a.length);
  }

  async subtract(a: Float32Array, b: Float32Array, out: Float32Array): Promise<Float32Array> {
    subtractRange(a, b, out, 0, a.length);
    return out;
  }

  async precision(w: Float32Array, d: Float32Array | null, dtype: HalfDtype, rule: MergeRule): Promise<PrecisionStats> {
    return precisionRange(w, d, dtype, rule, 0, w.length);
  }

  async maxAbsInto(acc: Float32Array, x: Float32Array): Promise<Float32Array> {
    maxAbsRange(acc, x, 0, acc.length);
    return acc;
  }

  async maxAbsLoraInto(acc: Float32Array, fs: LoraFactors[], float32 = false): Promise<Float32Array> {
    if (fs.length > 0) foldLoraRows(fs, 0, fs[0].out, acc, wasmLora(), float32);
    return acc;
  }

  async dispose(): Promise<void> {}
}
