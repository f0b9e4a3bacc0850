/**
 * The low-rank toolbox's heavy work for one job: in WebAssembly SIMD on a shared memory, spread over
 * worker threads (whole modules of a spectrum or of an extraction, one per worker, as they come), or,
 * where the module or the worker script is missing, in the JavaScript references on the calling
 * thread. Either way the same bits (linalg/products.ts). Dispose it at the job's end.
 */
import * as os from 'node:os';
import { fromRows, transpose } from '../linalg/dense';
import { residualSqRef } from '../linalg/products';
import { productSingularValues } from '../linalg/lowrank';
import { denseOperator } from '../linalg/randomized';
import { factorModule, ModuleFactors, ModuleSpec, sketchColumns } from '../linalg/moduleFactors';
import { WorkerPool, workerScript } from './pool';
import { LinalgOp, PoolResult, runOp } from './poolOps';
import { Arena, forgetLinalg, HIST_BYTES, LinalgWasm, linalgModule, linalgOn } from './wasmLinalg';
import { countExponents, taskVectorRef } from '../linalg/taskVector';
import { bytesToF32, Scratch } from '../safetensors/reader';
import { FloatDtype } from '../../shared/safetensors/dtypes';
import { TensorInfo } from '../../shared/safetensors/header';

type WithoutId<T> = T extends unknown ? Omit<T, 'mem'> : never;
type Op = WithoutId<Exclude<LinalgOp, { op: 'linalgMemory' }>>;

export class LinalgPool {
  private readonly arena: Arena | undefined;
  private pool: WorkerPool | undefined;
  private ready: Promise<unknown> | undefined;
  private readonly script = workerScript();
  /** Where each array handed out by floats() lives in the arena. */
  private readonly blocks = new WeakMap<Float32Array, number>();
  /** staging()'s blocks by slot: the byte offset in the arena (none without one) and the whole view. */
  private readonly staged = new Map<string, { at: number | undefined; view: Uint8Array }>();
  private readonly fallback = new Scratch();
  private stateAt: number | undefined;

  constructor(readonly threads = Math.min(16, Math.max(1, os.availableParallelism()))) {
    this.arena = linalgModule() ? new Arena() : undefined;
  }

  get description(): string {
    if (!this.arena) return 'JavaScript, 1 thread';
    return `WebAssembly SIMD, ${this.script ? `${this.threads} worker thread${this.threads === 1 ? '' : 's'}` : '1 thread'}`;
  }

  /** n fp32 values (zeros, unless `zeroed` is false and the caller writes every one) for a matrix the kernels will read: in the shared memory where it can hold them. */
  floats(n: number, zeroed = true): Float32Array {
    const at = this.arena?.alloc(n * 4);
    if (at === undefined) return new Float32Array(n);
    // A block may have held an earlier matrix.
    const x = this.arena!.f32(at, n);
    if (zeroed) x.fill(0);
    this.blocks.set(x, at);
    return x;
  }

  /** The index of x's first NaN or infinity, or -1. */
  firstNonFinite(x: Float32Array): number {
    const at = this.blocks.get(x);
    if (at !== undefined) return linalgOn(this.arena!.id, this.arena!.memory).firstNonFinite(at, x.length);
    for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) return i;
    return -1;
  }

  /**
   * `bytes` bytes to read a tensor block into, for taskVectorBlock() and countExponents(): one block per
   * slot, reused (grown when asked for more), in the shared memory where it can hold it.
   */
  staging(slot: string, bytes: number): Uint8Array {
    const have = this.staged.get(slot);
    if (have !== undefined && have.view.byteLength >= bytes) return have.view.subarray(0, bytes);
    if (have?.at !== undefined) this.arena!.free(have.at);
    const size = Math.max(bytes, Math.ceil((have?.view.byteLength ?? 0) * 1.25), 64);
    const at = this.arena?.alloc(size);
    const view = at === undefined ? new Uint8Array(size) : this.arena!.u8(at, size);
    this.staged.set(slot, { at, view });
    return view.subarray(0, bytes);
  }

  /** The byte offset in the shared memory of a view of it (from staging() or floats()), or undefined. */
  private offsetOf(x: ArrayBufferView): number | undefined {
    return this.arena?.holds(x) ? x.byteOffset : undefined;
  }

  /** The counters and the running sum of taskVectorBlock() and countExponents() in the shared memory. */
  private state(): number {
    this.stateAt ??= this.arena!.alloc(16 + HIST_BYTES)!;
    return this.stateAt;
  }

  /**
   * taskVectorRef on raw blocks `w` and `f` (dtypes `wt` and `ft`, n values each) into `out` (n fp32):
   * in WebAssembly when all three are in the shared memory (from staging() and floats()) and the
   * inputs are fp32 or bf16, else decoded and in JavaScript.
   */
  taskVectorBlock(wt: FloatDtype, w: Uint8Array, ft: FloatDtype, f: Uint8Array, n: number, out: Float32Array, acc: { normSq: number }): number {
    const [wo, fo, oo] = [this.offsetOf(w), this.offsetOf(f), this.offsetOf(out)];
    const fast = (d: FloatDtype, at: number | undefined): boolean => at !== undefined && ((d === 'F32' && at % 4 === 0) || (d === 'BF16' && at % 2 === 0));
    if (oo === undefined || !fast(wt, wo) || !fast(ft, fo)) {
      const decode = (d: FloatDtype, raw: Uint8Array, slot: string): Float32Array =>
        bytesToF32({ dtype: d, numel: n } as TensorInfo, raw, this.fallback.f32(slot, n));
      return taskVectorRef(decode(wt, w, 'w'), decode(ft, f, 'f'), out, acc);
    }
    const sum = this.state();
    const k = linalgOn(this.arena!.id, this.arena!.memory);
    this.arena!.f64(sum, 1)[0] = acc.normSq;
    const bad = k.taskVector(wo!, wt === 'BF16', fo!, ft === 'BF16', n, oo, sum);
    acc.normSq = this.arena!.f64(sum, 1)[0];
    return bad;
  }

  /** countExponents of a raw half-precision block into `hist`: in WebAssembly when the block is from staging(). */
  countExponents(dtype: 'F16' | 'BF16', raw: Uint8Array, hist: Float64Array): void {
    const at = this.offsetOf(raw);
    if (at === undefined || raw.byteOffset % 2 !== 0) return countExponents(dtype, raw, hist);
    linalgOn(this.arena!.id, this.arena!.memory).countExponents(dtype, at, raw.byteLength / 2, this.state() + 16, hist);
  }

  /** Gives back an array from floats(). */
  release(x: Float32Array): void {
    const at = this.blocks.get(x);
    if (at !== undefined) this.arena!.free(at);
    this.blocks.delete(x);
  }

  /** The singular values of B·A (B out × r, A r × inn, fp32 row-major, from floats()), descending. */
  async factorSingularValues(A: Float32Array, B: Float32Array, r: number, inn: number, out: number): Promise<Float64Array> {
    const a = this.blocks.get(A);
    const b = this.blocks.get(B);
    const scratch = a !== undefined && b !== undefined ? this.arena!.alloc(LinalgWasm.gramScratch(r)) : undefined;
    if (scratch === undefined) {
      const L = fromRows(out, r, B.subarray(0, out * r));
      return productSingularValues(L, transpose(fromRows(r, inn, A.subarray(0, r * inn))));
    }
    try {
      return (await this.runOne({ op: 'factorSpectrum', a: a!, b: b!, r, inn, out, scratch })) as Float64Array;
    } finally {
      this.arena!.free(scratch);
    }
  }

  /**
   * extract-lora's work on one module (linalg/moduleFactors.ts) for the m × n fp32 τ `tau` (from
   * floats(); keep it until this settles): on one worker, so that modules run side by side, or in the
   * JavaScript references on this thread.
   */
  async factorModule(tau: Float32Array, spec: ModuleSpec): Promise<ModuleFactors> {
    const t = this.blocks.get(tau);
    const ws = t !== undefined ? this.arena!.alloc(LinalgWasm.workspaceBytes(spec.m, spec.n, sketchColumns(spec))) : undefined;
    if (ws === undefined) {
      const { m, n } = spec;
      return factorModule(denseOperator(tau, m, n), (P, Qt, k) => residualSqRef(tau, P, Qt, m, k, n), spec);
    }
    try {
      return (await this.runOne({ op: 'factorModule', tau: t!, ws, spec })) as ModuleFactors;
    } finally {
      this.arena!.free(ws);
    }
  }

  private async runOne(op: Op): Promise<PoolResult> {
    const mem = this.arena!.id;
    if (this.script === undefined) {
      linalgOn(mem, this.arena!.memory);
      return runOp({ ...op, mem });
    }
    if (this.pool === undefined) {
      // Every worker gets the memory once, up front (posting it with each op costs milliseconds).
      this.pool = new WorkerPool(this.threads, this.script);
      this.ready = this.pool.run(Array.from({ length: this.threads }, () => ({ op: 'linalgMemory', mem, memory: this.arena!.memory })));
    }
    await this.ready;
    return this.pool.runOne({ ...op, mem });
  }

  async dispose(): Promise<void> {
    await this.pool?.dispose();
    this.pool = undefined;
    if (this.arena) forgetLinalg(this.arena.id);
  }
}
