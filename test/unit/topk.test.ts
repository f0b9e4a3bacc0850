import assert from 'node:assert/strict';
import { test } from 'node:test';
import { radixTopK, topK } from '../../src/engine/unmerge/topk';
import { rng } from './helpers/builders';

/** Reference: a full sort by value descending, then index ascending. */
function reference(v: Float32Array, k: number): number[] {
  const idx = [...v.keys()].sort((a, b) => v[b] - v[a] || a - b);
  return idx.slice(0, k).sort((a, b) => a - b);
}

test('topK matches a full sort on random magnitudes, including the k-th value and the extremes of k', () => {
  const r = rng(3);
  const v = new Float32Array(5000).map(() => Math.abs(r()) * 10 ** Math.floor(r() * 8));
  for (const k of [0, 1, 7, 892, 4999, 5000, 6000]) {
    const got = topK(v, k);
    assert.deepEqual([...got.indices], reference(v, k), `k=${k}`);
    const kept = Math.min(k, v.length);
    assert.equal(got.threshold, kept === 0 ? 0 : Math.min(...[...got.indices].map((i) => v[i])));
    assert.equal(got.nonFinite, 0);
  }
});

test('topK breaks ties toward the lower index, also across the bucket of the threshold', () => {
  const v = new Float32Array(100).fill(0.5);
  assert.deepEqual([...topK(v, 10).indices], [...Array(10).keys()]);
  // Three tiers; the threshold tier is split: values differing only in their low 16 bits.
  const w = new Float32Array([1, 0.25, 0.25, 3, 0.25, 0.25000003, 0.25, 3]);
  assert.deepEqual([...topK(w, 5).indices], [0, 1, 3, 5, 7]);
  assert.deepEqual([...topK(w, 6).indices], [0, 1, 2, 3, 5, 7]);
});

test('topK treats -0 as 0, orders subnormals, and counts NaN and infinity as non-finite', () => {
  const v = new Float32Array([-0, 1.4e-45, 0, 2.8e-45, Infinity, NaN, 1]); // the two smallest subnormals
  const got = topK(v, 4);
  assert.equal(got.nonFinite, 2);
  assert.deepEqual([...got.indices], [3, 4, 5, 6]);
  assert.deepEqual([...topK(new Float32Array([0, -0, 0]), 2).indices], [0, 1]);
});

/** topK (its candidate filter) against radixTopK of the whole array: same indices, threshold bits, count. */
function assertSameSelection(v: Float32Array, k: number, label: string): void {
  const got = topK(v, k);
  const want = radixTopK(v, k);
  assert.deepEqual([...got.indices], [...want.indices], label);
  assert.ok(Object.is(got.threshold, want.threshold), `${label}: threshold ${got.threshold} vs ${want.threshold}`);
  assert.equal(got.nonFinite, want.nonFinite, label);
}

test('topK over chunk-maximum candidates selects exactly what radixTopK of the whole array does', () => {
  const r = rng(11);
  const n = 200_003; // a last, partial chunk
  // Random magnitudes over 8 decades; the full sort agrees too.
  const v = new Float32Array(n).map(() => Math.abs(r()) * 10 ** Math.floor(r() * 8));
  for (const k of [1, 50, 892, 3125]) assertSameSelection(v, k, `random k=${k}`);
  assert.deepEqual([...topK(v, 892).indices], reference(v, 892));

  // Ties at the threshold spread over many chunks (the tie-break must see every tied element, in index
  // order), values one ulp either side of it, signed zeros, and a few non-finite values above it all.
  const u = new Float32Array(n);
  for (let i = 0; i < n; i++) u[i] = [0.5, Math.fround(0.5 + 2 ** -24), Math.fround(0.5 - 2 ** -25), 0.25, -0][Math.floor(r() * 5)];
  const bits = new Uint32Array(u.buffer);
  bits[77] = 0x7fc00001; // a NaN with a payload
  bits[1234] = 0xffc00000; // a negative NaN
  u[99_999] = Infinity;
  u[n - 1] = -Infinity;
  for (const k of [1, 3, 4, 5, 100, 20_000, 40_000]) assertSameSelection(u, k, `ties k=${k}`);

  // Every element equal: every chunk is a candidate; the first k indices win.
  const same = new Float32Array(n).fill(3);
  assertSameSelection(same, 700, 'all equal');
  assert.deepEqual([...topK(same, 700).indices], [...Array(700).keys()]);

  // One chunk far above the rest, and the chunk maxima themselves tied: the k-th chunk maximum equals
  // values in other chunks that are not their chunk's maximum.
  const w = new Float32Array(n).map(() => Math.abs(r()) * 0.01);
  for (let i = 0; i < 64; i++) w[i] = 100 + i;
  for (let c = 1; c < n / 64; c += 3) w[c * 64 + (c % 64)] = 1;
  for (let c = 2; c < n / 64; c += 3) w[c * 64 + (c % 64)] = 1; // tied with 1 below other chunks' maxima
  for (const k of [10, 64, 65, 500, 2000]) assertSameSelection(w, k, `tiers k=${k}`);
});
