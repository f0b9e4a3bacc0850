/// <reference types="@webgpu/types" />
/**
 * The Kernels interface on a WebGPU device. Every result equals the CPU reference (cpuMath.ts): tensors
 * bit for bit, statistics within 1e-6 relative. Elements the GPU cannot compute exactly (non-finite or
 * subnormal operands, a delta too close to an f32 rounding boundary) are flagged by the kernels and
 * recomputed here with the CPU's own functions; a tensor whose inputs the GPU cannot handle at all runs
 * on the CPU and says so through `warn`.
 */
import { mergeRange, pairStatsRange, precisionRange, subtractRange, loraDeltaRows, addPrecisionStats, emptyPairStats, emptyPrecisionStats, addPairStats } from '../cpuMath';
import { CpuKernels } from '../cpu';
import { HalfDtype, Kernels, LoraFactors, MergeDtype, MergeRule, PairStats, PrecisionStats } from '../kernels';
import { adapterName, OpenGpu } from './dawn';
import { combineShader, deltaShader, elementwiseShader, mergeShader, PART_WORDS, pairStatsShader, precisionShader, TILE, WG } from './wgsl';

/** Partial records folded into one by the second pass of a reduction. */
const FOLD = 64;

/** Sizes of the pieces a tensor is cut into (tests make them small to cross every boundary). */
export interface GpuSizes {
  /** Elements per chunk of an elementwise kernel (even): 16 MiB per f32 input by default. */
  chunkElements: number;
  /** Bytes of one row block of a delta (at most the binding limit): 64 MiB by default. */
  blockBytes: number;
}
const DEFAULT_SIZES: GpuSizes = { chunkElements: 1 << 22, blockBytes: 64 << 20 };
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
  readonly description: string;
  private readonly dev: GPUDevice;
  private readonly pipelines = new Map<string, Promise<GPUComputePipeline>>();
  private readonly slots: Slot[] = [{ buffers: new Map() }, { buffers: new Map() }];
  private readonly maxBinding: number;
  private readonly cpu = new CpuKernels();
  /** Elements recomputed on the host after the GPU flagged them, and chunks or tensors wholly recomputed. */
  hostElements = 0;
  hostTensors = 0;

  private readonly sizes: GpuSizes;

  constructor(private readonly gpu: OpenGpu, private readonly warn: (message: string) => void = () => {}, sizes: Partial<GpuSizes> = {}) {
    this.dev = gpu.device;
    this.sizes = { ...DEFAULT_SIZES, ...sizes };
    if (this.sizes.chunkElements % 2 !== 0) throw new Error('chunkElements must be even');
    this.description = `GPU: ${adapterName(gpu.adapter)}, WebGPU`;
    this.maxBinding = gpu.device.limits.maxStorageBufferBindingSize;
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

  private workgroups(len: number): [number, number] {
    return [Math.max(1, Math.min(MAX_WORKGROUPS, Math.ceil(len / WG))), 1];
  }

  /** Flags allowed per chunk before the whole chunk is recomputed on the host instead. */
  private static flagCapacity(len: number): number {
    return Math.max(1024, Math.ceil(len / 64));
  }

  async loraDelta(f: LoraFactors, out = new Float32Array(f.out * f.in)): Promise<Float32Array> {
    const { A, B, r, in: n, out: m, scale, transpose } = f;
    const reason = deltaUnsupported(f) ?? (Math.max(m * r, r * n, n) * 4 > this.maxBinding ? `a ${m}x${n} rank-${r} delta exceeds the GPU's binding size` : null);
    if (reason) {
      this.warn(`GPU: ${reason}; this delta is computed on the CPU`);
      this.hostTensors++;
      loraDeltaRows(f, 0, m, out);
      return out;
    }
    if (m === 0 || n === 0) return out;
    const rowsPerBlock = Math.max(1, Math.min(m, Math.floor(Math.min(this.maxBinding, this.sizes.blockBytes) / (n * 4))));
    const blocks = Math.ceil(m / rowsPerBlock);
    const pipeline = await this.pipeline('delta', deltaShader);
    const sh = Math.fround(scale);
    const sl = Math.fround(scale - sh);
    const bBytes = new Uint8Array(B.buffer, B.byteOffset, m * r * 4);
    const aBytes = new Uint8Array(A.buffer, A.byteOffset, r * n * 4);
    const err = 24 * r * 2 ** -48;
    const underflow = 64 * r * 2 ** -126;
    await this.pipelined(blocks, (b) => {
      const row0 = b * rowsPerBlock;
      const rows = Math.min(rowsPerBlock, m - row0);
      const params = new ArrayBuffer(48);
      new Uint32Array(params, 0, 5).set([n, rows, r, transpose ? 1 : 0, row0]);
      new Float32Array(params, 32, 4).set([sh, sl, err, underflow]);
      return {
        pipeline,
        inputs: [bBytes, aBytes],
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
        loraDeltaRows(f, row0, row0 + rows, out);
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

  async merge(w: Float32Array, d: Float32Array | null, dtype: MergeDtype, rule: MergeRule, out: Uint8Array): Promise<Uint8Array> {
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

  /** DoRA's two steps run on the CPU (rare, and the per-feature norms need a second pass anyway). */
  doraNorms(w: Float32Array, d: Float32Array, rows: number, cols: number, featureIsColumn: boolean, dtype: MergeDtype, rule: MergeRule): Promise<Float64Array> {
    return this.cpu.doraNorms(w, d, rows, cols, featureIsColumn, dtype, rule);
  }

  mergeDora(w: Float32Array, d: Float32Array, factor: Float32Array, cols: number, featureIsColumn: boolean, dtype: MergeDtype, rule: MergeRule, out: Uint8Array): Promise<Uint8Array> {
    return this.cpu.mergeDora(w, d, factor, cols, featureIsColumn, dtype, rule, out);
  }

  async pairStats(a: Float32Array, b: Float32Array | null): Promise<PairStats> {
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

  async subtract(a: Float32Array, b: Float32Array, out: Float32Array): Promise<Float32Array> {
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

  async precision(w: Float32Array, d: Float32Array | null, dtype: HalfDtype, rule: MergeRule): Promise<PrecisionStats> {
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

  async maxAbsInto(acc: Float32Array, x: Float32Array): Promise<Float32Array> {
    const pipeline = await this.pipeline('maxabs', () => elementwiseShader('maxabs'));
    await this.chunks(acc.length, (start, len) => ({
      pipeline, inputs: [bytesOf(acc, start, len), bytesOf(x, start, len)], outBytes: len * 4, params: u32Params(len), workgroups: this.workgroups(len),
    }), (start, len, res) => {
      new Uint8Array(acc.buffer, acc.byteOffset + start * 4, len * 4).set(res.out!);
    });
    return acc;
  }

  async dispose(): Promise<void> {
    for (const s of this.slots) {
      for (const b of s.buffers.values()) b.destroy();
      s.buffers.clear();
    }
  }

  /** Elementwise kernels over chunks (of an even size, so that two halves pack into one u32). */
  private chunks(n: number, make: (start: number, len: number) => Dispatch, take: (start: number, len: number, r: ChunkResult) => void): Promise<void> {
    const size = this.sizes.chunkElements;
    const count = Math.ceil(n / size);
    const range = (i: number): [number, number] => [i * size, Math.min(size, n - i * size)];
    return this.pipelined(count, (i) => make(...range(i)), (i, r) => take(...range(i), r));
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

/** One element of the delta exactly as loraDeltaRows computes it (float64 sum over k in order, one rounding). */
function deltaElement(f: LoraFactors, i: number, j: number): number {
  let acc = 0;
  for (let k = 0; k < f.r; k++) {
    const b = f.B[i * f.r + k];
    if (b !== 0) acc += b * f.A[k * f.in + j];
  }
  return Math.fround(acc * f.scale);
}
