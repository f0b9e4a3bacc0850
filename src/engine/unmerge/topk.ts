/**
 * Exact top-k of non-negative fp32 magnitudes, ties to the lower index, by radix selection on the float
 * bits (of candidates that a pass over chunk maxima leaves, see topK): for non-negative IEEE floats the bit pattern read as an unsigned integer orders like the value,
 * so two 16-bit histogram passes find the k-th largest bit pattern exactly and a third pass collects
 * the indices. Linear time and 256 KiB of counters whatever the size, where a sort of a 12.8M-element
 * module would cost O(n log n) time and an index array as large as the module.
 */

export interface TopK {
  /** Selected indices, ascending. */
  indices: Uint32Array;
  /** The smallest selected magnitude (0 when k = 0). */
  threshold: number;
  /** Elements whose bits are those of an infinity or a NaN (|x| as given): the caller decides what that means. */
  nonFinite: number;
}

const INF_BITS = 0x7f800000;

/** Elements per chunk of the candidate filter. */
const CHUNK = 64;

/**
 * Selects the `k` largest of `values` (all >= 0 or NaN, as |x| gives; -0 counts as 0), ties broken
 * toward the lower index. Non-finite values rank above every finite one and are counted in `nonFinite`.
 *
 * One pass takes the largest bit pattern of each chunk of CHUNK elements; the k-th largest of those, t,
 * is a lower bound of the k-th largest element (k distinct elements are >= t), so every element of the
 * top k, and every element tied with its k-th, is >= t. Only those candidates, in index order, go
 * through the exact selection: the same indices and threshold as radixTopK of the whole array.
 */
export function topK(values: Float32Array, k: number): TopK {
  const n = values.length;
  const chunks = Math.ceil(n / CHUNK);
  if (k <= 0 || chunks < 4 * k) return radixTopK(values, k);
  const bits = new Uint32Array(values.buffer, values.byteOffset, n);
  const maxima = new Uint32Array(chunks);
  let nonFinite = 0;
  for (let c = 0; c < chunks; c++) {
    const e = Math.min(n, (c + 1) * CHUNK);
    let mx = 0;
    for (let i = c * CHUNK; i < e; i++) {
      const b = bits[i] & 0x7fffffff;
      if (b > mx) mx = b;
    }
    maxima[c] = mx;
    if (mx >= INF_BITS) for (let i = c * CHUNK; i < e; i++) nonFinite += (bits[i] & 0x7fffffff) >= INF_BITS ? 1 : 0;
  }
  // t: the k-th largest chunk maximum, as bits (the smallest of the top k maxima).
  let t = 0xffffffff;
  for (const c of radixTopK(new Float32Array(maxima.buffer), k).indices) t = Math.min(t, maxima[c]);
  let count = 0;
  for (let c = 0; c < chunks; c++) if (maxima[c] >= t) count += CHUNK;
  const where = new Uint32Array(count);
  const cand = new Uint32Array(count);
  let m = 0;
  for (let c = 0; c < chunks; c++) {
    if (maxima[c] < t) continue;
    for (let i = c * CHUNK, e = Math.min(n, i + CHUNK); i < e; i++) {
      const b = bits[i] & 0x7fffffff;
      if (b >= t) {
        where[m] = i;
        cand[m++] = b;
      }
    }
  }
  const sel = radixTopK(new Float32Array(cand.buffer, 0, m), k);
  for (let j = 0; j < sel.indices.length; j++) sel.indices[j] = where[sel.indices[j]];
  return { indices: sel.indices, threshold: sel.threshold, nonFinite };
}

/** topK by radix selection over the whole array (the exact selection topK runs on its candidates). */
export function radixTopK(values: Float32Array, k: number): TopK {
  const n = values.length;
  const bits = new Uint32Array(values.buffer, values.byteOffset, n);
  const kk = Math.max(0, Math.min(k, n));
  const hist = new Uint32Array(65536);
  let nonFinite = 0;
  for (let i = 0; i < n; i++) {
    const b = bits[i] & 0x7fffffff; // -0 → +0
    if (b >= INF_BITS) nonFinite++;
    hist[b >>> 16]++;
  }
  if (kk === 0) return { indices: new Uint32Array(0), threshold: 0, nonFinite };

  // The high half of the k-th largest pattern, and how many lie strictly above its bucket.
  let above = 0;
  let hi = 65535;
  while (above + hist[hi] < kk) above += hist[hi--];
  hist.fill(0);
  for (let i = 0; i < n; i++) {
    const b = bits[i] & 0x7fffffff;
    if (b >>> 16 === hi) hist[b & 0xffff]++;
  }
  let lo = 65535;
  while (above + hist[lo] < kk) above += hist[lo--];
  const t = ((hi << 16) | lo) >>> 0;
  // All patterns above t are kept; of those equal to t, the first (kk - above) in index order.
  let ties = kk - above;
  const indices = new Uint32Array(kk);
  let j = 0;
  for (let i = 0; i < n; i++) {
    const b = bits[i] & 0x7fffffff;
    if (b > t || (b === t && ties-- > 0)) indices[j++] = i;
  }
  const f = new Float32Array(new Uint32Array([t]).buffer)[0];
  return { indices, threshold: f, nonFinite };
}
