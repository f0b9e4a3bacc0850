/**
 * What an adapter module adds to its base tensor, one row block at a time, for every delta rule of
 * deltaRule.ts: `s * B @ A` (transposed where the base stores the weight [in, out]), LoHa's Hadamard and
 * LoKr's Kronecker products, a dense diff; and where the result needs the base weight (DoRA, IA³), the
 * merged tensor and the delta an fp32 merge adds. DoRA modules are handled whole (their norms span it).
 */
import { AdaptedModule, decomposition, KronFactor, StackedPart, wholeTensor } from '../checkpoint/deltaRule';
import { Checkpoint } from '../checkpoint/checkpoint';
import { LensError } from '../errors';
import { roundHalf } from '../kernels/cpuMath';
import { Kernels, MergeDtype } from '../kernels/kernels';
import { MergeRule } from '../../shared/jobs/choices';
import { bytesToF32, Scratch } from '../safetensors/reader';
import { TensorInfo } from '../../shared/safetensors/header';
import { Block } from './stream';

/** A module's adapter tensors as the fp32 arrays its rule multiplies. */
export interface Prepared {
  /** Low-rank factors A [rank, in] and B [out, rank]; LoHa's first pair. */
  A: Float32Array;
  B: Float32Array;
  rank: number;
  /** LoHa's second pair. */
  A2?: Float32Array;
  B2?: Float32Array;
  rank2?: number;
  /** LoKr's w1 [out1, in1] and w2 [out2, in2]. */
  w1?: Float32Array;
  w2?: Float32Array;
  /** A dense diff (base layout) or an IA³ vector. */
  values?: Float32Array;
  magnitude?: Float32Array;
}

const EMPTY = new Float32Array(0);

/** Modules whose factors stay prepared: a stacked tensor's parts (FLUX's linear1 stacks four) and the tensor itself. */
const KEPT_MODULES = 8;

/** Reads small adapter tensors (factors, magnitudes) as fp32, keeping only the current module's. */
export class Factors {
  /** The prepared factors of the last few modules: a fused tensor's stacked parts take turns, block by block. */
  private readonly prepared = new Map<AdaptedModule, Prepared>();

  /** `shared`: factors in SharedArrayBuffers, for the CPU backend's worker threads. */
  constructor(
    private readonly adapter: Checkpoint,
    private readonly shared = false,
  ) {}

  get(m: AdaptedModule): Prepared {
    let p = this.prepared.get(m);
    if (p === undefined) {
      if (this.prepared.size >= KEPT_MODULES) this.prepared.clear();
      p = prepare(m, (t) => this.read(t), (n) => this.alloc(n));
      this.prepared.set(m, p);
    }
    return p;
  }

  private alloc(n: number): Float32Array {
    return new Float32Array(this.shared ? new SharedArrayBuffer(n * 4) : new ArrayBuffer(n * 4));
  }

  read(t: TensorInfo): Float32Array {
    const alloc = (n: number): ArrayBuffer | SharedArrayBuffer => (this.shared ? new SharedArrayBuffer(n) : new ArrayBuffer(n));
    const raw = this.adapter.handles.readBytesSync(t, new Uint8Array(alloc(t.byteLength)));
    return bytesToF32(t, raw, new Float32Array(alloc(t.numel * 4)));
  }
}

/**
 * The fp32 arrays of a module's rule: the factor forms of deltaRule.ts (each elementwise product rounded
 * to fp32 once, as the format's torch code forms it), LoKr's factors multiplied out in float64.
 */
export function prepare(m: AdaptedModule, read: (t: TensorInfo) => Float32Array, alloc: (n: number) => Float32Array): Prepared {
  const p = prepareRule(m, read, alloc);
  return m.decompose ? { ...p, magnitude: read(m.decompose.magnitude) } : p;
}

function prepareRule(m: AdaptedModule, read: (t: TensorInfo) => Float32Array, alloc: (n: number) => Float32Array): Prepared {
  const r = m.rule;
  switch (r.kind) {
    case 'low-rank': {
      const f = r.factors;
      const magnitude = r.magnitude ? read(r.magnitude) : undefined;
      const rank = r.rank;
      const n = m.in;
      switch (f.form) {
        case 'plain':
          return { A: read(f.A), B: read(f.B), rank, magnitude };
        case 'transposed': {
          const a = read(f.a);
          const b = read(f.b);
          const A = alloc(rank * n);
          const B = alloc(m.out * rank);
          for (let j = 0; j < n; j++) for (let k = 0; k < rank; k++) A[k * n + j] = a[j * rank + k];
          for (let k = 0; k < rank; k++) for (let i = 0; i < m.out; i++) B[i * rank + k] = b[k * m.out + i];
          return { A, B, rank, magnitude };
        }
        case 'svd': {
          const A = read(f.A);
          const E = read(f.E);
          for (let k = 0; k < rank; k++) for (let j = 0; j < n; j++) A[k * n + j] = Math.fround(A[k * n + j] * E[k]);
          return { A, B: read(f.B), rank };
        }
        case 'vera': {
          const vA = read(f.A);
          const vB = read(f.B);
          const lb = read(f.lambdaB);
          const ld = read(f.lambdaD);
          const cols = f.A.shape[1];
          const A = alloc(rank * n);
          const B = alloc(m.out * rank);
          for (let k = 0; k < rank; k++) for (let j = 0; j < n; j++) A[k * n + j] = Math.fround(ld[k] * vA[k * cols + j]);
          for (let i = 0; i < m.out; i++) for (let k = 0; k < rank; k++) B[i * rank + k] = Math.fround(lb[i] * vB[i * rank + k]);
          return { A, B, rank };
        }
        case 'grouped': {
          const w = read(f.B);
          const rg = f.B.shape[1];
          const slice = m.out / f.enable.length;
          const B = alloc(m.out * rank);
          let g = 0;
          for (let q = 0; q < f.enable.length; q++) {
            if (!f.enable[q]) continue;
            for (let t = 0; t < slice; t++) for (let k = 0; k < rg; k++) B[(q * slice + t) * rank + g * rg + k] = w[(g * slice + t) * rg + k];
            g++;
          }
          return { A: read(f.A), B, rank };
        }
        case 'tucker':
          return { A: tuckerCore(read(f.mid), read(f.A), f.mid.shape, alloc), B: read(f.B), rank, magnitude };
      }
      break;
    }
    case 'hadamard': {
      if (!r.t1 || !r.t2) return { A: read(r.w1b), B: read(r.w1a), rank: r.w1a.shape[1], A2: read(r.w2b), B2: read(r.w2a), rank2: r.w2a.shape[1] };
      // Tucker: B = w_aᵀ [out, r] and A the core contracted with w_b, for each product.
      const [rank, rank2] = [r.w1a.shape[0], r.w2a.shape[0]];
      return {
        A: tuckerCore(read(r.t1), read(r.w1b), r.t1.shape, alloc),
        B: transposed(read(r.w1a), rank, m.out, alloc),
        rank,
        A2: tuckerCore(read(r.t2), read(r.w2b), r.t2.shape, alloc),
        B2: transposed(read(r.w2a), rank2, m.out, alloc),
        rank2,
      };
    }
    case 'kronecker':
      return { A: EMPTY, B: EMPTY, rank: 0, w1: kronFactor(r.w1, read, alloc), w2: kronFactor(r.w2, read, alloc) };
    case 'dense':
      return { A: EMPTY, B: EMPTY, rank: 0, values: read(r.diff) };
    case 'stacked':
      // Each part prepares its own factors when its rows are computed.
      return { A: EMPTY, B: EMPTY, rank: 0 };
    case 'scale': {
      const v = read(r.vector);
      // LyCORIS's `weight * multiplier + 1`, in fp32.
      if (r.offsetOne) for (let i = 0; i < v.length; i++) v[i] = Math.fround(v[i] + 1);
      return { A: EMPTY, B: EMPTY, rank: 0, values: v };
    }
  }
}

/** x [rows, cols] transposed, as an fp32 matrix [cols, rows]. */
function transposed(x: Float32Array, rows: number, cols: number, alloc: (n: number) => Float32Array): Float32Array {
  const y = alloc(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) y[j * rows + i] = x[i * cols + j];
  return y;
}

/**
 * A Tucker core t [r1, r2, kh, kw] contracted on its second mode with b [r2, in(, 1, 1)]:
 * C[i, c·K + k] = Σ_j t[i, j, k] · b[j, c] with K = kh·kw, summed in float64 (as `round`: fp32 or not).
 */
function tuckerContract(t: Float32Array, b: Float32Array, shape: number[], out: Float32Array | Float64Array): Float32Array | Float64Array {
  const [r1, r2] = shape;
  const K = shape.slice(2).reduce((p, q) => p * q, 1);
  const cols = b.length / r2;
  for (let i = 0; i < r1; i++) {
    for (let c = 0; c < cols; c++) {
      for (let k = 0; k < K; k++) {
        let acc = 0;
        for (let j = 0; j < r2; j++) acc += t[(i * r2 + j) * K + k] * b[j * cols + c];
        out[i * cols * K + c * K + k] = acc;
      }
    }
  }
  return out;
}

/** The factor A [r1, in·K] of a Tucker product (its B is the first-mode factor), rounded once to fp32. */
export function tuckerCore(t: Float32Array, b: Float32Array, shape: number[], alloc: (n: number) => Float32Array): Float32Array {
  const K = shape.slice(2).reduce((p, q) => p * q, 1);
  return tuckerContract(t, b, shape, alloc((shape[0] * b.length * K) / shape[1])) as Float32Array;
}

/**
 * A LoKr factor as an fp32 matrix: stored, a @ b, or the Tucker product Σ_{i,j} a[i, p] · t[i, j, k] · b[j, c]
 * ([out2, in2·K]), each summed in float64 and rounded once.
 */
function kronFactor(f: KronFactor, read: (t: TensorInfo) => Float32Array, alloc: (n: number) => Float32Array): Float32Array {
  if ('full' in f) return read(f.full);
  const a = read(f.a);
  const b = read(f.b);
  if (f.t) {
    const [r1, r2] = f.t.shape;
    const K = f.t.shape.slice(2).reduce((p, q) => p * q, 1);
    const inner = tuckerContract(read(f.t), b, f.t.shape, new Float64Array((r1 * b.length * K) / r2));
    const rows = f.a.shape[1];
    const cols = inner.length / r1;
    const w = alloc(rows * cols);
    for (let p = 0; p < rows; p++) {
      for (let c = 0; c < cols; c++) {
        let acc = 0;
        for (let i = 0; i < r1; i++) acc += a[i * rows + p] * inner[i * cols + c];
        w[p * cols + c] = acc;
      }
    }
    return w;
  }
  const [rows, rank] = f.a.shape;
  const cols = f.b.shape[1];
  const w = alloc(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      let acc = 0;
      for (let k = 0; k < rank; k++) acc += a[i * rank + k] * b[k * cols + j];
      w[i * cols + j] = acc;
    }
  }
  return w;
}

/** Rows [row0, row1) of the base of `s * B @ A` ([out, in], transposed when `transpose`), into `out`. */
function lowRankBlock(
  kernels: Kernels,
  A: Float32Array,
  B: Float32Array,
  rank: number,
  m: AdaptedModule,
  scale: number,
  b: Block,
  out: Float32Array,
  scratch: Scratch,
): Promise<Float32Array> {
  const rows = b.row1 - b.row0;
  if (!m.transpose) {
    return kernels.loraDelta({ A, B: B.subarray(b.row0 * rank, b.row1 * rank), r: rank, out: rows, in: m.in, scale, transpose: false }, out);
  }
  // Stored [in, out]: base rows are columns of B @ A, so take those columns of A.
  const sub = scratch.f32('delta-A-columns', rank * rows);
  for (let k = 0; k < rank; k++) sub.set(A.subarray(k * m.in + b.row0, k * m.in + b.row1), k * rows);
  return kernels.loraDelta({ A: sub, B, r: rank, out: m.out, in: rows, scale, transpose: true }, out);
}

/**
 * The additive delta of base block `b` (rows of the base tensor as stored), into `out`. Not for rules
 * that need the base weight beyond W + ΔW: IA³ (see effectiveDelta); DoRA's is its LoRA delta.
 */
export async function deltaBlock(kernels: Kernels, factors: Factors, m: AdaptedModule, b: Block, out: Float32Array, scratch: Scratch): Promise<Float32Array> {
  if (b.partial) throw new Error(`${m.module}: an adapter's delta needs blocks of whole rows (blocksOf wholeRows)`);
  const p = factors.get(m);
  const r = m.rule;
  switch (r.kind) {
    case 'low-rank': {
      if (r.divisor === undefined) return lowRankBlock(kernels, p.A, p.B, p.rank, m, r.scale, b, out, scratch);
      // AdaLoRA: times alpha, then divided by the fp32 divisor, each rounded to fp32 as torch does.
      const d = await lowRankBlock(kernels, p.A, p.B, p.rank, m, r.alpha!, b, out, scratch);
      for (let i = 0; i < b.numel; i++) d[i] = d[i] / r.divisor;
      return d;
    }
    case 'hadamard': {
      // PEFT's HadaWeight: ((w1a @ w1b) * (w2a @ w2b)) * scale, each product an fp32 matrix.
      const d1 = await lowRankBlock(kernels, p.A, p.B, p.rank, m, 1, b, out, scratch);
      const d2 = await lowRankBlock(kernels, p.A2!, p.B2!, p.rank2!, m, 1, b, scratch.f32('delta-hadamard', b.numel), scratch);
      // Rounded as torch does it: the fp32 product, then times the fp32 scale tensor.
      const s = Math.fround(r.scale);
      for (let i = 0; i < b.numel; i++) d1[i] = Math.fround(d1[i] * d2[i]) * s;
      return d1;
    }
    case 'kronecker':
      return kronBlock(m, r.shape1, r.shape2, r.scale, r.row0 ?? 0, p.w1!, p.w2!, b, out);
    case 'dense': {
      // torch's fp32 `diff * scale`: the product of two fp32 values is exact in float64, the store rounds it.
      const v = p.values!;
      const s = Math.fround(r.scale);
      for (let i = 0; i < b.numel; i++) out[i] = v[b.start + i] * s;
      return out;
    }
    case 'stacked':
      return stackedBlock(kernels, factors, r.parts, b, out, scratch);
    case 'scale':
      throw new Error('IA³ has no additive delta of its own: use effectiveDelta');
  }
}

/**
 * The rows of block `b` of a fused tensor from the parts stacked in it, each part's delta as its rule
 * computes it. Rows no part adapts get -0, which leaves every W as it is (W + -0 = W, -0 included).
 */
async function stackedBlock(kernels: Kernels, factors: Factors, parts: StackedPart[], b: Block, out: Float32Array, scratch: Scratch): Promise<Float32Array> {
  const d = out.subarray(0, b.numel).fill(-0);
  for (const { offset, module } of parts) {
    const lo = Math.max(b.start, offset);
    const hi = Math.min(b.start + b.numel, offset + module.out * module.in);
    if (lo >= hi) continue;
    const cols = module.in;
    const sub: Block = { ...b, row0: (lo - offset) / cols, row1: (hi - offset) / cols, rowElements: cols, start: lo - offset, numel: hi - lo, partial: false };
    d.set((await deltaBlock(kernels, factors, module, sub, scratch.f32('delta-stacked', hi - lo), scratch)).subarray(0, hi - lo), lo - b.start);
  }
  return d;
}

/** kron(w1, w2) · scale for the block's base rows (ΔW's rows from `row0` of it), transposed where the base stores [in, out]. */
function kronBlock(
  m: AdaptedModule,
  [, in1]: [number, number],
  [out2, in2]: [number, number],
  scale: number,
  row0: number,
  w1: Float32Array,
  w2: Float32Array,
  b: Block,
  out: Float32Array,
): Float32Array {
  const cols = b.rowElements;
  const s = Math.fround(scale);
  for (let row = b.row0; row < b.row1; row++) {
    for (let col = 0; col < cols; col++) {
      const i = (m.transpose ? col : row) + row0;
      const j = m.transpose ? row : col;
      const i1 = Math.floor(i / out2);
      const j1 = Math.floor(j / in2);
      // torch.kron's fp32 product, then times the fp32 scale (LyCORIS and PEFT make_kron).
      out[(row - b.row0) * cols + col] = Math.fround(w1[i1 * in1 + j1] * w2[(i - i1 * out2) * in2 + (j - j1 * in2)]) * s;
    }
  }
  return out;
}

/**
 * IA³'s merged block before encoding: f(x · l) with x the base as the rule forms it (r_D(W) under
 * `peft`/`peft-safe` at a half dtype, W otherwise), l the vector entry of the element's feature.
 */
export function scaledBlock(
  m: AdaptedModule,
  factors: Factors,
  b: Block,
  w: Float32Array,
  dtype: MergeDtype,
  rule: MergeRule,
  out: Float32Array,
): Float32Array {
  const l = factors.get(m).values!;
  const axis = m.rule.kind === 'scale' ? m.rule.axis : 'all';
  // Which index of the stored element picks the vector entry: its row, its column, or itself.
  const byRow = (axis === 'out') !== m.transpose;
  const cols = b.rowElements;
  // A convolution's input channel spans kh·kw columns of its [out, in·kh·kw] rows.
  const span = byRow || axis === 'all' ? 1 : cols / l.length;
  const half = dtype !== 'F32' && rule !== 'fp32-cast' ? dtype : undefined;
  for (let i = 0; i < b.numel; i++) {
    const k = axis === 'all' ? b.start + i : byRow ? b.row0 + Math.floor(i / cols) : Math.floor((i % cols) / span);
    out[i] = (half ? roundHalf(half, w[i]) : w[i]) * l[k];
  }
  return out;
}

/**
 * The delta an fp32 merge adds to block `b` (base `w`, decoded; needed for DoRA and IA³): for additive
 * rules their delta, for DoRA and IA³ f(merged - W). What compare, precision and validate measure.
 */
export async function effectiveDelta(
  kernels: Kernels,
  factors: Factors,
  m: AdaptedModule,
  b: Block,
  w: Float32Array | undefined,
  out: Float32Array,
  scratch: Scratch,
): Promise<Float32Array> {
  if (m.rule.kind === 'scale') {
    const merged = scaledBlock(m, factors, b, w!, 'F32', 'fp32-cast', scratch.f32('ia3-merged', b.numel));
    return kernels.subtract(merged, w!, out);
  }
  const d = await deltaBlock(kernels, factors, m, b, out, scratch);
  if (!wholeTensor(m)) return d;
  const merged = scratch.bytes('dora', b.numel * 4);
  await mergeDora(kernels, factors, m, w!, d, 'F32', 'fp32-cast', merged);
  return kernels.subtract(new Float32Array(merged.buffer, merged.byteOffset, b.numel), w!, scratch.f32('dora-delta', b.numel));
}

/** DoRA's per-feature scale of a module, and the geometry its kernels need. */
export interface DoraScale {
  /** f(magnitude / f(||W + dW||)) per output feature. */
  factor: Float32Array;
  rows: number;
  cols: number;
  /** Output features are the columns (Conv1D and embedding weights, stored [in, out]). */
  featureIsColumn: boolean;
}

/**
 * DoRA's scale `m / (||W + dW|| + eps)` per feature (norms in float64, as `dtype` and `rule` form W + dW,
 * then fp32 as torch holds them), `w` and `d` the whole base tensor and delta: what merge and UNMERGE's
 * DoRA task vectors both use. Per input channel of a convolution, the channel's kh·kw columns share one
 * norm and one factor.
 */
export async function doraScale(
  kernels: Kernels,
  m: AdaptedModule,
  magnitude: Float32Array | undefined,
  w: Float32Array,
  d: Float32Array,
  dtype: MergeDtype,
  rule: MergeRule,
): Promise<DoraScale> {
  const dec = decomposition(m)!;
  const rows = m.base!.shape[0];
  const cols = m.base!.numel / rows;
  const featureIsColumn = (dec.axis === 'in') !== m.transpose;
  const norms = await kernels.doraNorms({ w, d, rows, cols, featureIsColumn, dtype, rule });
  const features = magnitude?.length ?? 0;
  const span = featureIsColumn && features > 0 && cols % features === 0 ? cols / features : 1;
  if (features * span !== norms.length) {
    throw new LensError(dec.magnitude.file, `DoRA magnitude has ${features} values, the weight has ${norms.length} ${dec.axis === 'in' ? 'input' : 'output'} features`, dec.magnitude.name);
  }
  const factor = new Float32Array(norms.length);
  for (let f = 0; f < features; f++) {
    let sq = 0;
    for (let k = 0; k < span; k++) sq += norms[f * span + k] ** 2;
    const norm = span === 1 ? norms[f] : Math.sqrt(sq);
    const g = Math.fround(magnitude![f] / Math.fround(Math.fround(norm) + dec.eps));
    factor.fill(g, f * span, (f + 1) * span);
  }
  return { factor, rows, cols, featureIsColumn };
}

/**
 * The DoRA-merged tensor `m / ||W + dW|| * (W + dW)` encoded at `dtype` into `out`; `w` and `d` are
 * the whole base tensor and delta.
 */
export async function mergeDora(
  kernels: Kernels,
  factors: Factors,
  m: AdaptedModule,
  w: Float32Array,
  d: Float32Array,
  dtype: MergeDtype,
  rule: MergeRule,
  out: Uint8Array,
): Promise<Uint8Array> {
  const { factor, ...geometry } = await doraScale(kernels, m, factors.get(m).magnitude, w, d, dtype, rule);
  return kernels.mergeDora({ w, d, ...geometry, dtype, rule }, factor, out);
}
