/// <reference types="@webgpu/types" />
/**
 * The Kernels interface on a WebGPU device. Every result equals the CPU reference (cpuMath.ts): tensors
 * bit for bit, statistics within 1e-6 relative. Elements the GPU cannot compute exactly (non-finite or
 * subnormal operands, a delta too close to an f32 rounding boundary) are flagged by the kernels and
 * recomputed here with the CPU's own functions; a tensor whose inputs the GPU cannot handle at all runs
 * on the CPU and says so through `warn`. The device, buffers, chunking and the fallback belong to the
 * runtime (runtime.ts); this file holds the kernels.
 */
import { mergeDoraRange, mergeOperand, mergeRange, pairStatsRange, precisionRange, subtractRange, addPrecisionStats, emptyPairStats, emptyPrecisionStats, addPairStats } from '../cpuMath';
import { CpuKernels } from '../cpu';
import { loraRows } from '../wasm';
import { DoraOperand, HalfDtype, Kernels, LoraFactors, MergeDtype, PairStats, PrecisionStats } from '../kernels';
import { MergeRule } from '../../../shared/jobs/choices';
import { FloatDtype } from '../../../shared/safetensors/dtypes';
import { TensorInfo } from '../../../shared/safetensors/header';
import { OpenGpu } from './dawn';
import { bytesOf, flagCapacity, GpuRuntime, GpuSizes, u32Params } from './runtime';
import { deltaShader, doraNormsShader, elementwiseShader, mergeDoraShader, mergeShader, PART_WORDS, pairStatsShader, precisionShader, TILE } from './wgsl';

export { FAULT_ENV } from './runtime';
export type { GpuSizes } from './runtime';

/** Partial sums per DoRA feature (each lane sums every LANES-th element of the feature). */
const LANES = 64;

export class GpuKernels implements Kernels {
  readonly device = 'gpu' as const;
  readonly sharedMemory = false;
  private readonly rt: GpuRuntime;
  private readonly cpu = new CpuKernels();

  constructor(gpu: OpenGpu, private readonly warn: (message: string) => void = () => {}, sizes: Partial<GpuSizes> = {}) {
    this.rt = new GpuRuntime(gpu, warn, sizes);
  }

  /** Why the GPU was abandoned for the CPU, or undefined while it works. */
  get failure(): string | undefined {
    return this.rt.failure;
  }

  /** The adapter, and whether (and why) the job went on on the CPU after a GPU failure: reports show this. */
  get description(): string {
    return this.rt.description;
  }

  /** Dispatches run (tests check that large tensors are split). */
  get dispatches(): number {
    return this.rt.dispatches;
  }

  /** Elements recomputed on the host after the GPU flagged them, and chunks or tensors wholly recomputed. */
  get hostElements(): number {
    return this.rt.hostElements;
  }

  get hostTensors(): number {
    return this.rt.hostTensors;
  }

  loraDelta(f: LoraFactors, out = new Float32Array(f.out * f.in)): Promise<Float32Array> {
    return this.rt.guarded('loraDelta', () => this.loraDeltaGpu(f, out), () => this.cpu.loraDelta(f, out));
  }

  /**
   * The delta in row blocks: each block's output (and its rows of B) fits one binding, so a delta of any
   * size (a 12288 x 12288 fp32 delta is 576 MiB, over the usual 128 MiB limit) runs in pieces.
   */
  private async loraDeltaGpu(f: LoraFactors, out: Float32Array): Promise<Float32Array> {
    const { A, B, r, in: n, out: m, scale, transpose } = f;
    const reason = deltaUnsupported(f) ?? (Math.max(r * n, n, r) * 4 > this.rt.maxBinding ? `a ${m}x${n} rank-${r} delta's factor A exceeds the GPU's binding size` : null);
    if (reason) {
      this.warn(`GPU: ${reason}; this delta is computed on the CPU`);
      this.rt.hostTensors++;
      loraRows(f, 0, m, out);
      return out;
    }
    if (m === 0 || n === 0) return out;
    const rowsPerBlock = Math.max(1, Math.min(m, Math.floor(Math.min(this.rt.maxBinding, this.rt.sizes.blockBytes) / (Math.max(n, r) * 4))));
    const blocks = Math.ceil(m / rowsPerBlock);
    const pipeline = await this.rt.pipeline('delta', deltaShader);
    const aBytes = new Uint8Array(A.buffer, A.byteOffset, r * n * 4);
    const err = 24 * r * 2 ** -48;
    const underflow = 64 * r * 2 ** -126;
    await this.rt.pipelined(blocks, (b) => {
      const row0 = b * rowsPerBlock;
      const rows = Math.min(rowsPerBlock, m - row0);
      const params = new ArrayBuffer(48);
      // Only this block's rows of B travel (the shader's row0 is then 0).
      new Uint32Array(params, 0, 5).set([n, rows, r, transpose ? 1 : 0, 0]);
      // The sum is rounded at scale 1 (sh = 1, sl = 0), then multiplied by the f32 scale (loraDeltaRows).
      new Float32Array(params, 24, 1).set([scale]);
      new Float32Array(params, 32, 4).set([1, 0, err, underflow]);
      return {
        pipeline,
        inputs: [new Uint8Array(B.buffer, B.byteOffset + row0 * r * 4, rows * r * 4), aBytes],
        outBytes: rows * n * 4,
        flagCapacity: flagCapacity(rows * n),
        params,
        workgroups: [Math.ceil(n / TILE), Math.ceil(rows / TILE)],
      };
    }, (b, res) => {
      const row0 = b * rowsPerBlock;
      const rows = Math.min(rowsPerBlock, m - row0);
      const block = new Float32Array(res.out!.buffer, res.out!.byteOffset, rows * n);
      if (!transpose) out.set(block, row0 * n);
      else if (rows === m) out.set(block);
      else for (let j = 0; j < n; j++) out.set(block.subarray(j * rows, (j + 1) * rows), j * m + row0);
      if (res.flagged === null) {
        this.rt.hostTensors++;
        loraRows(f, row0, row0 + rows, out);
        return;
      }
      this.rt.hostElements += res.flagged!.length;
      for (const local of res.flagged!) {
        const i = row0 + Math.floor(local / n);
        const j = local % n;
        out[transpose ? j * m + i : i * n + j] = deltaElement(f, i, j);
      }
    });
    return out;
  }

  merge(w: Float32Array, d: Float32Array | null, dtype: MergeDtype, rule: MergeRule, out: Uint8Array): Promise<Uint8Array> {
    return this.rt.guarded('merge', () => this.mergeGpu(w, d, dtype, rule, out), () => this.cpu.merge(w, d, dtype, rule, out));
  }

  private async mergeGpu(w: Float32Array, d: Float32Array | null, dtype: MergeDtype, rule: MergeRule, out: Uint8Array): Promise<Uint8Array> {
    const n = w.length;
    if (dtype === 'F32' && d === null) {
      new Uint8Array(out.buffer, out.byteOffset, n * 4).set(bytesOf(w));
      return out;
    }
    const pipeline = await this.rt.pipeline(`merge:${dtype}:${rule}:${d !== null}`, () => mergeShader(dtype, rule, d !== null));
    const width = dtype === 'F32' ? 4 : 2;
    await this.rt.chunks(n, (start, len) => ({
      pipeline,
      inputs: d === null ? [bytesOf(w, start, len)] : [bytesOf(w, start, len), bytesOf(d, start, len)],
      outBytes: len * width,
      flagCapacity: d === null ? undefined : flagCapacity(len),
      params: u32Params(len),
      workgroups: this.rt.workgroups(dtype === 'F32' ? len : Math.ceil(len / 2)),
    }), (start, len, res) => {
      out.set(res.out!, start * width);
      this.rt.patch(res.flagged, start, len, (i0, i1) => mergeRange(w, d, dtype, rule, out, i0, i1));
    });
    return out;
  }

  doraNorms(v: DoraOperand): Promise<Float64Array> {
    const cpu = (): Promise<Float64Array> => this.cpu.doraNorms(v);
    return this.rt.guarded('doraNorms', () => this.doraNormsGpu(v, cpu), cpu);
  }

  /**
   * Norms whose f32 rounding (the job divides the magnitude by f(norm)) equals the CPU's: the GPU's
   * double-float sums carry an error bound, and a feature whose interval [S - err, S + err], with the
   * CPU's own float64 rounding error included, does not give one f(sqrt) is recomputed here exactly as
   * the CPU does (same order, float64). Features holding a flagged element are recomputed the same way.
   */
  private async doraNormsGpu(v: DoraOperand, cpu: () => Promise<Float64Array>): Promise<Float64Array> {
    const { w, d, rows, cols, featureIsColumn, dtype, rule } = v;
    const features = featureIsColumn ? cols : rows;
    const sums = new Float64Array(features);
    if (rows === 0 || cols === 0) return sums;
    // The partial sums (8 bytes per lane, at most one lane per element) must fit one binding too.
    const budget = Math.min(this.rt.chunkSize(), Math.floor(this.rt.maxBinding / 8));
    if (cols > budget) {
      this.warn(`GPU: a row of ${cols} elements exceeds the GPU's binding size; these DoRA norms are computed on the CPU`);
      this.rt.hostTensors++;
      return cpu();
    }
    const pipeline = await this.rt.pipeline(`dora-norms:${dtype}:${rule}:${featureIsColumn}`, () => doraNormsShader(dtype, rule, featureIsColumn));
    const perChunk = Math.max(1, Math.floor(budget / cols));
    const chunks = Math.ceil(rows / perChunk);
    const recompute = new Set<number>();
    let overflow = false;
    /** Elements one lane summed at most (over all chunks for a column) and partial sums per feature: for the error bound. */
    let laneElements = 0;
    let partials = 0;
    const lanesOf = (chunkRows: number): number => Math.max(1, Math.min(LANES, Math.floor((featureIsColumn ? chunkRows : cols) / 2)));
    await this.rt.pipelined(chunks, (c) => {
      const r0 = c * perChunk;
      const n = Math.min(perChunk, rows - r0);
      const lanes = lanesOf(n);
      const items = (featureIsColumn ? cols : n) * lanes;
      return {
        pipeline,
        inputs: [bytesOf(w, r0 * cols, n * cols), bytesOf(d, r0 * cols, n * cols)],
        outBytes: items * 8,
        flagCapacity: flagCapacity(n * cols),
        params: new Uint32Array([n, cols, lanes, 0]).buffer,
        workgroups: this.rt.workgroups(items),
      };
    }, (c, res) => {
      const r0 = c * perChunk;
      const n = Math.min(perChunk, rows - r0);
      const lanes = lanesOf(n);
      const p = new Float32Array(res.out!.buffer, res.out!.byteOffset, res.out!.byteLength / 4);
      const per = Math.ceil((featureIsColumn ? n : cols) / lanes);
      laneElements = featureIsColumn ? laneElements + per : Math.max(laneElements, per);
      partials = featureIsColumn ? partials + lanes : lanes;
      if (featureIsColumn) {
        for (let l = 0; l < lanes; l++) for (let f = 0; f < cols; f++) sums[f] += p[2 * (l * cols + f)] + p[2 * (l * cols + f) + 1];
      } else {
        for (let f = 0; f < n; f++) {
          let s = 0;
          for (let l = 0; l < lanes; l++) s += p[2 * (f * lanes + l)] + p[2 * (f * lanes + l) + 1];
          sums[r0 + f] = s;
        }
      }
      if (res.flagged === null) overflow = true;
      else for (const e of res.flagged!) recompute.add(featureIsColumn ? e % cols : r0 + Math.floor(e / cols));
    });
    if (overflow) {
      this.rt.hostTensors++;
      return cpu();
    }
    const along = featureIsColumn ? rows : cols;
    // GPU: at most 12 * u^2 * S per element a lane sums (u = 2^-24, exact squares, renormalised sums);
    // host: float64 additions of the partials; CPU: float64 additions of `along` exact squares; all doubled.
    const rel = 2 * (12 * laneElements * 2 ** -48 + (partials + along + 2) * 2 ** -53);
    const abs = 4 * along * 2 ** -126;
    const norms = new Float64Array(features);
    for (let f = 0; f < features; f++) {
      const s = sums[f];
      const lo = s - rel * s - abs;
      if (recompute.has(f) || !(lo > 0) || Math.fround(Math.sqrt(lo)) !== Math.fround(Math.sqrt(s + rel * s + abs))) {
        recompute.add(f);
        norms[f] = Math.sqrt(doraFeatureSq(v, f));
      } else norms[f] = Math.sqrt(s);
    }
    this.rt.hostElements += recompute.size * along;
    return norms;
  }

  mergeDora(v: DoraOperand, factor: Float32Array, out: Uint8Array): Promise<Uint8Array> {
    return this.rt.guarded('mergeDora', () => this.mergeDoraGpu(v, factor, out), () => this.cpu.mergeDora(v, factor, out));
  }

  private async mergeDoraGpu(v: DoraOperand, factor: Float32Array, out: Uint8Array): Promise<Uint8Array> {
    const { w, d, cols, featureIsColumn, dtype, rule } = v;
    const n = w.length;
    if (n === 0 || cols === 0) return out;
    if (factor.length * 4 > this.rt.maxBinding) {
      this.warn(`GPU: ${factor.length} DoRA factors exceed the GPU's binding size; this merge is computed on the CPU`);
      this.rt.hostTensors++;
      return this.cpu.mergeDora(v, factor, out);
    }
    const pipeline = await this.rt.pipeline(`merge-dora:${dtype}:${rule}:${featureIsColumn}`, () => mergeDoraShader(dtype, rule, featureIsColumn));
    const width = dtype === 'F32' ? 4 : 2;
    const factorBytes = bytesOf(factor);
    const spill = new Set<number>();
    await this.rt.chunks(n, (start, len) => ({
      pipeline,
      inputs: [bytesOf(w, start, len), bytesOf(d, start, len), factorBytes],
      outBytes: len * width,
      flagCapacity: flagCapacity(len),
      params: new Uint32Array([len, 0, start, cols]).buffer,
      workgroups: this.rt.workgroups(dtype === 'F32' ? len : Math.ceil(len / 2)),
    }), (start, len, res) => {
      out.set(res.out!, start * width);
      const rows = res.flagged === null ? null : new Set([...res.flagged!].map((i) => Math.floor((start + i) / cols)));
      if (rows === null) {
        this.rt.hostTensors++;
        mergeDoraRange(v, factor, out, Math.floor(start / cols), Math.ceil((start + len) / cols));
        return;
      }
      // Whole rows are recomputed: cheap (flags are rare) and exactly the CPU's function. A row can
      // reach into the next chunk, whose bytes arrive later and overwrite it: fix those after all chunks.
      for (const row of rows) {
        if ((row + 1) * cols > start + len) spill.add(row);
        else mergeDoraRange(v, factor, out, row, row + 1);
        this.rt.hostElements += cols;
      }
    });
    for (const row of spill) mergeDoraRange(v, factor, out, row, row + 1);
    return out;
  }

  pairStats(a: Float32Array, b: Float32Array | null): Promise<PairStats> {
    return this.rt.guarded('pairStats', () => this.pairStatsGpu(a, b), () => this.cpu.pairStats(a, b));
  }

  private async pairStatsGpu(a: Float32Array, b: Float32Array | null): Promise<PairStats> {
    const pipeline = await this.rt.pipeline(`pair:${b !== null}`, () => pairStatsShader(b !== null));
    const words = PART_WORDS;
    let s = emptyPairStats();
    let big = 0;
    let tiny = 0;
    await this.rt.chunks(a.length, (start, len) => {
      const wg = this.rt.workgroups(len);
      return {
        pipeline,
        inputs: b === null ? [bytesOf(a, start, len)] : [bytesOf(a, start, len), bytesOf(b, start, len)],
        reduce: true,
        params: u32Params(len),
        workgroups: wg,
      };
    }, (start, len, res) => {
      const p = res.partials!;
      const f = new Float32Array(p.buffer, p.byteOffset, p.length);
      const c = emptyPairStats();
      c.n = len;
      let bad = 0;
      for (let g = 0; g < p.length / words; g++) {
        const o = g * words;
        c.aNonzero += p[o];
        c.bNonzero += p[o + 1];
        c.diffNonzero += p[o + 2];
        bad += p[o + 3];
        c.maxAbsDiff = Math.max(c.maxAbsDiff, f[o + 4]);
        c.maxAbsA = Math.max(c.maxAbsA, f[o + 5]);
        c.maxAbsB = Math.max(c.maxAbsB, f[o + 6]);
        big += p[o + 8];
        tiny += p[o + 9];
        c.dot += f[o + 12] + f[o + 13];
        c.aSq += f[o + 14] + f[o + 15];
        c.bSq += f[o + 16] + f[o + 17];
        c.diffSq += f[o + 18] + f[o + 19];
      }
      c.nonFinite = bad;
      c.aNonzero += bad;
      c.diffNonzero += bad;
      s = addPairStats(s, c);
    });
    // Squares of values past 2^63 overflow f32; below 2^-63 they underflow, which only matters when
    // the sums themselves are that small.
    const small = (x: number): boolean => x !== 0 && x < 2 ** -100;
    if (big > 0 || (tiny > 0 && (small(s.aSq) || small(s.bSq) || small(s.diffSq)))) {
      this.warn(`GPU: values out of the f32 squaring range (${big} at or above 2^63, ${tiny} below 2^-63); these statistics are computed on the CPU`);
      this.rt.hostTensors++;
      return pairStatsRange(a, b, 0, a.length);
    }
    return s;
  }

  subtract(a: Float32Array, b: Float32Array, out: Float32Array): Promise<Float32Array> {
    return this.rt.guarded('subtract', () => this.subtractGpu(a, b, out), () => this.cpu.subtract(a, b, out));
  }

  private async subtractGpu(a: Float32Array, b: Float32Array, out: Float32Array): Promise<Float32Array> {
    const pipeline = await this.rt.pipeline('subtract', () => elementwiseShader('subtract'));
    await this.rt.chunks(a.length, (start, len) => ({
      pipeline, inputs: [bytesOf(a, start, len), bytesOf(b, start, len)], outBytes: len * 4,
      flagCapacity: flagCapacity(len), params: u32Params(len), workgroups: this.rt.workgroups(len),
    }), (start, len, res) => {
      new Uint8Array(out.buffer, out.byteOffset + start * 4, len * 4).set(res.out!);
      this.rt.patch(res.flagged, start, len, (i0, i1) => subtractRange(a, b, out, i0, i1));
    });
    return out;
  }

  precision(w: Float32Array, d: Float32Array | null, dtype: HalfDtype, rule: MergeRule): Promise<PrecisionStats> {
    return this.rt.guarded('precision', () => this.precisionGpu(w, d, dtype, rule), () => this.cpu.precision(w, d, dtype, rule));
  }

  private async precisionGpu(w: Float32Array, d: Float32Array | null, dtype: HalfDtype, rule: MergeRule): Promise<PrecisionStats> {
    // Without a delta every rule gives r(W): one shader per dtype.
    const shaderRule = d === null ? 'peft' : rule;
    const pipeline = await this.rt.pipeline(`precision:${dtype}:${shaderRule}:${d !== null}`, () => precisionShader(dtype, shaderRule, d !== null));
    const words = PART_WORDS;
    let s = emptyPrecisionStats();
    await this.rt.chunks(w.length, (start, len) => {
      const wg = this.rt.workgroups(len);
      return {
        pipeline, inputs: d === null ? [bytesOf(w, start, len)] : [bytesOf(w, start, len), bytesOf(d, start, len)],
        reduce: true, flagCapacity: flagCapacity(len), params: u32Params(len), workgroups: wg,
      };
    }, (start, len, res) => {
      if (res.flagged === null) {
        this.rt.hostTensors++;
        s = addPrecisionStats(s, precisionRange(w, d, dtype, rule, start, start + len));
        return;
      }
      const p = res.partials!;
      const f = new Float32Array(p.buffer, p.byteOffset, p.length);
      const c = emptyPrecisionStats();
      c.n = len;
      for (let g = 0; g < p.length / words; g++) {
        const o = g * words;
        c.deltaNonzero += p[o];
        c.lost += p[o + 1];
        c.changed += p[o + 2];
        c.castChanged += p[o + 3];
        c.deltaSq += f[o + 12] + f[o + 13];
        c.recoveredErrSq += f[o + 14] + f[o + 15];
        c.changedSq += f[o + 16] + f[o + 17];
        c.castSq += f[o + 18] + f[o + 19];
      }
      s = addPrecisionStats(s, c);
      this.rt.hostElements += res.flagged!.length;
      for (const local of res.flagged!) {
        const fix = precisionRange(w, d, dtype, rule, start + local, start + local + 1);
        fix.n = 0;
        s = addPrecisionStats(s, fix);
      }
    });
    return s;
  }

  /** Safe to redo on the CPU after a partial GPU run: max is idempotent. */
  maxAbsInto(acc: Float32Array, x: Float32Array): Promise<Float32Array> {
    return this.rt.guarded('maxAbsInto', () => this.maxAbsIntoGpu(acc, x), () => this.cpu.maxAbsInto(acc, x));
  }

  private async maxAbsIntoGpu(acc: Float32Array, x: Float32Array): Promise<Float32Array> {
    const pipeline = await this.rt.pipeline('maxabs', () => elementwiseShader('maxabs'));
    await this.rt.chunks(acc.length, (start, len) => ({
      pipeline, inputs: [bytesOf(acc, start, len), bytesOf(x, start, len)], outBytes: len * 4, params: u32Params(len), workgroups: this.rt.workgroups(len),
    }), (start, len, res) => {
      new Uint8Array(acc.buffer, acc.byteOffset + start * 4, len * 4).set(res.out!);
    });
    return acc;
  }

  /** Decoding and the finiteness test stay on the CPU: they are memory-bound, and the GPU would only add copies. */
  decode(t: TensorInfo, raw: Uint8Array, out: Float32Array): Promise<Float32Array> {
    return this.cpu.decode(t, raw, out);
  }

  allFinite(dtype: FloatDtype, raw: Uint8Array): Promise<boolean> {
    return this.cpu.allFinite(dtype, raw);
  }

  dispose(): Promise<void> {
    return this.rt.dispose();
  }
}

/** Why the GPU cannot certify this delta (non-finite or extreme values), or null. */
function deltaUnsupported(f: LoraFactors): string | null {
  const s = Math.abs(f.scale);
  if (!Number.isFinite(f.scale) || s < 2 ** -60 || s > 2 ** 60) return `LoRA scale ${f.scale} is outside the range the GPU certifies`;
  const bad = (x: Float32Array): boolean => {
    for (let i = 0; i < x.length; i++) {
      const v = Math.abs(x[i]);
      if (!(v < 2 ** 60) || (v !== 0 && v < 2 ** -60)) return true;
    }
    return false;
  };
  if (bad(f.A) || bad(f.B)) return 'a LoRA factor holds values that are non-finite or beyond 2^±60';
  return null;
}

/** One element of the delta exactly as loraDeltaRows computes it (float64 sum over k in order, rounded, times the fp32 scale). */
function deltaElement(f: LoraFactors, i: number, j: number): number {
  let acc = 0;
  for (let k = 0; k < f.r; k++) {
    const b = f.B[i * f.r + k];
    if (b !== 0) acc += b * f.A[k * f.in + j];
  }
  return Math.fround(Math.fround(acc) * Math.fround(f.scale));
}

/** Sum of v^2 over one DoRA feature in float64, in the CPU's order (doraNormsRange): exactly its value. */
function doraFeatureSq(v: DoraOperand, f: number): number {
  const { w, d, rows, cols, featureIsColumn, dtype, rule } = v;
  let s = 0;
  if (featureIsColumn) {
    for (let i = 0; i < rows; i++) {
      const x = mergeOperand(dtype, rule, w[i * cols + f], d[i * cols + f]);
      s += x * x;
    }
  } else {
    for (let j = 0; j < cols; j++) {
      const x = mergeOperand(dtype, rule, w[f * cols + j], d[f * cols + j]);
      s += x * x;
    }
  }
  return s;
}
