/**
 * The CPU backend on worker threads: each large kernel is cut into one contiguous slice per worker
 * (rows for loraDelta, element ranges otherwise), the slices run at once on shared memory, and
 * statistics come back per STATS_CHUNK and are added in index order, so every figure is the same
 * whatever the number of threads. Tensors below PARALLEL_MIN elements, and light kernels whose arrays
 * are not in shared memory (copying them would cost as much as the work), run on the calling thread.
 */
import * as os from 'node:os';
import { elementBytes, FloatDtype } from '../../shared/safetensors/dtypes';
import { bytesToF32, Scratch } from '../safetensors/reader';
import { TensorInfo } from '../../shared/safetensors/header';
import { CpuKernels } from './cpu';
import { addPairStats, addPrecisionStats, allFinite } from './cpuMath';
import { DoraOperand, HalfDtype, Kernels, LoraFactors, MergeDtype, PairStats, PrecisionStats } from './kernels';
import { MergeRule } from '../../shared/jobs/choices';
import { WorkerPool, workerScript } from './pool';
import { PoolOp, runOp, STATS_CHUNK } from './poolOps';
import { wasmLora } from './wasm';

/** Elements below which a kernel stays on the calling thread: posting to the workers costs tens of microseconds. */
export const PARALLEL_MIN = 1 << 17;
/** A job's block (BLOCK_ELEMENTS) has 16 STATS_CHUNKs: more workers than that would sit idle, each costing its own heap. */
const MAX_THREADS = 16;

type Ranged<T> = T extends unknown ? Omit<T, 'i0' | 'i1'> : never;

/** Blocks smaller than this are done on the main thread: a worker's round trip costs more (130,000 empty tensors took 30 s). */
const INLINE_BYTES = 1 << 16;

export class WorkerKernels implements Kernels {
  readonly device = 'cpu' as const;
  readonly description: string;
  readonly sharedMemory = true;
  private pool: WorkerPool | undefined;
  /** Copies of arrays that are not in shared memory, for the kernels heavy enough to pay for the copy. */
  private readonly staging = new Scratch(true);
  /** DoRA's kernels run whole on the calling thread. */
  private readonly local = new CpuKernels();

  constructor(
    readonly threads = Math.min(MAX_THREADS, Math.max(1, os.availableParallelism())),
    private readonly script = workerScript(),
  ) {
    if (script === undefined) throw new Error('the kernel worker script (kernel-worker.js) is missing beside the engine');
    this.description = `CPU, ${threads} worker thread${threads === 1 ? '' : 's'}${wasmLora() ? ', WebAssembly SIMD' : ''}`;
  }

  private workers(): WorkerPool {
    this.pool ??= new WorkerPool(this.threads, this.script!);
    return this.pool;
  }

  /**
   * Runs `op` over [0, n) in one slice per worker (slice bounds on STATS_CHUNK boundaries, so that the
   * statistics chunks are the same as on one thread), or on this thread when n is small.
   */
  private async split(op: Ranged<PoolOp>, n: number, parallel: boolean): Promise<unknown[]> {
    const chunks = Math.ceil(n / STATS_CHUNK);
    const parts = parallel && n >= PARALLEL_MIN ? Math.min(this.threads, chunks) : 1;
    const bound = (p: number): number => Math.min(n, Math.floor((p * chunks) / parts) * STATS_CHUNK);
    const ops = Array.from({ length: parts }, (_, p) => ({ ...op, i0: bound(p), i1: bound(p + 1) }) as PoolOp);
    if (parts === 1) return [runOp(ops[0])];
    return this.workers().run(ops);
  }

  /** Rows of loraDelta: slices of rows, at least PARALLEL_MIN elements each. */
  async loraDelta(f: LoraFactors, out: Float32Array = new Float32Array(f.out * f.in)): Promise<Float32Array> {
    const parts = Math.min(this.threads, Math.floor((f.out * f.in) / PARALLEL_MIN), f.out);
    if (parts <= 1) return this.local.loraDelta(f, out);
    const A = this.shared('A', f.A);
    const B = this.shared('B', f.B);
    const target = isShared(out) ? out : this.staging.f32('delta', out.length);
    const rows = (p: number): number => Math.floor((p * f.out) / parts);
    await this.workers().run(Array.from({ length: parts }, (_, p) => ({ op: 'loraDelta', f: { ...f, A, B }, out: target, i0: rows(p), i1: rows(p + 1) })));
    if (target !== out) out.set(target);
    return out;
  }

  async merge(w: Float32Array, d: Float32Array | null, dtype: MergeDtype, rule: MergeRule, out: Uint8Array): Promise<Uint8Array> {
    const heavy = d !== null && dtype !== 'F32';
    const inShared = isShared(w) && (d === null || isShared(d)) && isShared(out);
    if (inShared || !heavy || w.length < PARALLEL_MIN) {
      await this.split({ op: 'merge', w, d, dtype, rule, out }, w.length, inShared);
      return out;
    }
    const target = this.staging.bytes('merged', out.byteLength);
    await this.split({ op: 'merge', w: this.shared('w', w), d: this.shared('d', d!), dtype, rule, out: target }, w.length, true);
    out.set(target);
    return out;
  }

  async pairStats(a: Float32Array, b: Float32Array | null): Promise<PairStats> {
    const parts = (await this.split({ op: 'pairStats', a, b }, a.length, isShared(a) && (b === null || isShared(b)))) as PairStats[][];
    return parts.flat().reduce(addPairStats);
  }

  async subtract(a: Float32Array, b: Float32Array, out: Float32Array): Promise<Float32Array> {
    await this.split({ op: 'subtract', a, b, out }, a.length, isShared(a) && isShared(b) && isShared(out));
    return out;
  }

  async precision(w: Float32Array, d: Float32Array | null, dtype: HalfDtype, rule: MergeRule): Promise<PrecisionStats> {
    // Several roundings per element: worth copying its inputs into shared memory.
    const big = w.length >= PARALLEL_MIN;
    const sw = big ? this.shared('w', w) : w;
    const sd = big && d !== null ? this.shared('d', d) : d;
    const parts = (await this.split({ op: 'precision', w: sw, d: sd, dtype, rule }, w.length, true)) as PrecisionStats[][];
    return parts.flat().reduce(addPrecisionStats);
  }

  /** bytesToF32 of a raw block, half dtypes decoded on the workers. */
  async decode(t: TensorInfo, raw: Uint8Array, out: Float32Array): Promise<Float32Array> {
    if (raw.byteLength < INLINE_BYTES || (t.dtype !== 'F16' && t.dtype !== 'BF16') || raw.byteOffset % 2 !== 0 || !isShared(raw) || !isShared(out)) return bytesToF32(t, raw, out);
    await this.split({ op: 'decodeHalf', dtype: t.dtype, raw, out }, t.numel, true);
    return out;
  }

  /** allFinite of raw float bytes, on the workers when they are in shared memory. */
  async allFinite(dtype: FloatDtype, raw: Uint8Array): Promise<boolean> {
    const n = raw.byteLength / elementBytes(dtype);
    if (raw.byteLength < INLINE_BYTES || !isShared(raw) || raw.byteOffset % 4 !== 0 || !Number.isInteger(n)) return allFinite(dtype, raw);
    return ((await this.split({ op: 'allFinite', dtype, raw }, n, true)) as boolean[]).every((x) => x);
  }

  async maxAbsInto(acc: Float32Array, x: Float32Array): Promise<Float32Array> {
    await this.split({ op: 'maxAbsInto', acc, x }, acc.length, isShared(acc) && isShared(x));
    return acc;
  }

  /** Slices of rows on the workers, each folding every factor set's delta block by block (see WasmLora.rows). */
  async maxAbsLoraInto(acc: Float32Array, fs: LoraFactors[], float32 = false): Promise<Float32Array> {
    if (fs.length === 0) return acc;
    const m = fs[0].out;
    const parts = Math.min(this.threads, Math.floor((m * fs[0].in * fs.length) / PARALLEL_MIN), m);
    if (parts <= 1) return this.local.maxAbsLoraInto(acc, fs, float32);
    const target = isShared(acc) ? acc : this.staging.f32('acc', acc.length);
    if (target !== acc) target.set(acc);
    const shared = fs.map((f, s) => ({ ...f, A: this.shared(`A${s}`, f.A), B: this.shared(`B${s}`, f.B) }));
    const rows = (p: number): number => Math.floor((p * m) / parts);
    await this.workers().run(Array.from({ length: parts }, (_, p) => ({ op: 'maxAbsLora', fs: shared, acc: target, float32, i0: rows(p), i1: rows(p + 1) })));
    if (target !== acc) acc.set(target);
    return acc;
  }

  doraNorms(v: DoraOperand): Promise<Float64Array> {
    return this.local.doraNorms(v);
  }

  mergeDora(v: DoraOperand, factor: Float32Array, out: Uint8Array): Promise<Uint8Array> {
    return this.local.mergeDora(v, factor, out);
  }

  /** `x` itself when it is in shared memory, else its copy in the staging slot. */
  private shared(slot: string, x: Float32Array): Float32Array {
    if (isShared(x)) return x;
    const s = this.staging.f32(slot, x.length);
    s.set(x);
    return s;
  }

  async dispose(): Promise<void> {
    await this.pool?.dispose();
    this.pool = undefined;
  }
}

export function isShared(x: ArrayBufferView): boolean {
  return x.buffer instanceof SharedArrayBuffer;
}
