/**
 * The low-rank toolbox's heavy products for one job: in WebAssembly SIMD on a shared memory, spread over
 * worker threads (a product's rows in one slice per worker; whole modules of a spectrum one per worker,
 * as they come), or, where the module or the worker script is missing, in the JavaScript references
 * on the calling thread. Either way the same bits (linalg/products.ts). Dispose it at the job's end.
 */
import * as os from 'node:os';
import { fromRows, Mat, transpose, zeros } from '../linalg/dense';
import { gemmRef, residualRowsRef } from '../linalg/products';
import { productSingularValues } from '../linalg/lowrank';
import { LinearOperator } from '../linalg/randomized';
import { WorkerPool, workerScript } from './pool';
import { LinalgOp, PoolResult, runOp } from './poolOps';
import { Arena, forgetLinalg, GEMM_COLUMNS, LinalgWasm, linalgModule, linalgOn } from './wasmLinalg';

type WithoutId<T> = T extends unknown ? Omit<T, 'mem'> : never;
type Op = WithoutId<Exclude<LinalgOp, { op: 'linalgMemory' }>>;

export class LinalgPool {
  private readonly arena: Arena | undefined;
  private pool: WorkerPool | undefined;
  private ready: Promise<unknown> | undefined;
  private readonly script = workerScript();
  /** Where each array handed out by floats() lives in the arena. */
  private readonly blocks = new WeakMap<Float32Array, number>();

  constructor(readonly threads = Math.min(16, Math.max(1, os.availableParallelism()))) {
    this.arena = linalgModule() ? new Arena() : undefined;
  }

  get description(): string {
    if (!this.arena) return 'JavaScript, 1 thread';
    return `WebAssembly SIMD, ${this.script ? `${this.threads} worker thread${this.threads === 1 ? '' : 's'}` : '1 thread'}`;
  }

  /** n fp32 zeros for a matrix the kernels will read: in the shared memory where it can hold them. */
  floats(n: number): Float32Array {
    const at = this.arena?.alloc(n * 4);
    if (at === undefined) return new Float32Array(n);
    // A block may have held an earlier matrix.
    const x = this.arena!.f32(at, n).fill(0);
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

  /** The m × n fp32 matrix `tau` (from floats()) as an operator: M·X and Mᵀ·Y in gemm order (gemmRef). */
  operator(tau: Float32Array, m: number, n: number): LinearOperator {
    return {
      rows: m,
      cols: n,
      times: (X) => this.product(tau, m, n, n, 1, X),
      timesT: (Y) => this.product(tau, n, m, 1, n, Y),
    };
  }

  /** M·X for M rows × K with M[i][k] = tau[i·sr + k·sk]. */
  private async product(tau: Float32Array, rows: number, K: number, sr: number, sk: number, X: Mat): Promise<Mat> {
    const l = X.cols;
    const lp = Math.ceil(l / GEMM_COLUMNS) * GEMM_COLUMNS;
    const t = this.blocks.get(tau);
    const xb = t !== undefined ? this.arena!.alloc(K * lp * 8) : undefined;
    const yb = xb !== undefined ? this.arena!.alloc(rows * lp * 8) : undefined;
    const Y = zeros(rows, l);
    try {
      if (yb === undefined) {
        gemmRef(tau, sr, sk, rows, K, X.data, l, l, Y.data, l);
        return Y;
      }
      const x = this.arena!.f64(xb!, K * lp);
      x.fill(0);
      for (let k = 0; k < K; k++) x.set(X.data.subarray(k * l, (k + 1) * l), k * lp);
      await this.rows(rows, (i0, i1) => ({ op: 'gemm', M: t! + i0 * sr * 4, sr, sk, rows: i1 - i0, K, X: xb!, lp, Y: yb + i0 * lp * 8 }));
      const y = this.arena!.f64(yb, rows * lp);
      for (let i = 0; i < rows; i++) Y.data.set(y.subarray(i * lp, i * lp + l), i * l);
      return Y;
    } finally {
      if (xb !== undefined) this.arena!.free(xb);
      if (yb !== undefined) this.arena!.free(yb);
    }
  }

  /** ‖tau − P·Qt‖²_F (tau m × n from floats(), P m × k, Qt k × n), as Σ_i of residualRowsRef's row sums in row order. */
  async residualSq(tau: Float32Array, m: number, n: number, P: Float32Array, Qt: Float32Array, k: number): Promise<number> {
    const rowSums = new Float64Array(m);
    const t = this.blocks.get(tau);
    const p = t !== undefined ? this.arena!.alloc(m * k * 4) : undefined;
    const q = p !== undefined ? this.arena!.alloc(k * n * 4) : undefined;
    const o = q !== undefined ? this.arena!.alloc(m * 8) : undefined;
    try {
      if (o === undefined) residualRowsRef(tau, P, Qt, m, k, n, rowSums);
      else {
        this.arena!.f32(p!, m * k).set(P.subarray(0, m * k));
        this.arena!.f32(q!, k * n).set(Qt.subarray(0, k * n));
        await this.rows(m, (i0, i1) => ({ op: 'residual', tau: t! + i0 * n * 4, P: p! + i0 * k * 4, Qt: q!, rows: i1 - i0, k, n, out: o + i0 * 8 }));
        rowSums.set(this.arena!.f64(o, m));
      }
    } finally {
      for (const b of [p, q, o]) if (b !== undefined) this.arena!.free(b);
    }
    let sum = 0;
    for (const x of rowSums) sum += x;
    return sum;
  }

  /** One op per worker over a slice of [0, rows) each. */
  private async rows(rows: number, op: (i0: number, i1: number) => Op): Promise<void> {
    const parts = Math.max(1, Math.min(this.threads, Math.floor(rows / 3)));
    const bound = (p: number): number => Math.floor((p * rows) / parts);
    await Promise.all(Array.from({ length: parts }, (_, p) => this.runOne(op(bound(p), bound(p + 1)))));
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
