/// <reference types="@webgpu/types" />
/**
 * The Kernels interface on a WebGPU device. Every result equals the CPU reference (cpuMath.ts): tensors
 * bit for bit, statistics within 1e-6 relative. Elements the GPU cannot compute exactly (non-finite or
 * subnormal operands, a delta too close to an f32 rounding boundary) are flagged by the kernels and
 * recomputed here with the CPU's own functions; a tensor whose inputs the GPU cannot handle at all runs
 * on the CPU and says so through `warn`.
 */
import { mergeDoraRange, mergeOperand, mergeRange, pairStatsRange, precisionRange, subtractRange, addPrecisionStats, emptyPairStats, emptyPrecisionStats, addPairStats } from '../cpuMath';
import { CpuKernels } from '../cpu';
import { loraRows } from '../wasm';
import { HalfDtype, Kernels, LoraFactors, MergeDtype, PairStats, PrecisionStats } from '../kernels';
import { MergeRule } from '../../../shared/jobs/choices';
import { FloatDtype } from '../../../shared/safetensors/dtypes';
import { TensorInfo } from '../../../shared/safetensors/header';
import { adapterName, OpenGpu } from './dawn';
import { combineShader, deltaShader, doraNormsShader, elementwiseShader, mergeDoraShader, mergeShader, PART_WORDS, pairStatsShader, precisionShader, TILE, WG } from './wgsl';

/** Makes the N-th dispatch of each backend fail, as a lost device would (for tests of the CPU fallback). */
export const FAULT_ENV = 'LORA_LENS_GPU_FAULT';

/** Partial records folded into one by the second pass of a reduction. */
const FOLD = 64;
/** Partial sums per DoRA feature (each lane sums every LANES-th element of the feature). */
const LANES = 64;

/** Sizes of the pieces a tensor is cut into (tests make them small to cross every boundary). */
export interface GpuSizes {
  /** Elements per chunk of an elementwise kernel (even): 16 MiB per f32 input by default. */
  chunkElements: number;
  /** Bytes of one row block of a delta (at most the binding limit): 64 MiB by default. */
  blockBytes: number;
  /**
   * The largest storage binding the kernels may use, below the device's own limit (128 MiB on lavapipe
   * and on many GPUs): tests force a small one so that tensors of a few KiB are split like large ones.
   */
  maxBindingBytes: number;
}
const DEFAULT_SIZES: GpuSizes = { chunkElements: 1 << 22, blockBytes: 64 << 20, maxBindingBytes: Infinity };
const MAX_WORKGROUPS = 1024;

interface Slot {
  buffers: Map<string, GPUBuffer>;
}

/** What one chunk's kernel reads back, as u32 views of the mapped staging buffer (valid during the callback). */
interface ChunkResult {
  out?: Uint8Array;
  partials?: Uint32Array;
  /** Flagged element indices (local to the chunk), or null when more were flagged than fit. */
  flagged?: Uint32Array | null;
}

interface Dispatch {
  pipeline: GPUComputePipeline;
  /** Inputs bound at 0, 1, ... (byte views of the chunk's f32 data). */
  inputs: Uint8Array[];
  /** Output bytes (binding 4) and flag capacity (binding 6). */
  outBytes?: number;
  flagCapacity?: number;
  /** A reduction: one partial record per invocation, folded by a second pass into the read-back partials. */
  reduce?: boolean;
  params: ArrayBuffer;
  workgroups: [number, number];
}

export class GpuKernels implements Kernels {
  readonly device = 'gpu' as const;
  readonly sharedMemory = false;
  private readonly dev: GPUDevice;
  private readonly pipelines = new Map<string, Promise<GPUComputePipeline>>();
  private readonly slots: Slot[] = [{ buffers: new Map() }, { buffers: new Map() }];
  private readonly maxBinding: number;
  private readonly cpu = new CpuKernels();
  private readonly adapterDescription: string;
  /** Why the GPU is no longer used (set by the first GPU failure), or undefined. */
  private broken: string | undefined;
  /** Why the GPU was abandoned for the CPU, or undefined while it works. */
  get failure(): string | undefined {
    return this.broken;
  }

  /** The dispatch that fails on purpose (LORA_LENS_GPU_FAULT=N: tests of the fallback through whole jobs). */
  private readonly faultAt = Number(process.env[FAULT_ENV] ?? 0);
  /** Dispatches run (tests check that large tensors are split). */
  dispatches = 0;
  /** Elements recomputed on the host after the GPU flagged them, and chunks or tensors wholly recomputed. */
  hostElements = 0;
  hostTensors = 0;

  private readonly sizes: GpuSizes;

  constructor(private readonly gpu: OpenGpu, private readonly warn: (message: string) => void = () => {}, sizes: Partial<GpuSizes> = {}) {
    this.dev = gpu.device;
    this.sizes = { ...DEFAULT_SIZES, ...sizes };
    if (this.sizes.chunkElements % 2 !== 0) throw new Error('chunkElements must be even');
    this.adapterDescription = `GPU: ${adapterName(gpu.adapter)}, WebGPU`;
    this.maxBinding = Math.min(gpu.device.limits.maxStorageBufferBindingSize, this.sizes.maxBindingBytes);
  }

  /** The adapter, and whether (and why) the job went on on the CPU after a GPU failure: reports show this. */
  get description(): string {
    return this.broken === undefined ? this.adapterDescription : `${this.adapterDescription}; after a GPU failure the rest ran on the CPU (${this.broken})`;
  }

  /**
   * Runs a kernel on the GPU, or on the CPU once the GPU has failed (a device lost, an out-of-memory or
   * validation error): the failing kernel is recomputed on the CPU from its inputs, said once through
   * `warn`, and every later kernel of this backend runs on the CPU, so a job never returns a result the
   * GPU may have corrupted.
   */
  private async guarded<T>(what: string, onGpu: () => Promise<T>, onCpu: () => Promise<T>): Promise<T> {
    if (this.broken !== undefined) return onCpu();
    try {
      return await onGpu();
    } catch (e) {
      this.broken = `${what}: ${(e as Error).message.split('\n')[0]}`;
      this.hostTensors++;
      this.warn(`GPU failure in ${this.broken}; this and every later kernel of the job run on the CPU`);
      return onCpu();
    }
  }

  /** A compiled kernel (cached); a WGSL error rejects. */
  private pipeline(key: string, code: () => string): Promise<GPUComputePipeline> {
    let p = this.pipelines.get(key);
    if (!p) {
      p = this.dev.createComputePipelineAsync({ layout: 'auto', compute: { module: this.dev.createShaderModule({ code: code() }), entryPoint: 'main' } });
      this.pipelines.set(key, p);
    }
    return p;
  }

  /** A reusable buffer of at least `size` bytes (grown by replacement). */
  private buffer(slot: Slot, name: string, size: number, usage: number): GPUBuffer {
    const want = Math.max(16, Math.ceil(size / 16) * 16);
    let b = slot.buffers.get(name);
    if (!b || b.size < want) {
      b?.destroy();
      b = this.dev.createBuffer({ size: want, usage });
      slot.buffers.set(name, b);
    }
    return b;
  }

  /**
   * Runs `count` dispatches, two in flight: while the GPU computes one, the host uploads the next
   * and copies the previous one's results out of its mapped staging buffer.
   */
  private async pipelined(count: number, make: (i: number) => Dispatch, take: (i: number, r: ChunkResult) => void): Promise<void> {
    const U = this.gpu.bufferUsage;
    const storage = U.STORAGE | U.COPY_DST | U.COPY_SRC;
    this.dev.pushErrorScope('validation');
    this.dev.pushErrorScope('out-of-memory');
    const done = this.run(count, make, take, storage).then(() => undefined, (e: unknown) => e);
    const failure = await done;
    const gpuError = (await this.dev.popErrorScope()) ?? (await this.dev.popErrorScope());
    if (gpuError) throw new Error(`GPU error: ${gpuError.message}`);
    if (failure) throw failure;
  }

  private async run(count: number, make: (i: number) => Dispatch, take: (i: number, r: ChunkResult) => void, storage: number): Promise<void> {
    const U = this.gpu.bufferUsage;
    let previous: Promise<void> = Promise.resolve();
    for (let i = 0; i < count; i++) {
      const slot = this.slots[i & 1];
      const d = make(i);
      const entries: GPUBindGroupEntry[] = [];
      d.inputs.forEach((bytes, k) => {
        const b = this.buffer(slot, `in${k}`, bytes.byteLength, storage);
        this.dev.queue.writeBuffer(b, 0, bytes.buffer, bytes.byteOffset, bytes.byteLength);
        entries.push({ binding: k, resource: { buffer: b, size: Math.max(4, bytes.byteLength) } });
      });
      const layout: { name: string; binding: number; bytes: number }[] = [];
      if (d.outBytes !== undefined) layout.push({ name: 'out', binding: 4, bytes: Math.ceil(d.outBytes / 4) * 4 });
      const records = d.workgroups[0] * d.workgroups[1] * WG;
      const partialWords = Math.ceil(records / FOLD) * PART_WORDS;
      if (d.reduce) layout.push({ name: 'part', binding: 5, bytes: partialWords * 4 });
      if (d.flagCapacity !== undefined) layout.push({ name: 'flags', binding: 6, bytes: (d.flagCapacity + 1) * 4 });
      let staged = 0;
      const offsets: number[] = [];
      for (const l of layout) {
        const b = this.buffer(slot, l.name, l.bytes, storage);
        if (l.name === 'flags') this.dev.queue.writeBuffer(b, 0, new Uint32Array(1));
        if (l.name !== 'part') entries.push({ binding: l.binding, resource: { buffer: b, size: l.bytes } });
        offsets.push(staged);
        staged += l.bytes;
      }
      const scratch = d.reduce ? this.buffer(slot, 'scratch', records * PART_WORDS * 4, storage) : undefined;
      if (scratch) entries.push({ binding: 5, resource: { buffer: scratch, size: records * PART_WORDS * 4 } });
      const params = this.buffer(slot, 'params', d.params.byteLength, U.UNIFORM | U.COPY_DST);
      this.dev.queue.writeBuffer(params, 0, d.params);
      entries.push({ binding: 7, resource: { buffer: params, size: d.params.byteLength } });

      for (const e of entries) {
        const size = (e.resource as GPUBufferBinding).size ?? 0;
        if (e.binding !== 7 && size > this.maxBinding) throw new Error(`internal: a ${size}-byte binding exceeds the ${this.maxBinding}-byte limit`);
      }
      if (++this.dispatches === this.faultAt) throw new Error(`injected fault at dispatch ${this.faultAt} (${FAULT_ENV})`);
      const enc = this.dev.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, this.dev.createBindGroup({ layout: d.pipeline.getBindGroupLayout(0), entries }));
      pass.dispatchWorkgroups(d.workgroups[0], d.workgroups[1]);
      if (scratch) {
        const fold = await this.pipeline('combine', combineShader);
        const foldParams = this.buffer(slot, 'foldParams', 16, U.UNIFORM | U.COPY_DST);
        this.dev.queue.writeBuffer(foldParams, 0, new Uint32Array([records, 0, FOLD, 0]));
        pass.setPipeline(fold);
        pass.setBindGroup(0, this.dev.createBindGroup({
          layout: fold.getBindGroupLayout(0),
          entries: [
            { binding: 0, resource: { buffer: scratch, size: records * PART_WORDS * 4 } },
            { binding: 5, resource: { buffer: slot.buffers.get('part')!, size: partialWords * 4 } },
            { binding: 7, resource: { buffer: foldParams, size: 16 } },
          ],
        }));
        pass.dispatchWorkgroups(Math.ceil(records / FOLD / WG));
      }
      pass.end();
      const readback = this.buffer(slot, 'readback', staged, U.MAP_READ | U.COPY_DST);
      layout.forEach((l, k) => enc.copyBufferToBuffer(slot.buffers.get(l.name)!, 0, readback, offsets[k], l.bytes));
      this.dev.queue.submit([enc.finish()]);
      const mapped = readback.mapAsync(this.gpu.mapRead, 0, Math.max(4, staged));
      await previous;
      previous = mapped.then(() => {
        const view = readback.getMappedRange(0, Math.max(4, staged));
        const r: ChunkResult = {};
        layout.forEach((l, k) => {
          if (l.name === 'out') r.out = new Uint8Array(view, offsets[k], d.outBytes);
          else if (l.name === 'part') r.partials = new Uint32Array(view, offsets[k], partialWords);
          else {
            const f = new Uint32Array(view, offsets[k], d.flagCapacity! + 1);
            r.flagged = f[0] > d.flagCapacity! ? null : f.subarray(1, 1 + f[0]);
          }
        });
        try {
          take(i, r);
        } finally {
          readback.unmap();
        }
      });
    }
    await previous;
  }

  /** A grid-stride dispatch over `len` items; capped so that a reduction's per-invocation records fit one binding. */
  private workgroups(len: number): [number, number] {
    const recordCap = Math.max(1, Math.floor(this.maxBinding / (PART_WORDS * 4 * WG)));
    return [Math.max(1, Math.min(MAX_WORKGROUPS, recordCap, Math.ceil(len / WG))), 1];
  }

  /** Flags allowed per chunk before the whole chunk is recomputed on the host instead. */
  private static flagCapacity(len: number): number {
    return Math.max(1024, Math.ceil(len / 64));
  }

  loraDelta(f: LoraFactors, out = new Float32Array(f.out * f.in)): Promise<Float32Array> {
    return this.guarded('loraDelta', () => this.loraDeltaGpu(f, out), () => this.cpu.loraDelta(f, out));
  }

  /**
   * The delta in row blocks: each block's output (and its rows of B) fits one binding, so a delta of any
   * size (a 12288 x 12288 fp32 delta is 576 MiB, over the usual 128 MiB limit) runs in pieces.
   */
  private async loraDeltaGpu(f: LoraFactors, out: Float32Array): Promise<Float32Array> {
    const { A, B, r, in: n, out: m, scale, transpose } = f;
    const reason = deltaUnsupported(f) ?? (Math.max(r * n, n, r) * 4 > this.maxBinding ? `a ${m}x${n} rank-${r} delta's factor A exceeds the GPU's binding size` : null);
    if (reason) {
      this.warn(`GPU: ${reason}; this delta is computed on the CPU`);
      this.hostTensors++;
      loraRows(f, 0, m, out);
      return out;
    }
    if (m === 0 || n === 0) return out;
    const rowsPerBlock = Math.max(1, Math.min(m, Math.floor(Math.min(this.maxBinding, this.sizes.blockBytes) / (Math.max(n, r) * 4))));
    const blocks = Math.ceil(m / rowsPerBlock);
    const pipeline = await this.pipeline('delta', deltaShader);
    const aBytes = new Uint8Array(A.buffer, A.byteOffset, r * n * 4);
    const err = 24 * r * 2 ** -48;
    const underflow = 64 * r * 2 ** -126;
    await this.pipelined(blocks, (b) => {
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
        flagCapacity: GpuKernels.flagCapacity(rows * n),
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
        this.hostTensors++;
        loraRows(f, row0, row0 + rows, out);
        return;
      }
      this.hostElements += res.flagged!.length;
      for (const local of res.flagged!) {
        const i = row0 + Math.floor(local / n);
        const j = local % n;
        out[transpose ? j * m + i : i * n + j] = deltaElement(f, i, j);
      }
    });
    return out;
  }

  merge(w: Float32Array, d: Float32Array | null, dtype: MergeDtype, rule: MergeRule, out: Uint8Array): Promise<Uint8Array> {
    return this.guarded('merge', () => this.mergeGpu(w, d, dtype, rule, out), () => this.cpu.merge(w, d, dtype, rule, out));
  }

  private async mergeGpu(w: Float32Array, d: Float32Array | null, dtype: MergeDtype, rule: MergeRule, out: Uint8Array): Promise<Uint8Array> {
    const n = w.length;
    if (dtype === 'F32' && d === null) {
      new Uint8Array(out.buffer, out.byteOffset, n * 4).set(bytesOf(w));
      return out;
    }
    const pipeline = await this.pipeline(`merge:${dtype}:${rule}:${d !== null}`, () => mergeShader(dtype, rule, d !== null));
    const width = dtype === 'F32' ? 4 : 2;
    await this.chunks(n, (start, len) => ({
      pipeline,
      inputs: d === null ? [bytesOf(w, start, len)] : [bytesOf(w, start, len), bytesOf(d, start, len)],
      outBytes: len * width,
      flagCapacity: d === null ? undefined : GpuKernels.flagCapacity(len),
      params: u32Params(len),
      workgroups: this.workgroups(dtype === 'F32' ? len : Math.ceil(len / 2)),
    }), (start, len, res) => {
      out.set(res.out!, start * width);
      this.patch(res.flagged, start, len, (i0, i1) => mergeRange(w, d, dtype, rule, out, i0, i1));
    });
    return out;
  }

  doraNorms(w: Float32Array, d: Float32Array, rows: number, cols: number, featureIsColumn: boolean, dtype: MergeDtype, rule: MergeRule): Promise<Float64Array> {
    const cpu = (): Promise<Float64Array> => this.cpu.doraNorms(w, d, rows, cols, featureIsColumn, dtype, rule);
    return this.guarded('doraNorms', () => this.doraNormsGpu(w, d, rows, cols, featureIsColumn, dtype, rule, cpu), cpu);
  }

  /**
   * Norms whose f32 rounding (the job divides the magnitude by f(norm)) equals the CPU's: the GPU's
   * double-float sums carry an error bound, and a feature whose interval [S - err, S + err], with the
   * CPU's own float64 rounding error included, does not give one f(sqrt) is recomputed here exactly as
   * the CPU does (same order, float64). Features holding a flagged element are recomputed the same way.
   */
  private async doraNormsGpu(w: Float32Array, d: Float32Array, rows: number, cols: number, featureIsColumn: boolean, dtype: MergeDtype, rule: MergeRule, cpu: () => Promise<Float64Array>): Promise<Float64Array> {
    const features = featureIsColumn ? cols : rows;
    const sums = new Float64Array(features);
    if (rows === 0 || cols === 0) return sums;
    // The partial sums (8 bytes per lane, at most one lane per element) must fit one binding too.
    const budget = Math.min(this.chunkSize(), Math.floor(this.maxBinding / 8));
    if (cols > budget) {
      this.warn(`GPU: a row of ${cols} elements exceeds the GPU's binding size; these DoRA norms are computed on the CPU`);
      this.hostTensors++;
      return cpu();
    }
    const pipeline = await this.pipeline(`dora-norms:${dtype}:${rule}:${featureIsColumn}`, () => doraNormsShader(dtype, rule, featureIsColumn));
    const perChunk = Math.max(1, Math.floor(budget / cols));
    const chunks = Math.ceil(rows / perChunk);
    const recompute = new Set<number>();
    let overflow = false;
    /** Elements one lane summed at most (over all chunks for a column) and partial sums per feature: for the error bound. */
    let laneElements = 0;
    let partials = 0;
    const lanesOf = (chunkRows: number): number => Math.max(1, Math.min(LANES, Math.floor((featureIsColumn ? chunkRows : cols) / 2)));
    await this.pipelined(chunks, (c) => {
      const r0 = c * perChunk;
      const n = Math.min(perChunk, rows - r0);
      const lanes = lanesOf(n);
      const items = (featureIsColumn ? cols : n) * lanes;
      return {
        pipeline,
        inputs: [bytesOf(w, r0 * cols, n * cols), bytesOf(d, r0 * cols, n * cols)],
        outBytes: items * 8,
        flagCapacity: GpuKernels.flagCapacity(n * cols),
        params: new Uint32Array([n, cols, lanes, 0]).buffer,
        workgroups: this.workgroups(items),
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
      this.hostTensors++;
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
        norms[f] = Math.sqrt(doraFeatureSq(w, d, rows, cols, featureIsColumn, dtype, rule, f));
      } else norms[f] = Math.sqrt(s);
    }
    this.hostElements += recompute.size * along;
    return norms;
  }

  mergeDora(w: Float32Array, d: Float32Array, factor: Float32Array, cols: number, featureIsColumn: boolean, dtype: MergeDtype, rule: MergeRule, out: Uint8Array): Promise<Uint8Array> {
    return this.guarded('mergeDora', () => this.mergeDoraGpu(w, d, factor, cols, featureIsColumn, dtype, rule, out), () => this.cpu.mergeDora(w, d, factor, cols, featureIsColumn, dtype, rule, out));
  }

  private async mergeDoraGpu(w: Float32Array, d: Float32Array, factor: Float32Array, cols: number, featureIsColumn: boolean, dtype: MergeDtype, rule: MergeRule, out: Uint8Array): Promise<Uint8Array> {
    const n = w.length;
    if (n === 0 || cols === 0) return out;
    if (factor.length * 4 > this.maxBinding) {
      this.warn(`GPU: ${factor.length} DoRA factors exceed the GPU's binding size; this merge is computed on the CPU`);
      this.hostTensors++;
      return this.cpu.mergeDora(w, d, factor, cols, featureIsColumn, dtype, rule, out);
    }
    const pipeline = await this.pipeline(`merge-dora:${dtype}:${rule}:${featureIsColumn}`, () => mergeDoraShader(dtype, rule, featureIsColumn));
    const width = dtype === 'F32' ? 4 : 2;
    const factorBytes = bytesOf(factor);
    const spill = new Set<number>();
    await this.chunks(n, (start, len) => ({
      pipeline,
      inputs: [bytesOf(w, start, len), bytesOf(d, start, len), factorBytes],
      outBytes: len * width,
      flagCapacity: GpuKernels.flagCapacity(len),
      params: new Uint32Array([len, 0, start, cols]).buffer,
      workgroups: this.workgroups(dtype === 'F32' ? len : Math.ceil(len / 2)),
    }), (start, len, res) => {
      out.set(res.out!, start * width);
      const rows = res.flagged === null ? null : new Set([...res.flagged!].map((i) => Math.floor((start + i) / cols)));
      if (rows === null) {
        this.hostTensors++;
        mergeDoraRange(w, d, factor, cols, featureIsColumn, dtype, rule, out, Math.floor(start / cols), Math.ceil((start + len) / cols));
        return;
      }
      // Whole rows are recomputed: cheap (flags are rare) and exactly the CPU's function. A row can
      // reach into the next chunk, whose bytes arrive later and overwrite it: fix those after all chunks.
      for (const row of rows) {
        if ((row + 1) * cols > start + len) spill.add(row);
        else mergeDoraRange(w, d, factor, cols, featureIsColumn, dtype, rule, out, row, row + 1);
        this.hostElements += cols;
      }
    });
    for (const row of spill) mergeDoraRange(w, d, factor, cols, featureIsColumn, dtype, rule, out, row, row + 1);
    return out;
  }

  pairStats(a: Float32Array, b: Float32Array | null): Promise<PairStats> {
    return this.guarded('pairStats', () => this.pairStatsGpu(a, b), () => this.cpu.pairStats(a, b));
  }

  private async pairStatsGpu(a: Float32Array, b: Float32Array | null): Promise<PairStats> {
    const pipeline = await this.pipeline(`pair:${b !== null}`, () => pairStatsShader(b !== null));
    const words = PART_WORDS;
    let s = emptyPairStats();
    let big = 0;
    let tiny = 0;
    await this.chunks(a.length, (start, len) => {
      const wg = this.workgroups(len);
      return { pipeline, inputs: b === null ? [bytesOf(a, start, len)] : [bytesOf(a, start, len), bytesOf(b, start, len)], reduce: true, params: u32Params(len), workgroups: wg };
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
      this.hostTensors++;
      return pairStatsRange(a, b, 0, a.length);
    }
    return s;
  }

  subtract(a: Float32Array, b: Float32Array, out: Float32Array): Promise<Float32Array> {
    return this.guarded('subtract', () => this.subtractGpu(a, b, out), () => this.cpu.subtract(a, b, out));
  }

  private async subtractGpu(a: Float32Array, b: Float32Array, out: Float32Array): Promise<Float32Array> {
    const pipeline = await this.pipeline('subtract', () => elementwiseShader('subtract'));
    await this.chunks(a.length, (start, len) => ({
      pipeline, inputs: [bytesOf(a, start, len), bytesOf(b, start, len)], outBytes: len * 4,
      flagCapacity: GpuKernels.flagCapacity(len), params: u32Params(len), workgroups: this.workgroups(len),
    }), (start, len, res) => {
      new Uint8Array(out.buffer, out.byteOffset + start * 4, len * 4).set(res.out!);
      this.patch(res.flagged, start, len, (i0, i1) => subtractRange(a, b, out, i0, i1));
    });
    return out;
  }

  precision(w: Float32Array, d: Float32Array | null, dtype: HalfDtype, rule: MergeRule): Promise<PrecisionStats> {
    return this.guarded('precision', () => this.precisionGpu(w, d, dtype, rule), () => this.cpu.precision(w, d, dtype, rule));
  }

  private async precisionGpu(w: Float32Array, d: Float32Array | null, dtype: HalfDtype, rule: MergeRule): Promise<PrecisionStats> {
    // Without a delta every rule gives r(W): one shader per dtype.
    const shaderRule = d === null ? 'peft' : rule;
    const pipeline = await this.pipeline(`precision:${dtype}:${shaderRule}:${d !== null}`, () => precisionShader(dtype, shaderRule, d !== null));
    const words = PART_WORDS;
    let s = emptyPrecisionStats();
    await this.chunks(w.length, (start, len) => {
      const wg = this.workgroups(len);
      return {
        pipeline, inputs: d === null ? [bytesOf(w, start, len)] : [bytesOf(w, start, len), bytesOf(d, start, len)],
        reduce: true, flagCapacity: GpuKernels.flagCapacity(len), params: u32Params(len), workgroups: wg,
      };
    }, (start, len, res) => {
      if (res.flagged === null) {
        this.hostTensors++;
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
      this.hostElements += res.flagged!.length;
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
    return this.guarded('maxAbsInto', () => this.maxAbsIntoGpu(acc, x), () => this.cpu.maxAbsInto(acc, x));
  }

  private async maxAbsIntoGpu(acc: Float32Array, x: Float32Array): Promise<Float32Array> {
    const pipeline = await this.pipeline('maxabs', () => elementwiseShader('maxabs'));
    await this.chunks(acc.length, (start, len) => ({
      pipeline, inputs: [bytesOf(acc, start, len), bytesOf(x, start, len)], outBytes: len * 4, params: u32Params(len), workgroups: this.workgroups(len),
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

  async dispose(): Promise<void> {
    for (const s of this.slots) {
      for (const b of s.buffers.values()) b.destroy();
      s.buffers.clear();
    }
  }

  /** Elementwise kernels over chunks (of an even size, so that two halves pack into one u32). */
  private chunks(n: number, make: (start: number, len: number) => Dispatch, take: (start: number, len: number, r: ChunkResult) => void): Promise<void> {
    const size = this.chunkSize();
    const count = Math.ceil(n / size);
    const range = (i: number): [number, number] => [i * size, Math.min(size, n - i * size)];
    return this.pipelined(count, (i) => make(...range(i)), (i, r) => take(...range(i), r));
  }

  /** Elements per chunk: even, and one f32 input's chunk fits one binding. */
  private chunkSize(): number {
    return Math.max(2, Math.min(this.sizes.chunkElements, Math.floor(this.maxBinding / 4) & ~1));
  }

  /** Recomputes flagged elements (or the whole chunk, when the list overflowed) with the CPU reference. */
  private patch(flagged: Uint32Array | null | undefined, start: number, len: number, cpu: (i0: number, i1: number) => void): void {
    if (flagged === undefined) return;
    if (flagged === null) {
      this.hostTensors++;
      cpu(start, start + len);
      return;
    }
    this.hostElements += flagged.length;
    for (const i of flagged) cpu(start + i, start + i + 1);
  }
}

function bytesOf(x: Float32Array, start = 0, len = x.length): Uint8Array {
  return new Uint8Array(x.buffer, x.byteOffset + start * 4, len * 4);
}

function u32Params(len: number): ArrayBuffer {
  return new Uint32Array([len, 0, 0, 0]).buffer;
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
function doraFeatureSq(w: Float32Array, d: Float32Array, rows: number, cols: number, featureIsColumn: boolean, dtype: MergeDtype, rule: MergeRule, f: number): number {
  let s = 0;
  if (featureIsColumn) {
    for (let i = 0; i < rows; i++) {
      const v = mergeOperand(dtype, rule, w[i * cols + f], d[i * cols + f]);
      s += v * v;
    }
  } else {
    for (let j = 0; j < cols; j++) {
      const v = mergeOperand(dtype, rule, w[f * cols + j], d[f * cols + j]);
      s += v * v;
    }
  }
  return s;
}
