import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { readCompareReport } from '../../src/shared/jobs/reports/compare';
import { readPrecisionReport } from '../../src/shared/jobs/reports/precision';
import { readValidateReport } from '../../src/shared/jobs/reports/validate';
import { readCensusReport } from '../../src/shared/jobs/reports/census';
import { readMaskReport } from '../../src/shared/jobs/reports/mask';
import { readStatsReport } from '../../src/shared/jobs/reports/stats';
import { readCombineReport } from '../../src/shared/jobs/reports/lowrank';

test('a report that is not an object reads as every field null and every list empty', () => {
  for (const x of [null, undefined, 42, 'report', [1, 2]]) {
    const r = readCompareReport(x);
    assert.equal(r.summary, null);
    assert.equal(r.base, null);
    assert.deepEqual(r.tensors, []);
    assert.deepEqual(r.warnings, []);
  }
});

test('a field of another type reads as null; list and record entries of the wrong shape are left out', () => {
  const r = readCompareReport({
    summary: { tolerance: '1e-5', equivalent: true, meanCosine: 0.5, dtypeVerdict: 'FROM-A-NEWER-ENGINE' },
    tensors: [{ name: 'a.weight', cosine: 1, maxAbsDiff: null, loraTarget: 'yes' }, 'not a tensor', null, { cosine: 0.5 }],
    warnings: ['w', 3],
  });
  assert.deepEqual(
    [r.summary?.tolerance, r.summary?.equivalent, r.summary?.meanCosine, r.summary?.dtypeVerdict, r.summary?.maxAbsDiff],
    [null, true, 0.5, 'FROM-A-NEWER-ENGINE', null],
  );
  assert.equal(r.tensors.length, 2, 'objects are kept, with their own nulls');
  assert.deepEqual([r.tensors[0].name, r.tensors[0].cosine, r.tensors[0].maxAbsDiff, r.tensors[0].loraTarget], ['a.weight', 1, null, null]);
  assert.deepEqual([r.tensors[1].name, r.tensors[1].cosine], [null, 0.5]);
  assert.deepEqual(r.warnings, ['w']);

  const p = readPrecisionReport({ dtypes: { bf16: { deltaLostFraction: 0.25, rule: 'peft' }, fp16: 'lost', fp8: { rule: 'nearest' } }, defaultRule: 'round' });
  assert.deepEqual(Object.keys(p.dtypes), ['bf16', 'fp8']);
  assert.deepEqual([p.dtypes.bf16.deltaLostFraction, p.dtypes.bf16.rule, p.dtypes.fp8.rule, p.defaultRule], [0.25, 'peft', 'nearest', null], 'the rule of a dtype is any string; a default rule outside the list is null');
});

test('nested reports: validate dtypes carry their compare summary, census its summary', () => {
  const v = readValidateReport({ dtypes: [{ dtype: 'bf16', folder: '/o/bf16', compare: { shared: 4 }, precision: null }, { folder: 7 }] });
  assert.deepEqual(v.dtypes.map((d) => [d.dtype, d.folder, d.compare?.shared ?? null, d.precision]), [['bf16', '/o/bf16', 4, null], [null, null, null, null]]);
  const c = readCensusReport({ kind: 'model', summary: { params: 3_030_371_328, dtypes: { BF16: 483, F32: 'x' } } });
  assert.deepEqual([c.kind, c.summary?.params, c.summary?.bytes, c.summary?.dtypes], ['model', 3_030_371_328, null, { BF16: 483 }]);
});

test('a list or record read with keepNull holds an entry of the wrong shape as null in its place', () => {
  const m = readMaskReport({ normPreservation: { a: 0.9, zero: null, odd: 'x' }, perModule: [null, { name: 'w', selected: 3 }] });
  assert.deepEqual(m.normPreservation, { a: 0.9, zero: null, odd: null }, "an all-zero adapter's null fraction stays under its name");
  assert.deepEqual(m.perModule.map((x) => x.name), ['w'], 'a list without keepNull leaves them out');
  const s = readStatsReport({ histogram: { edges: [0, 'x', 2], counts: [5, null] }, heatmap: { rows: 1, cols: 4, maxAbs: [1, null, {}, 4] } });
  assert.deepEqual(s.histogram?.edges, [0, null, 2]);
  assert.deepEqual(s.histogram?.counts, [5, null]);
  assert.deepEqual(s.heatmap?.maxAbs, [1, null, null, 4], 'cells keep their positions');
  assert.deepEqual(s.heatmap?.meanAbs, [], 'an absent list is empty');
  assert.deepEqual(readCombineReport({ adapters: ['a', 'b', 'c'], weights: [1, 'x', -0.5] }).weights, [1, null, -0.5], 'one weight per adapter, in its place');
});
