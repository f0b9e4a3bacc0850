/**
 * The WGSL kernels. Exactness rests on three rules:
 * - fp16/bf16 rounding is done with u32 bit operations (a port of safetensors/half.ts), never with
 *   f32->f16 casts, whose rounding WGSL leaves to the implementation;
 * - f32 +, -, * are correctly rounded in Vulkan, but subnormals may be flushed and NaN/Inf, signed
 *   zeros are not guaranteed: any element whose operands or result leave the safe range is flagged
 *   (its index appended to a list) and recomputed on the host by the CPU reference;
 * - float64 accumulations become double-float (hi, lo) sums built from two-sum and exact products
 *   (operands split by bit masks into 12-bit halves, so the result does not depend on whether the
 *   compiler fuses a multiply-add).
 */
import { HalfDtype, MergeDtype } from '../kernels';
import { MergeRule } from '../../../shared/jobs/choices';

export const WG = 128;
/** Workgroup tile of the rank-r expansion: 64 x 64 outputs, 4 x 4 per invocation, k in steps of 16. */
export const TILE = 64;

/**
 * Shader compilers treat float arithmetic as reassociable (Mesa's NIR turns (a + b) - a into b, which
 * zeroes two-sum's error term; Tint emits no NoContraction), so every intermediate of two-sum passes
 * through \`opaque\`: an XOR with a uniform the compiler cannot know is zero.
 */
const common = (zero: string): string => /* wgsl */ `
fn opaque(x: f32) -> f32 { return bitcast<f32>(bitcast<u32>(x) ^ ${zero}); }
fn two_sum(a: f32, b: f32) -> vec2f {
  let s = opaque(a + b);
  let bb = opaque(s - a);
  return vec2f(s, opaque(a - opaque(s - bb)) + opaque(b - bb));
}
/** x = hi + lo exactly, hi with the top 12 significant bits. */
fn split(x: f32) -> vec2f {
  let h = bitcast<f32>(bitcast<u32>(x) & 0xfffff000u);
  return vec2f(h, x - h);
}
/** acc + x, acc unnormalised (hi, lo). */
fn df_add(acc: vec2f, x: f32) -> vec2f {
  let t = two_sum(acc.x, x);
  return vec2f(t.x, acc.y + t.y);
}
fn df_merge(a: vec2f, b: vec2f) -> vec2f {
  let t = two_sum(a.x, b.x);
  return vec2f(t.x, t.y + (a.y + b.y));
}
/** acc + a*b with the product exact (four exact partial products). */
fn df_add_prod(acc: vec2f, a: f32, b: f32) -> vec2f {
  let x = split(a);
  let y = split(b);
  var t = two_sum(acc.x, x.x * y.x);
  var lo = acc.y + t.y;
  t = two_sum(t.x, x.x * y.y); lo += t.y;
  t = two_sum(t.x, x.y * y.x); lo += t.y;
  t = two_sum(t.x, x.y * y.y); lo += t.y;
  return vec2f(t.x, lo);
}
/** Outside the range where f32 arithmetic is exact IEEE on every GPU: Inf/NaN, or nonzero below 2^-102. */
fn risky(u: u32) -> bool {
  let e = (u >> 23u) & 0xffu;
  return e == 255u || (e < 25u && (u & 0x7fffffffu) != 0u);
}
/** IEEE sum of non-risky a and b; .y = 1 when the result must be recomputed on the host. */
fn add_checked(a: u32, b: u32) -> vec2u {
  var s = bitcast<u32>(bitcast<f32>(a) + bitcast<f32>(b));
  if ((s & 0x7fffffffu) == 0u) { s = select(0u, 0x80000000u, a == 0x80000000u && b == 0x80000000u); }
  return vec2u(s, select(0u, 1u, risky(a) || risky(b) || ((s >> 23u) & 0xffu) == 255u));
}
fn to_f16(x: u32) -> u32 {
  let sign = (x >> 16u) & 0x8000u;
  let a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) { return sign | select(0x7c00u, 0x7e00u, a > 0x7f800000u); }
  if (a >= 0x477ff000u) { return sign | 0x7c00u; }
  if (a >= 0x38800000u) {
    let b = a - 0x38000000u;
    return sign | ((b + 0xfffu + ((b >> 13u) & 1u)) >> 13u);
  }
  if (a <= 0x33000000u) { return sign; }
  let m = (a & 0x7fffffu) | 0x800000u;
  let sh = 126u - (a >> 23u);
  let half = 1u << (sh - 1u);
  let rem = m & ((1u << sh) - 1u);
  var r = m >> sh;
  if (rem > half || (rem == half && (r & 1u) == 1u)) { r += 1u; }
  return sign | r;
}
fn from_f16(h: u32) -> u32 {
  let s = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 31u) { return s | 0x7f800000u | (m << 13u); }
  if (e != 0u) { return s | ((e + 112u) << 23u) | (m << 13u); }
  if (m == 0u) { return s; }
  let p = firstLeadingBit(m);
  return s | ((p + 103u) << 23u) | ((m << (23u - p)) & 0x7fffffu);
}
fn to_bf16(x: u32) -> u32 {
  if ((x & 0x7fffffffu) > 0x7f800000u) { return 0x7fc0u; }
  return (x + 0x7fffu + ((x >> 16u) & 1u)) >> 16u;
}
`;

/** enc / dec / round of the half dtype, and merge of one element under the rule: (bits, flagged). */
function halfLib(dtype: HalfDtype, rule: MergeRule): string {
  const enc = dtype === 'F16' ? 'to_f16(x)' : 'to_bf16(x)';
  const dec = dtype === 'F16' ? 'from_f16(h)' : '(h << 16u)';
  const sum = { peft: 'add_checked(rnd(w), d)', 'peft-safe': 'add_checked(rnd(w), rnd(d))', 'fp32-cast': 'add_checked(w, d)' }[rule];
  return /* wgsl */ `
fn enc(x: u32) -> u32 { return ${enc}; }
fn dec(h: u32) -> u32 { return ${dec}; }
fn rnd(x: u32) -> u32 { return dec(enc(x)); }
fn merge1(w: u32, d: u32) -> vec2u { let s = ${sum}; return vec2u(enc(s.x), s.y); }
`;
}

/** The list of flagged element indices: [count, i0, i1, ...] (count may exceed the capacity). */
const FLAGS = /* wgsl */ `
@group(0) @binding(6) var<storage, read_write> flags: array<atomic<u32>>;
fn flag(i: u32) {
  let slot = atomicAdd(&flags[0], 1u);
  if (slot + 1u < arrayLength(&flags)) { atomicStore(&flags[slot + 1u], i); }
}`;
/** Elementwise kernels' parameters: (length, 0, 0, 0); p.y is the zero that keeps two-sum opaque. */
const PARAMS = '@group(0) @binding(7) var<uniform> p: vec4u;';

/** Merged tensor: F32 out as f32 bits, half out as two elements per u32. */
export function mergeShader(dtype: MergeDtype, rule: MergeRule, withDelta: boolean): string {
  const io = /* wgsl */ `
@group(0) @binding(0) var<storage, read> w: array<u32>;
${withDelta ? '@group(0) @binding(1) var<storage, read> d: array<u32>;' : ''}
@group(0) @binding(4) var<storage, read_write> o: array<u32>;
${withDelta ? FLAGS : ''}
${PARAMS}
${common('p.y')}`;
  if (dtype === 'F32') {
    return `${io}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) nw: vec3u) {
  for (var i = g.x; i < p.x; i += nw.x * ${WG}u) {
    let s = add_checked(w[i], d[i]);
    o[i] = s.x;
    if (s.y != 0u) { flag(i); }
  }
}`;
  }
  const one = withDelta ? 'let m = merge1(w[j], d[j]); if (m.y != 0u) { flag(j); } return m.x;' : 'return enc(w[j]);';
  return `${io}${halfLib(dtype, rule)}
fn one(j: u32) -> u32 { ${one} }
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let pairs = (p.x + 1u) / 2u;
  for (var i = g.x; i < pairs; i += nw.x * ${WG}u) {
    let j = 2u * i;
    var v = one(j);
    if (j + 1u < p.x) { v |= one(j + 1u) << 16u; }
    o[i] = v;
  }
}`;
}

/** out = f(a - b), or acc = max(acc, |x|) by bit comparisons (exact for every input). */
export function elementwiseShader(op: 'subtract' | 'maxabs'): string {
  const head = /* wgsl */ `
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(4) var<storage, read_write> o: array<u32>;
${op === 'subtract' ? FLAGS : ''}
${PARAMS}
${common('p.y')}`;
  const body = op === 'subtract'
    ? 'let s = add_checked(a[i], b[i] ^ 0x80000000u); o[i] = s.x; if (s.y != 0u) { flag(i); }'
    : /* acc = a, x = b; the CPU keeps acc unless |x| > acc (false for NaN on either side) */ `
    let acc = a[i]; let v = b[i] & 0x7fffffffu;
    var gt = false;
    if (v <= 0x7f800000u && (acc & 0x7fffffffu) <= 0x7f800000u) {
      if ((acc & 0x80000000u) != 0u) { gt = v != 0u || (acc & 0x7fffffffu) != 0u; } else { gt = v > acc; }
    }
    o[i] = select(acc, v, gt);`;
  return `${head}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) nw: vec3u) {
  for (var i = g.x; i < p.x; i += nw.x * ${WG}u) { ${body} }
}`;
}

/**
 * Reductions run in two barrier-free passes (llvmpipe takes seconds to compile a workgroup barrier
 * tree): every invocation writes its own partial record, then `combineShader` folds groups of
 * records. A record: three vec4u counters (c0 and c2 summed, c1 by max) and four double-float sums,
 * as 12 u32 then (hi, lo) pairs of f32: PART_WORDS words. The host adds the last records in float64.
 */
export const PART_WORDS = 20;
function reduction(loop: string, inputs: string): string {
  return /* wgsl */ `
${inputs}
@group(0) @binding(5) var<storage, read_write> part: array<u32>;
${PARAMS}
${common('p.y')}
${TWO_SUM4}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) nw: vec3u) {
  var c0 = vec4u(0u); var c1 = vec4u(0u); var c2 = vec4u(0u);
  var hi = vec4f(0.0); var lo = vec4f(0.0);
  ${loop}
  ${STORE}
}`;
}

const TWO_SUM4 = /* wgsl */ `
fn opaque4(x: vec4f) -> vec4f { return bitcast<vec4f>(bitcast<vec4u>(x) ^ vec4u(p.y)); }
/** a + b as (sum, error), both exact. */
fn two_sum4(a: vec4f, b: vec4f) -> array<vec4f, 2> {
  let s = opaque4(a + b);
  let bb = opaque4(s - a);
  return array<vec4f, 2>(s, opaque4(a - opaque4(s - bb)) + opaque4(b - bb));
}`;

const STORE = /* wgsl */ `
  let o = g.x * ${PART_WORDS}u;
  for (var k = 0u; k < 4u; k++) {
    part[o + k] = c0[k]; part[o + 4u + k] = c1[k]; part[o + 8u + k] = c2[k];
    part[o + 12u + 2u * k] = bitcast<u32>(hi[k]); part[o + 13u + 2u * k] = bitcast<u32>(lo[k]);
  }`;

/** Second pass: record j of the output folds input records [j * p.z, (j + 1) * p.z) of the p.x there are. */
export function combineShader(): string {
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(5) var<storage, read_write> part: array<u32>;
${PARAMS}
${common('p.y')}
${TWO_SUM4}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3u) {
  let first = g.x * p.z;
  if (first >= p.x) { return; }
  var c0 = vec4u(0u); var c1 = vec4u(0u); var c2 = vec4u(0u);
  var hi = vec4f(0.0); var lo = vec4f(0.0);
  for (var j = first; j < min(first + p.z, p.x); j++) {
    let r = j * ${PART_WORDS}u;
    c0 += vec4u(src[r], src[r + 1u], src[r + 2u], src[r + 3u]);
    c1 = max(c1, vec4u(src[r + 4u], src[r + 5u], src[r + 6u], src[r + 7u]));
    c2 += vec4u(src[r + 8u], src[r + 9u], src[r + 10u], src[r + 11u]);
    let h = bitcast<vec4f>(vec4u(src[r + 12u], src[r + 14u], src[r + 16u], src[r + 18u]));
    let l = bitcast<vec4f>(vec4u(src[r + 13u], src[r + 15u], src[r + 17u], src[r + 19u]));
    let t = two_sum4(hi, h);
    hi = t[0]; lo += t[1] + l;
  }
  ${STORE}
}`;
}

/** Adds x to the double-float sums (hi, lo). */
const ACC = '{ let t = two_sum4(hi, x4); hi = t[0]; lo += t[1]; }';

/**
 * Pair statistics. c0 = (aNz, bNz, diffNz, nonFinite); c1 = (maxAbsDiff, maxAbsA, maxAbsB) as f32 bits;
 * c2 = (big, tiny): elements at or above 2^63 (their squares overflow f32) and nonzero ones below 2^-63
 * (their squares underflow), for the host to decide whether to trust the sums; sums = (dot, aSq, bSq, diffSq).
 */
export function pairStatsShader(withB: boolean): string {
  const inputs = `@group(0) @binding(0) var<storage, read> a: array<u32>;\n${withB ? '@group(0) @binding(1) var<storage, read> b: array<u32>;' : ''}`;
  const loop = /* wgsl */ `
  for (var i = g.x; i < p.x; i += nw.x * ${WG}u) {
    let xb = a[i]; let yb = ${withB ? 'b[i]' : '0u'};
    if (((xb >> 23u) & 0xffu) == 255u || ((yb >> 23u) & 0xffu) == 255u) { c0.w += 1u; continue; }
    let x = bitcast<f32>(xb); let y = bitcast<f32>(yb);
    let ax = xb & 0x7fffffffu; let ay = yb & 0x7fffffffu;
    c0 += vec4u(select(0u, 1u, ax != 0u), select(0u, 1u, ay != 0u), select(0u, 1u, xb != yb && (ax | ay) != 0u), 0u);
    let dd = abs(x - y);
    c1 = max(c1, vec4u(bitcast<u32>(dd), ax, ay, 0u));
    let ex = ax >> 23u; let ey = ay >> 23u;
    c2 += vec4u(select(0u, 1u, ex >= 190u || ey >= 190u), select(0u, 1u, (ex < 64u && ax != 0u) || (ey < 64u && ay != 0u)), 0u, 0u);
    // The dot product's four exact partial products; the squares need no exactness (no cancellation).
    let xs = split(x); let ys = split(y);
    var x4 = vec4f(xs.x * ys.x, x * x, y * y, dd * dd);
    ${ACC}
    x4 = vec4f(xs.x * ys.y, 0.0, 0.0, 0.0); ${ACC}
    x4 = vec4f(xs.y * ys.x, 0.0, 0.0, 0.0); ${ACC}
    x4 = vec4f(xs.y * ys.y, 0.0, 0.0, 0.0); ${ACC}
  }`;
  return reduction(loop, inputs);
}

/** Precision statistics: c0 = (deltaNonzero, lost, changed, castChanged); sums = (deltaSq, recoveredErrSq, changedSq, castSq). */
export function precisionShader(dtype: HalfDtype, rule: MergeRule, withDelta: boolean): string {
  const inputs = `@group(0) @binding(0) var<storage, read> w: array<u32>;\n${withDelta ? '@group(0) @binding(1) var<storage, read> d: array<u32>;' : ''}\n${FLAGS}`;
  const loop = /* wgsl */ `
  for (var i = g.x; i < p.x; i += nw.x * ${WG}u) {
    let xb = w[i]; let db = ${withDelta ? 'd[i]' : '0u'};
    if (off_range(xb) || off_range(db)) { flag(i); continue; }
    let cb = rnd(xb);
    let dz = (db & 0x7fffffffu) == 0u;
    var mb = cb;
    if (!dz) {
      let m = merge1(xb, db);
      mb = dec(m.x);
      if (m.y != 0u) { flag(i); continue; }
    }
    if (risky(cb) || risky(mb)) { flag(i); continue; }
    let x = bitcast<f32>(xb); let c = bitcast<f32>(cb); let mg = bitcast<f32>(mb); let dv = bitcast<f32>(db);
    let ce = c - x;
    let ch = mg - x;
    let rec = mg - c;
    let e = select(rec - dv, 0.0, dz);
    c0 += vec4u(select(1u, 0u, dz), select(0u, 1u, !dz && rec == 0.0), select(0u, 1u, ch != 0.0), select(0u, 1u, ce != 0.0));
    let x4 = vec4f(dv * dv, e * e, ch * ch, ce * ce);
    ${ACC}
  }`;
  return `${reduction(loop, inputs)}${halfLib(dtype, rule)}
/** Squares of values at or above 2^63 overflow f32, of nonzero values below 2^-63 underflow. */
fn off_range(u: u32) -> bool { let e = (u >> 23u) & 0xffu; return e >= 190u || (e < 64u && (u & 0x7fffffffu) != 0u); }`;
}

/**
 * delta = f(f(B @ A) * s) for rows [row0, row0 + p.y) of the [m, n] result (or of its transpose), as
 * cpuMath.ts's loraDeltaRows forms it: each element a double-float sum of exact products, multiplied by
 * sh + sl (the host passes 1 and 0) and rounded to f32, then times the f32 scale `s` (one correctly
 * rounded f32 multiply). An element is written only when the first rounding is certain, i.e. when the
 * double-float value plus an error bound covering both this sum and the CPU's float64 sum stays inside
 * one f32 rounding interval, and the product is a normal number (no flush of subnormals); otherwise its
 * index is flagged for the host. errCoef * sum|b*a| + underflow bounds the error of both sums.
 */
export function deltaShader(): string {
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> B: array<f32>;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<u32>;
${FLAGS}
struct DP { n: u32, rows: u32, r: u32, tr: u32, row0: u32, u0: u32, s: f32, u2: u32, sh: f32, sl: f32, err: f32, uf: f32 }
@group(0) @binding(7) var<uniform> p: DP;
${common('p.u0')}
const TK = 16u;
var<workgroup> bh: array<array<f32, ${TILE}>, TK>;
var<workgroup> bl: array<array<f32, ${TILE}>, TK>;
var<workgroup> ah: array<array<f32, ${TILE}>, TK>;
var<workgroup> al: array<array<f32, ${TILE}>, TK>;

fn finish(acc: vec2f, sa: f32) -> vec2u {
  let f = rounded(acc, sa);
  if (f.y != 0u) { return f; }
  let v = bitcast<f32>(f.x) * p.s;
  let e = (bitcast<u32>(v) >> 23u) & 0xffu;
  // A zero product of a nonzero value (or a subnormal) may have been flushed, an infinite one overflowed.
  let off = (e == 0u && (f.x & 0x7fffffffu) != 0u) || e == 255u;
  return vec2u(bitcast<u32>(v), select(0u, 1u, off));
}

fn rounded(acc: vec2f, sa: f32) -> vec2u {
  if (sa == 0.0) { return vec2u(select(0u, 0x80000000u, p.sh < 0.0), 0u); }
  let v = two_sum(acc.x, acc.y);
  let hs = split(v.x); let ss = split(p.sh);
  var t = two_sum(hs.x * ss.x, hs.x * ss.y);
  var lo = t.y;
  t = two_sum(t.x, hs.y * ss.x); lo += t.y;
  t = two_sum(t.x, hs.y * ss.y); lo += t.y;
  lo += v.x * p.sl + v.y * p.sh;
  let r = two_sum(t.x, lo);
  let hb = bitcast<u32>(r.x);
  let e = (hb >> 23u) & 0xffu;
  if (e < 37u || e == 255u) { return vec2u(hb, 1u); }
  let halfgap = bitcast<f32>((e - 24u - select(0u, 1u, (hb & 0x7fffffu) == 0u)) << 23u);
  let bound = abs(p.sh) * (p.err * sa + p.uf) + abs(r.x) * 1.2e-13;
  return vec2u(hb, select(1u, 0u, abs(r.y) + bound < halfgap));
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) li: vec3u) {
  let n = p.n; let rows = p.rows; let r = p.r;
  let lr0 = wg.y * ${TILE}u; let c0 = wg.x * ${TILE}u;
  let lid = li.y * 16u + li.x;
  var acc: array<array<vec2f, 4>, 4>;
  var sa: array<array<f32, 4>, 4>;
  for (var k0 = 0u; k0 < r; k0 += TK) {
    for (var t = 0u; t < 4u; t++) {
      let e = lid * 4u + t;
      let rr = e / TK; let kk = e % TK;
      let gr = lr0 + rr; let gk = k0 + kk;
      let bv = split(select(0.0, B[(p.row0 + gr) * r + gk], gr < rows && gk < r));
      bh[kk][rr] = bv.x; bl[kk][rr] = bv.y;
      let ka = e / ${TILE}u; let cc = e % ${TILE}u;
      let gk2 = k0 + ka; let gc = c0 + cc;
      let av = split(select(0.0, A[gk2 * n + gc], gk2 < r && gc < n));
      ah[ka][cc] = av.x; al[ka][cc] = av.y;
    }
    workgroupBarrier();
    let kn = min(TK, r - k0);
    for (var kk = 0u; kk < kn; kk++) {
      for (var i = 0u; i < 4u; i++) {
        let xh = bh[kk][li.y * 4u + i]; let xl = bl[kk][li.y * 4u + i];
        for (var j = 0u; j < 4u; j++) {
          let yh = ah[kk][li.x + 16u * j]; let yl = al[kk][li.x + 16u * j];
          var s = acc[i][j];
          var t = two_sum(s.x, xh * yh);
          var lo = s.y + t.y;
          t = two_sum(t.x, xh * yl); lo += t.y;
          t = two_sum(t.x, xl * yh); lo += t.y;
          t = two_sum(t.x, xl * yl); lo += t.y;
          acc[i][j] = two_sum(t.x, lo);
          sa[i][j] += abs(xh + xl) * abs(yh + yl);
        }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let lr = lr0 + li.y * 4u + i;
    for (var j = 0u; j < 4u; j++) {
      let c = c0 + li.x + 16u * j;
      if (lr < rows && c < n) {
        let f = finish(acc[i][j], sa[i][j]);
        o[select(lr * n + c, c * rows + lr, p.tr != 0u)] = f.x;
        if (f.y != 0u) { flag(lr * n + c); }
      }
    }
  }
}`;
}

/** DoRA's operand v = W + d as the rule forms it in fp32 (mergeOperand in cpuMath.ts): (bits, flagged). */
function doraOperand(dtype: MergeDtype, rule: MergeRule): string {
  if (dtype === 'F32') return 'fn operand(w: u32, d: u32) -> vec2u { return add_checked(w, d); }';
  const sum = rule === 'fp32-cast' ? 'add_checked(w, d)' : 'add_checked(rnd(w), d)';
  return `${halfLib(dtype, rule)}\nfn operand(w: u32, d: u32) -> vec2u { return ${sum}; }`;
}

/**
 * DoRA step 1, per output feature: partial sums of v^2 as double-float (hi, lo) pairs, one per
 * (feature, lane); lane l of a feature sums its elements l, l + lanes, ... Each square is exact
 * (v split into 12-bit halves: h^2 + 2hl + l^2), the sum is renormalised after every element, and the
 * host adds the lanes in float64 and certifies the f32 rounding of the norm (gpuKernels.ts).
 * A feature is a row (element f * cols + k) or, when `column`, a column (element k * cols + f; lanes
 * then run over rows and neighbouring invocations read neighbouring columns).
 * Params: (rows in this chunk, cols, lanes, zero).
 */
export function doraNormsShader(dtype: MergeDtype, rule: MergeRule, column: boolean): string {
  const item = column
    ? 'let l = t / cols; let f = t % cols; let count = rows;'
    : 'let f = t / lanes; let l = t % lanes; let count = cols;';
  const element = column ? 'k * cols + f' : 'f * cols + k';
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> d: array<u32>;
@group(0) @binding(4) var<storage, read_write> o: array<vec2f>;
${FLAGS}
@group(0) @binding(7) var<uniform> p: vec4u;
${common('p.w')}
${doraOperand(dtype, rule)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let rows = p.x; let cols = p.y; let lanes = p.z;
  let items = select(rows, cols, ${column}) * lanes;
  for (var t = g.x; t < items; t += nw.x * ${WG}u) {
    ${item}
    var acc = vec2f(0.0);
    for (var k = l; k < count; k += lanes) {
      let e = ${element};
      let v = operand(w[e], d[e]);
      // Squares of 2^32 and above could overflow the sums; v at or above it never occurs in a weight.
      if (v.y != 0u || ((v.x >> 23u) & 0xffu) >= 159u) { flag(e); continue; }
      let s = split(bitcast<f32>(v.x));
      acc = df_add(acc, s.x * s.x);
      acc = df_add(acc, 2.0 * (s.x * s.y));
      acc = df_add(acc, s.y * s.y);
      acc = two_sum(acc.x, acc.y);
    }
    o[t] = acc;
  }
}`;
}

/**
 * DoRA step 2: merged = enc(f(factor[feature] * v)), one f32 multiply (correctly rounded for normal
 * operands and results; anything else is flagged for the host). Params: (length, zero, first element
 * of the chunk in the tensor, cols).
 */
export function mergeDoraShader(dtype: MergeDtype, rule: MergeRule, column: boolean): string {
  const head = /* wgsl */ `
@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> d: array<u32>;
@group(0) @binding(2) var<storage, read> factor: array<u32>;
@group(0) @binding(4) var<storage, read_write> o: array<u32>;
${FLAGS}
${PARAMS}
${common('p.y')}
${doraOperand(dtype, rule)}
/** f32 bits of factor * v for local element j; flags it when the GPU's product may not be IEEE. */
fn scaled(j: u32) -> u32 {
  let e = p.z + j;
  let v = operand(w[j], d[j]);
  let fb = factor[${column ? 'e % p.w' : 'e / p.w'}];
  var x = bitcast<u32>(opaque(opaque(bitcast<f32>(v.x)) * opaque(bitcast<f32>(fb))));
  let va = v.x & 0x7fffffffu; let fa = fb & 0x7fffffffu;
  if ((x & 0x7fffffffu) == 0u) { x = (v.x ^ fb) & 0x80000000u; }
  if (v.y != 0u || risky(v.x) || risky(fb) || risky(x) || ((x & 0x7fffffffu) == 0u && va != 0u && fa != 0u)) { flag(j); }
  return x;
}`;
  if (dtype === 'F32') {
    return `${head}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) nw: vec3u) {
  for (var i = g.x; i < p.x; i += nw.x * ${WG}u) { o[i] = scaled(i); }
}`;
  }
  return `${head}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let pairs = (p.x + 1u) / 2u;
  for (var i = g.x; i < pairs; i += nw.x * ${WG}u) {
    let j = 2u * i;
    var v = enc(scaled(j));
    if (j + 1u < p.x) { v |= enc(scaled(j + 1u)) << 16u; }
    o[i] = v;
  }
}`;
}
