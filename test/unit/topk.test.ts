import assert from 'node:assert/strict';
import { test } from 'node:test';
import { topK } from '../../src/engine/unmerge/topk';
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
