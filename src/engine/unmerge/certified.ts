/**
 * The certified two-pass mask selection: the top k of max_a |delta_a| chosen from a float32 pass (the
 * kernels' `maxAbsLoraInto(.., float32)`) with a rigorous bound on its error per element, and only the
 * elements whose interval reaches the k-th value recomputed exactly (loraValuesAt, the reference's own
 * arithmetic). The selection is the exact one, ties and all (see certifiedTopK).
 *
 * The bound. For one element, y = sum_k b_k a_k exactly, P = sum_k |b_k a_k|, s the fp32 scale, u = 2^-24:
 * - the reference: y64 (float64 sum, |y64 - y| <= r 2^-53 P), x = f(f(y64) s), so
 *   |x - y s| <= |s| P (2u + r 2^-53 + O(u^2)) + 2^-149 (f rounds to fp32; the 2^-149 covers underflow);
 * - the float32 pass: z an fp32 sum in any order, with or without fused multiply-adds, |z - y| <= gamma_r P
 *   (gamma_r = r u / (1 - r u), Higham, Accuracy and Stability, 3.1) plus r half-ulps of underflow;
 *   v = f(z s), so |v - y s| <= |s| P (gamma_r + u + O(u^2)) + |s| (r + 1) 2^-150 + 2^-150.
 * Hence ||v| - |x|| <= (r + 4) u |s| P + abs for r <= 4096, and P <= ||B[i,:]||_2 ||A[:,j]||_2 (Cauchy-Schwarz).
 * The max over adapters moves by at most the largest adapter's bound, so the aggregate is within
 * rows[i] * cols[j] + abs of the exact one, rows[i] = max_a (r_a + 4) u |s_a| ||B_a[i,:]||,
 * cols[j] = max_a ||A_a[:,j]||. abs is taken as if every product flushed to zero (2^-125 each), so the bound
 * holds even where subnormals are flushed.
 */
import { LoraFactors } from '../kernels/kernels';
import { loraValuesAt } from './lora';
import { radixTopK, TopK } from './topk';

const U = 2 ** -24;
/** The bound's O(u^2) terms and the float64 rounding of the norms and products are far below this relative slack. */
const SLACK = 1 + 2 ** -20;
/** Factors past this (||B|| ||A|| |s|) could overflow fp32 in either pass: such modules take the exact path. */
const MAX_PRODUCT = 2 ** 100;
/** Ranks past this would make gamma_r's (r + 4) u margin too thin. */
const MAX_RANK = 4096;
/** Elements per chunk of the candidate filter (as in topk.ts). */
const CHUNK = 64;

/** |aggregate[i][j] - exact[i][j]| <= rows[i] * cols[j] + abs, in the aggregate's layout (rows x cols). */
export interface Float32Bound {
  rows: Float64Array;
  cols: Float64Array;
  abs: number;
  /** max(rows) * max(cols) + abs: the bound of every element. */
  max: number;
}

/**
 * The bound of the float32 pass over these factor sets (one shape and orientation), or undefined where
 * it cannot be certified (a non-finite factor or scale, a rank past MAX_RANK, values that could overflow fp32).
 */
export function float32Bound(fs: LoraFactors[]): Float32Bound | undefined {
  if (fs.length === 0) return undefined;
  const { out: m, in: n, transpose } = fs[0];
  const bRows = new Float64Array(m);
  const aCols = new Float64Array(n);
  let abs = 0;
  for (const f of fs) {
    const s = Math.abs(Math.fround(f.scale));
    if (!Number.isFinite(s) || f.r > MAX_RANK) return undefined;
    const c = (f.r + 4) * U * s * SLACK;
    let maxB = 0;
    for (let i = 0; i < m; i++) {
      let sq = 0;
      for (let k = 0; k < f.r; k++) sq += f.B[i * f.r + k] * f.B[i * f.r + k];
      const norm = Math.sqrt(sq) * SLACK;
      if (!Number.isFinite(norm)) return undefined;
      maxB = Math.max(maxB, norm);
      bRows[i] = Math.max(bRows[i], c * norm);
    }
    const colSq = new Float64Array(n);
    for (let k = 0; k < f.r; k++) for (let j = 0; j < n; j++) colSq[j] += f.A[k * n + j] * f.A[k * n + j];
    let maxA = 0;
    for (let j = 0; j < n; j++) {
      const norm = Math.sqrt(colSq[j]) * SLACK;
      if (!Number.isFinite(norm)) return undefined;
      maxA = Math.max(maxA, norm);
      aCols[j] = Math.max(aCols[j], norm);
    }
    if (maxB * maxA * Math.max(1, s) > MAX_PRODUCT) return undefined;
    abs = Math.max(abs, (s * (f.r + 2) + 2) * 2 ** -125);
  }
  const [rows, cols] = transpose ? [aCols, bRows] : [bRows, aCols];
  let maxR = 0;
  let maxC = 0;
  for (const x of rows) maxR = Math.max(maxR, x);
  for (const x of cols) maxC = Math.max(maxC, x);
  return { rows, cols, abs, max: maxR * maxC * SLACK + abs };
}

/** Exact max_a |delta_a| (the reference's values, bit for bit) at sorted element indices. */
export function exactMaxAbsAt(fs: LoraFactors[], indices: Uint32Array): Float32Array {
  const out = new Float32Array(indices.length);
  const values = new Float32Array(indices.length);
  for (const f of fs) {
    loraValuesAt(f, indices, values);
    for (let t = 0; t < values.length; t++) {
      const x = Math.abs(values[t]);
      if (x > out[t]) out[t] = x;
    }
  }
  return out;
}

/** Bounds past which certifiedTopK gives up (the caller then expands exactly): its work stays a small fraction of the pass. */
export interface CertifyLimits {
  /** Elements whose float32 value is near enough the k-th to need their own interval. */
  near: number;
  /** Elements recomputed exactly. */
  recheck: number;
}

export const defaultLimits = (k: number): CertifyLimits => ({ near: 16 * k + (1 << 16), recheck: 2 * k + 4096 });

export interface CertifiedTopK extends TopK {
  /** Elements recomputed exactly. */
  rechecked: number;
}

/**
 * topK(exact, k) from `v` (the float32 pass, each element within `bound` of exact) and `exactAt`, or
 * undefined where too many elements lie near the k-th value (a module of ties or zeros; `limits`).
 *
 * With lo = v - e and hi = v + e per element (e its bound), let L be the k-th largest lo: k elements are
 * exactly >= L, so the exact k-th largest value T is >= L, and every element of the exact top k (value
 * >= T) has hi >= L. The candidates {hi >= L} are therefore a superset of the exact top k; in index order,
 * their exact top k with ties to the lower index is the exact selection of the whole module, and its
 * threshold the same k-th value. To find L cheaply: t, the k-th largest chunk maximum of v, has k elements
 * >= t, so L >= t - E (E the largest bound), and an element with v < t - 2E has hi < t - E <= L and a lo
 * below k others': only the chunks reaching t - 2E are looked at.
 */
export function certifiedTopK(
  v: Float32Array,
  k: number,
  bound: Float32Bound,
  exactAt: (indices: Uint32Array) => Float32Array,
  limits = defaultLimits(k),
): CertifiedTopK | undefined {
  const n = v.length;
  const kk = Math.max(0, Math.min(k, n));
  if (kk === 0) return { indices: new Uint32Array(0), threshold: 0, nonFinite: 0, rechecked: 0 };
  const cols = bound.cols.length;
  const bits = new Uint32Array(v.buffer, v.byteOffset, n);
  const chunks = Math.ceil(n / CHUNK);
  const maxima = new Uint32Array(chunks);
  for (let c = 0; c < chunks; c++) {
    let mx = 0;
    for (let i = c * CHUNK, e = Math.min(n, i + CHUNK); i < e; i++) if (bits[i] > mx) mx = bits[i];
    // Not a finite non-negative value (a NaN, an infinity, a sign bit): not what the float32 pass gives under the bound's conditions.
    if (mx >= 0x7f800000) return undefined;
    maxima[c] = mx;
  }
  const t = chunks >= kk ? radixTopK(new Float32Array(maxima.buffer), kk).threshold : 0;
  // Less the float64 rounding slack of the intervals below (x 2^-40 each).
  const floor = t - 2 * bound.max - t * 2 ** -38;

  // The elements within reach of the k-th value, in index order, with their intervals.
  const near: number[] = [];
  const lo: number[] = [];
  const hi: number[] = [];
  const f32 = new Float32Array(maxima.buffer);
  for (let c = 0; c < chunks; c++) {
    if (f32[c] < floor) continue;
    for (let i = c * CHUNK, end = Math.min(n, i + CHUNK); i < end; i++) {
      const x = v[i];
      if (x < floor) continue;
      // Rounding slack of the float64 arithmetic here, far inside the bound's own.
      const e = bound.rows[Math.floor(i / cols)] * bound.cols[i % cols] + bound.abs + x * 2 ** -40;
      near.push(i);
      lo.push(x - e);
      hi.push(x + e);
    }
    if (near.length > limits.near) return undefined;
  }
  const L = Float64Array.from(lo).sort()[near.length - kk];
  const candidates: number[] = [];
  for (let t = 0; t < near.length; t++) if (hi[t] >= L) candidates.push(near[t]);
  if (candidates.length > limits.recheck) return undefined;
  const where = Uint32Array.from(candidates);
  const sel = radixTopK(exactAt(where), kk);
  if (sel.nonFinite > 0) return undefined;
  for (let j = 0; j < sel.indices.length; j++) sel.indices[j] = where[sel.indices[j]];
  return { ...sel, rechecked: where.length };
}
