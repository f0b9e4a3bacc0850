import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bf16BitsToF32, f16BitsToF32, f32BitsToBf16, f32BitsToF16 } from '../../src/shared/safetensors/half';

const f = new Float32Array(1);
const u = new Uint32Array(f.buffer);
const bitsOf = (x: number): number => ((f[0] = x), u[0]);

const cache = new Map<(h: number) => number, number[]>();
function finitePositives(decode: (h: number) => number): number[] {
  let p = cache.get(decode);
  if (!p) {
    p = [];
    for (let h = 0; h < 0x8000; h++) if (Number.isFinite(decode(h))) p.push(h);
    cache.set(decode, p);
  }
  return p;
}

/** Independent reference: the nearest representable value by exhaustive ordered search, ties to even. */
function referenceRound(x: number, decode: (h: number) => number, maxFinite: number, infBits: number): number {
  if (Number.isNaN(x)) return -1;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  const positives = finitePositives(decode);
  let lo = 0;
  let hi = positives.length - 1;
  // Values at or past halfway between max finite and the next step round to infinity.
  if (a >= maxFinite) {
    const top = decode(positives[hi]);
    const ulp = top - decode(positives[hi - 1]);
    if (a >= top + ulp / 2) return sign | infBits;
    if (a === top) return sign | positives[hi];
  }
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (decode(positives[mid]) <= a) lo = mid;
    else hi = mid;
  }
  const below = decode(positives[lo]);
  const above = decode(positives[hi]);
  if (a === below) return sign | positives[lo];
  if (a - below < above - a) return sign | positives[lo];
  if (a - below > above - a) return sign | positives[hi];
  return sign | ((positives[lo] & 1) === 0 ? positives[lo] : positives[hi]);
}

function samples(): number[] {
  const xs: number[] = [0, -0, 1, -1, 65504, 65519.99, 65520, 65536, 1e-8, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 2 ** -14, 2 ** -15, 3.4e38];
  let s = 12345;
  const rnd = (): number => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0), s / 2 ** 32);
  for (let i = 0; i < 4000; i++) {
    u[0] = Math.floor(rnd() * 2 ** 32);
    if (Number.isFinite(f[0])) xs.push(f[0]);
  }
  // Exact ties between neighbouring fp16 and bf16 values.
  for (let h = 1; h < 0x7bff; h += 97) xs.push((f16BitsToF32(h) + f16BitsToF32(h + 1)) / 2);
  for (let h = 1; h < 0x7f7f; h += 131) xs.push(Math.fround((bf16BitsToF32(h) + bf16BitsToF32(h + 1)) / 2));
  return xs;
}

test('fp32 -> fp16 rounds to nearest even, subnormals and overflow included', () => {
  for (const x of samples()) {
    const want = referenceRound(Math.fround(x), f16BitsToF32, 65504, 0x7c00);
    assert.equal(f32BitsToF16(bitsOf(x)), want, `x=${x}`);
  }
});

test('fp32 -> bf16 rounds to nearest even', () => {
  for (const x of samples()) {
    const want = referenceRound(Math.fround(x), bf16BitsToF32, bf16BitsToF32(0x7f7f), 0x7f80);
    assert.equal(f32BitsToBf16(bitsOf(x)), want, `x=${x}`);
  }
});

test('NaN and infinities survive as PyTorch keeps them', () => {
  assert.equal(f32BitsToF16(0x7fc00000), 0x7e00);
  assert.equal(f32BitsToF16(0xffc00000), 0xfe00);
  assert.equal(f32BitsToBf16(0xffc00001), 0x7fc0);
  assert.equal(f32BitsToF16(bitsOf(Infinity)), 0x7c00);
  assert.equal(f32BitsToBf16(bitsOf(-Infinity)), 0xff80);
  assert.ok(Number.isNaN(f16BitsToF32(0x7e00)));
  assert.equal(f16BitsToF32(0xfc00), -Infinity);
});

test('every fp16 and bf16 value round-trips exactly through fp32', () => {
  for (let h = 0; h < 65536; h++) {
    const e16 = (h >>> 10) & 0x1f;
    if (!(e16 === 31 && (h & 0x3ff) !== 0)) assert.equal(f32BitsToF16(bitsOf(f16BitsToF32(h))), h);
    const isNanBf = ((h >>> 7) & 0xff) === 0xff && (h & 0x7f) !== 0;
    if (!isNanBf) assert.equal(f32BitsToBf16(bitsOf(bf16BitsToF32(h))), h);
  }
});
