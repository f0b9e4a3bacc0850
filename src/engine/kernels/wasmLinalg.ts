/**
 * The low-rank toolbox's float64 products in WebAssembly (wasm/linalg.wat, dist/linalg.wasm) on one
 * shared memory per job: the main thread's Arena places the matrices in it, and every thread (the main
 * one, each worker) runs the kernels on them in place through its own instance of the module.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fromRows, Mat, transpose, zeros } from '../linalg/dense';
import { coreSingularValues, rFactorFromGram } from '../linalg/lowrank';
import { GRAM_PANEL } from '../linalg/products';
import { LinearOperator } from '../linalg/randomized';
import { HouseholderColumns } from '../linalg/qr';
import { EPS, Sweeps } from '../linalg/svd';

interface Exports {
  jacobi(u: number, ld: number, n: number, tol: number): void;
  nonfinite(p: number, n: number): number;
  panel(src: number, sk: number, st: number, c: number, count: number, cp: number, len: number, dst: number): void;
  syrk(P: number, cp: number, len: number, G: number): void;
  gemm(M: number, sr: number, sk: number, rows: number, K: number, X: number, lp: number, Y: number, kt: number): void;
  residual(tau: number, P: number, Qt: number, rows: number, k: number, n: number, out: number): void;
  householder(w: number, m: number, n: number, tau: number, diag: number, q: number): void;
  taskvec(w: number, wbf: number, f: number, fbf: number, n: number, out: number, sum: number): number;
  hist16(p: number, n: number, shift: number, mask: number, hist: number): void;
}

/** A product's contraction in tiles of this many steps: a block's rows of M stay in the L1 cache meanwhile. */
const GEMM_TILE = 256;
/** The gemm kernel's column block: X and Y have their columns padded to a multiple of it. */
export const GEMM_COLUMNS = 6;
/** hist16's counters: four histograms of 256 i32 bins. */
export const HIST_BYTES = 4 * 256 * 4;
/** The shared memory's limit: 64 Ki pages of 64 KiB, all that a 32-bit WebAssembly memory can address. */
const MAX_PAGES = 65536;

let compiled: WebAssembly.Module | undefined | null = null;

/** dist/linalg.wasm compiled, or undefined where the build did not make it. */
export function linalgModule(): WebAssembly.Module | undefined {
  if (compiled === null) {
    const file = [path.join(__dirname, 'linalg.wasm'), path.join(__dirname, '..', '..', '..', '..', 'dist', 'linalg.wasm')].find((f) => fs.existsSync(f));
    compiled = file === undefined ? undefined : new WebAssembly.Module(fs.readFileSync(file));
  }
  return compiled;
}

const align = (x: number): number => Math.ceil(x / 16) * 16;

/** One thread's view of a job's shared memory. */
export class LinalgWasm {
  private readonly x: Exports;

  constructor(readonly memory: WebAssembly.Memory, module: WebAssembly.Module) {
    this.x = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as Exports;
  }

  /** Bytes of scratch that gram() needs for c columns, and sweeps() for an r × r core. */
  static gramScratch(c: number): number {
    const cp = Math.ceil(c / 4) * 4;
    return align(Math.max(cp * GRAM_PANEL, (c + 1) * c) * 8) + cp * cp * 8;
  }

  /** svd.ts's Sweeps in WebAssembly (the same bits as jacobiSweeps), with u copied to `scratch` and back. */
  sweeps(scratch: number): Sweeps {
    return (u, ld, m, n) => {
      new Float64Array(this.memory.buffer, scratch, u.length).set(u);
      this.x.jacobi(scratch, ld, n, EPS * m);
      u.set(new Float64Array(this.memory.buffer, scratch, u.length));
    };
  }

  /** gramRef of the fp32 matrix at byte offset `src`, with `gramScratch(c)` bytes at `scratch`. */
  gram(src: number, c: number, count: number, sk: number, st: number, scratch: number): Float64Array {
    const cp = Math.ceil(c / 4) * 4;
    const G = scratch + align(cp * GRAM_PANEL * 8);
    new Float64Array(this.memory.buffer, G, cp * cp).fill(0);
    for (let t0 = 0; t0 < count; t0 += GRAM_PANEL) {
      const n = Math.min(GRAM_PANEL, count - t0);
      const len = n + (n % 2);
      this.x.panel(src + t0 * st * 4, sk, st, c, n, cp, len, scratch);
      this.x.syrk(scratch, cp, len, G);
    }
    const g = new Float64Array(this.memory.buffer, G, cp * cp);
    const out = new Float64Array(c * c);
    for (let k = 0; k < c; k++) for (let l = k; l < c; l++) out[k * c + l] = out[l * c + k] = g[k * cp + l];
    return out;
  }

  /** The index of the first NaN or infinity among n fp32 values at byte offset p, or -1. */
  firstNonFinite(p: number, n: number): number {
    return this.x.nonfinite(p, n);
  }

  /** gemmRef(M, sr, sk, rows, K, X, lp, lp, Y, lp) on byte offsets; lp a multiple of GEMM_COLUMNS. */
  gemm(M: number, sr: number, sk: number, rows: number, K: number, X: number, lp: number, Y: number): void {
    if (rows > 0) this.x.gemm(M, sr, sk, rows, K, X, lp, Y, GEMM_TILE);
  }

  /** residualRowsRef on byte offsets, P and Qt widened to float64 (exactly) beforehand. */
  residual(tau: number, P: number, Qt: number, rows: number, k: number, n: number, out: number): void {
    this.x.residual(tau, P, Qt, rows, k, n, out);
  }

  /** taskVectorRef on byte offsets (w and f fp32, or bf16 where wbf / fbf), the running sum as a float64 at `sum`. */
  taskVector(w: number, wbf: boolean, f: number, fbf: boolean, n: number, out: number, sum: number): number {
    return this.x.taskvec(w, wbf ? 1 : 0, f, fbf ? 1 : 0, n, out, sum);
  }

  /** countExponents of n half-precision values at byte offset p into `hist`, through HIST_BYTES of zeroed counters at `counters` (zeroed again after). */
  countExponents(dtype: 'F16' | 'BF16', p: number, n: number, counters: number, hist: Float64Array): void {
    const [shift, mask] = dtype === 'BF16' ? [7, 0xff] : [10, 0x1f];
    this.x.hist16(p, n, shift, mask, counters);
    const c = new Int32Array(this.memory.buffer, counters, HIST_BYTES / 4);
    for (let b = 0; b <= mask; b++) hist[b] += c[b] + c[256 + b] + c[512 + b] + c[768 + b];
    c.fill(0);
  }

  /** Bytes of workspace that operator() (its products and QRs) and residualSq() need for an m × n τ and sketches of up to l columns. */
  static workspaceBytes(m: number, n: number, l: number): number {
    return align(2 * (m + n + 1) * Math.ceil(l / GEMM_COLUMNS) * GEMM_COLUMNS * 8) + 64;
  }

  /** qr.ts's householderColumns in WebAssembly, the matrices copied to `ws` and back. */
  householderColumns(ws: number): HouseholderColumns {
    return (w, m, n, tau, diag) => {
      const p = Math.min(m, n);
      const [tb, db, qb] = [ws + align(m * n * 8), ws + align(m * n * 8) + align(p * 8), ws + align(m * n * 8) + 2 * align(p * 8)];
      new Float64Array(this.memory.buffer, ws, m * n).set(w);
      new Float64Array(this.memory.buffer, tb, (qb - tb) / 8 + m * p).fill(0);
      this.x.householder(ws, m, n, tb, db, qb);
      w.set(new Float64Array(this.memory.buffer, ws, m * n));
      tau.set(new Float64Array(this.memory.buffer, tb, p));
      diag.set(new Float64Array(this.memory.buffer, db, p));
      return new Float64Array(this.memory.buffer, qb, m * p).slice();
    };
  }

  /** The m × n fp32 matrix at byte offset `tau` as an operator on this thread (gemmRef's bits), X and Y placed at `ws`. */
  operator(tau: number, m: number, n: number, ws: number): LinearOperator {
    const product = (rows: number, K: number, sr: number, sk: number, X: Mat): Mat => {
      const l = X.cols;
      const lp = Math.ceil(l / GEMM_COLUMNS) * GEMM_COLUMNS;
      const yb = ws + align(K * lp * 8);
      const x = new Float64Array(this.memory.buffer, ws, K * lp);
      if (lp === l) x.set(X.data);
      else {
        x.fill(0);
        for (let k = 0; k < K; k++) x.set(X.data.subarray(k * l, (k + 1) * l), k * lp);
      }
      this.gemm(tau, sr, sk, rows, K, ws, lp, yb);
      const y = new Float64Array(this.memory.buffer, yb, rows * lp);
      const Y = zeros(rows, l);
      if (lp === l) Y.data.set(y);
      else for (let i = 0; i < rows; i++) Y.data.set(y.subarray(i * lp, i * lp + l), i * l);
      return Y;
    };
    return { rows: m, cols: n, times: (X) => product(m, n, n, 1, X), timesT: (Y) => product(n, m, 1, n, Y), columns: this.householderColumns(ws) };
  }

  /** ‖τ − P·Qt‖²_F (τ m × n at byte offset `tau`, P m × k, Qt k × n) as Σ_i of residualRowsRef's row sums in row order, P and Qt widened into `ws`. */
  residualSq(tau: number, m: number, n: number, P: Float32Array, Qt: Float32Array, k: number, ws: number): number {
    const p = ws;
    const q = p + align(m * k * 8);
    const o = q + align(k * n * 8);
    new Float64Array(this.memory.buffer, p, m * k).set(P.subarray(0, m * k));
    new Float64Array(this.memory.buffer, q, k * n).set(Qt.subarray(0, k * n));
    this.residual(tau, p, q, m, k, n, o);
    let sum = 0;
    for (const x of new Float64Array(this.memory.buffer, o, m)) sum += x;
    return sum;
  }
}

/**
 * The singular values of B·A (B out × r at byte offset b, A r × inn at a, fp32 row-major), descending:
 * the R factors of B and Aᵀ by Cholesky of BᵀB and AAᵀ (both from the Gram kernel, with
 * gramScratch(r) bytes at `scratch`), or by Householder where that is not accurate enough.
 */
export function factorSingularValues(w: LinalgWasm, a: number, b: number, r: number, inn: number, out: number, scratch: number): Float64Array {
  const mat = (data: Float64Array): Mat => ({ rows: r, cols: r, data });
  const B = (): Mat => fromRows(out, r, new Float32Array(w.memory.buffer, b, out * r));
  const At = (): Mat => transpose(fromRows(r, inn, new Float32Array(w.memory.buffer, a, r * inn)));
  const RB = rFactorFromGram(out >= r ? mat(w.gram(b, r, out, 1, r, scratch)) : undefined, B);
  const RA = rFactorFromGram(inn >= r ? mat(w.gram(a, r, inn, inn, 1, scratch)) : undefined, At);
  return coreSingularValues(RB, RA, out, inn, w.sweeps(scratch)).slice();
}

/** This thread's instance for each shared memory it was sent, by the memory's id. */
const instances = new Map<number, LinalgWasm>();

export function linalgOn(id: number, memory?: WebAssembly.Memory): LinalgWasm {
  let w = instances.get(id);
  if (w === undefined) {
    const module = linalgModule();
    if (module === undefined || memory === undefined) throw new Error('the low-rank WebAssembly module (linalg.wasm) or its memory is missing');
    w = new LinalgWasm(memory, module);
    instances.set(id, w);
  }
  return w;
}

/** Lets go of a memory's instance (its job is over). */
export function forgetLinalg(id: number): void {
  instances.delete(id);
}

let nextId = 1;

/**
 * A job's shared memory and a first-fit allocator over it (main thread only). Blocks are 16-byte
 * aligned; the memory grows as needed, also while workers run kernels on blocks already placed (a
 * shared memory's pages stay where they are when it grows).
 */
export class Arena {
  readonly id = nextId++;
  readonly memory = new WebAssembly.Memory({ initial: 1, maximum: MAX_PAGES, shared: true });
  private readonly buffers = new WeakSet<ArrayBufferLike>();
  /** Live blocks, [start, end) in bytes, by start. */
  private readonly used: [number, number][] = [];

  /** The byte offset of a fresh block, or undefined when the memory cannot hold it. */
  alloc(bytes: number): number | undefined {
    let at = 16; // offset 0 stays unused: a block is never at null
    let i = 0;
    for (; i < this.used.length; i++) {
      if (this.used[i][0] - at >= bytes) break;
      at = align(this.used[i][1]);
    }
    const end = at + bytes;
    if (end > MAX_PAGES * 65536) return undefined;
    const have = this.memory.buffer.byteLength;
    if (end > have) this.memory.grow(Math.ceil((end - have) / 65536));
    this.used.splice(i, 0, [at, end]);
    return at;
  }

  free(at: number): void {
    const i = this.used.findIndex((b) => b[0] === at);
    if (i >= 0) this.used.splice(i, 1);
  }

  f32(at: number, n: number): Float32Array {
    return new Float32Array(this.buffer(), at, n);
  }

  f64(at: number, n: number): Float64Array {
    return new Float64Array(this.buffer(), at, n);
  }

  u8(at: number, n: number): Uint8Array {
    return new Uint8Array(this.buffer(), at, n);
  }

  /** Whether `x` is a view of this memory (then its byteOffset is its address in it). */
  holds(x: ArrayBufferView): boolean {
    return this.buffers.has(x.buffer);
  }

  /** The memory's current buffer (a new object after each growth), remembered for holds(). */
  private buffer(): ArrayBufferLike {
    const b = this.memory.buffer;
    this.buffers.add(b);
    return b;
  }
}
