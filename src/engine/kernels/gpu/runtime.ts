/// <reference types="@webgpu/types" />
/**
 * The GPU runtime under the kernels (gpuKernels.ts): device, pipelines, buffers, chunking, the CPU
 * fallback and fault injection.
 */
import { adapterName, OpenGpu } from './dawn';
import { combineShader, PART_WORDS, WG } from './wgsl';

/** Makes the N-th dispatch of each backend fail, as a lost device would (for tests of the CPU fallback). */
export const FAULT_ENV = 'LORA_LENS_GPU_FAULT';

/** Partial records folded into one by the second pass of a reduction. */
const FOLD = 64;

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
export interface ChunkResult {
  out?: Uint8Array;
  partials?: Uint32Array;
  /** Flagged element indices (local to the chunk), or null when more were flagged than fit. */
  flagged?: Uint32Array | null;
}

export interface Dispatch {
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

/**
 * What every GPU kernel stands on: the device, its compiled pipelines (cached), two slots of reusable
 * buffers, dispatches cut into chunks and run two in flight, the fallback to the CPU after the first GPU
 * failure, and fault injection for tests of that fallback. It knows no kernel: gpuKernels.ts holds them.
 */
export class GpuRuntime {
  readonly dev: GPUDevice;
  private readonly pipelines = new Map<string, Promise<GPUComputePipeline>>();
  private readonly slots: Slot[] = [{ buffers: new Map() }, { buffers: new Map() }];
  /** The largest binding the kernels use: the device's limit, or a smaller one a test forces. */
  readonly maxBinding: number;
  readonly sizes: GpuSizes;
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

  constructor(private readonly gpu: OpenGpu, private readonly warn: (message: string) => void, sizes: Partial<GpuSizes>) {
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
  async guarded<T>(what: string, onGpu: () => Promise<T>, onCpu: () => Promise<T>): Promise<T> {
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
  pipeline(key: string, code: () => string): Promise<GPUComputePipeline> {
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
  async pipelined(count: number, make: (i: number) => Dispatch, take: (i: number, r: ChunkResult) => void): Promise<void> {
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
  workgroups(len: number): [number, number] {
    const recordCap = Math.max(1, Math.floor(this.maxBinding / (PART_WORDS * 4 * WG)));
    return [Math.max(1, Math.min(MAX_WORKGROUPS, recordCap, Math.ceil(len / WG))), 1];
  }

  async dispose(): Promise<void> {
    for (const s of this.slots) {
      for (const b of s.buffers.values()) b.destroy();
      s.buffers.clear();
    }
  }

  /** Elementwise kernels over chunks (of an even size, so that two halves pack into one u32). */
  chunks(n: number, make: (start: number, len: number) => Dispatch, take: (start: number, len: number, r: ChunkResult) => void): Promise<void> {
    const size = this.chunkSize();
    const count = Math.ceil(n / size);
    const range = (i: number): [number, number] => [i * size, Math.min(size, n - i * size)];
    return this.pipelined(count, (i) => make(...range(i)), (i, r) => take(...range(i), r));
  }

  /** Elements per chunk: even, and one f32 input's chunk fits one binding. */
  chunkSize(): number {
    return Math.max(2, Math.min(this.sizes.chunkElements, Math.floor(this.maxBinding / 4) & ~1));
  }

  /** Recomputes flagged elements (or the whole chunk, when the list overflowed) with the CPU reference. */
  patch(flagged: Uint32Array | null | undefined, start: number, len: number, cpu: (i0: number, i1: number) => void): void {
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

/** Flags allowed per chunk before the whole chunk is recomputed on the host instead. */
export function flagCapacity(len: number): number {
  return Math.max(1024, Math.ceil(len / 64));
}

export function bytesOf(x: Float32Array, start = 0, len = x.length): Uint8Array {
  return new Uint8Array(x.buffer, x.byteOffset + start * 4, len * 4);
}

export function u32Params(len: number): ArrayBuffer {
  return new Uint32Array([len, 0, 0, 0]).buffer;
}
