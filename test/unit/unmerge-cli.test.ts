/** The mask, compress and decompose commands end to end through the built CLI (`npm run build` first). */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { loraPair, peftConfig, randomF32, TestTensor, tmpDir, writeAdapter, writeModel } from './helpers/builders';
import { CLI, CliRun, runCli } from './helpers/cli';

const root = tmpDir('lora-lens-unmerge-cli-');
const H = 12;

const cli = (...args: string[]): CliRun => runCli(args);

const names = ['model.layers.0.self_attn.q_proj.weight', 'model.layers.0.self_attn.v_proj.weight', 'model.layers.1.self_attn.q_proj.weight', 'model.layers.1.self_attn.v_proj.weight'];
const weights = names.map((_, i) => randomF32(H * H, 50 + i, 0.05));
const base = writeModel(path.join(root, 'base'), { model_type: 'llama' }, names.map((name, i) => ({ name, shape: [H, H], data: weights[i] })));
const adapter = (name: string, seed: number): string =>
  writeAdapter(
    path.join(root, name),
    peftConfig({ r: 2, lora_alpha: 4 }),
    names.flatMap((n, i) => loraPair(n.replace(/\.weight$/, ''), 2, H, H, seed + 10 * i)),
  );
const dict = [adapter('alpha', 1), adapter('beta', 2), adapter('gamma', 3)];

/** base + 2 * delta(beta) as a model folder; the delta as the kernel defines it (float64 sum, rounded once). */
function mergedWithBeta(): string {
  const tensors: TestTensor[] = names.map((name, i) => {
    const [A, B] = loraPair(name.replace(/\.weight$/, ''), 2, H, H, 2 + 10 * i).map((t) => t.data as Float32Array);
    const out = new Float32Array(H * H);
    for (let r = 0; r < H; r++) {
      for (let c = 0; c < H; c++) {
        let acc = 0;
        for (let k = 0; k < 2; k++) acc += B[r * 2 + k] * A[k * H + c];
        out[r * H + c] = weights[i][r * H + c] + 2 * Math.fround(acc * 2);
      }
    }
    return { name, shape: [H, H], data: out };
  });
  return writeModel(path.join(root, 'merged'), { model_type: 'llama' }, tensors);
}

test('lora-lens mask, compress, decompose end to end', () => {
  assert.ok(fs.existsSync(CLI), 'run npm run build first');
  const maskDir = path.join(root, 'mask');
  const maskJson = path.join(root, 'mask-report.json');
  const m = cli('mask', '--base', base, '--adapters', ...dict, '--budget', '50', '--out', maskDir, '--json', maskJson);
  assert.equal(m.status, 0, m.stderr);
  const mr = JSON.parse(fs.readFileSync(maskJson, 'utf8'));
  for (const k of ['budget', 'modules', 'k', 'selected', 'perProjection', 'perLayer', 'normPreservation']) assert.ok(k in mr, k);
  assert.match(mr.device, /^CPU, \d+ worker threads?, WebAssembly SIMD$/, 'the bundled CLI finds dist/kernels.wasm beside it');
  assert.deepEqual([mr.budget, mr.modules, mr.k, mr.selected], [50, 4, 12, 48]);
  assert.deepEqual(Object.keys(mr.normPreservation), ['alpha', 'beta', 'gamma']);
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(maskDir, 'mask.json'), 'utf8')).perModule.length, 4);

  const merged = mergedWithBeta();
  const compDir = path.join(root, 'compressed');
  const c = cli('compress', '--mask', maskDir, '--base', base, '--adapter', dict[2], '--finetuned', merged, '--adapter', dict[0], '--out', compDir);
  assert.equal(c.status, 0, c.stderr);
  const cr = JSON.parse(fs.readFileSync(path.join(compDir, 'compress.json'), 'utf8'));
  assert.deepEqual(cr.inputs.map((i: { name: string }) => i.name), ['gamma', 'merged', 'alpha']);
  assert.match(cr.device, /^CPU/);
  for (const i of cr.inputs) assert.ok(fs.existsSync(path.join(compDir, i.file)));

  const truth = path.join(root, 'truth.json');
  fs.writeFileSync(truth, JSON.stringify({ beta: 2 }));
  for (const method of ['nnls', 'omp', 'lasso']) {
    const d = cli('decompose', '--mask', maskDir, '--base', base, '--dictionary', ...dict, '--target', merged, '--method', method, '--truth', truth, '--json', '-');
    assert.equal(d.status, 0, d.stderr);
    const r = JSON.parse(d.stdout);
    for (const k of ['method', 'coefficients', 'support', 'relativeResidual', 'reconstructionError']) assert.ok(k in r, k);
    assert.equal(r.method, method);
    assert.match(r.device, /^CPU/);
    assert.deepEqual(r.support, ['beta']);
    assert.ok(Math.abs(r.coefficients.beta - 2) < (method === 'lasso' ? 1e-2 : 1e-5), `${method}: ${r.coefficients.beta}`);
    assert.equal(r.verdict, 'decomposable');
    assert.deepEqual([r.precision, r.recall], [1, 1]);
    // An fp32 target: its rounding is negligible; beta's coefficient stands far above the noise.
    assert.ok(r.roundingFloor >= 0 && r.roundingFloor < 1e-5, String(r.roundingFloor));
    const beta = r.dictionary.find((x: { name: string }) => x.name === 'beta');
    assert.ok(beta.t === null || beta.t > 5, String(beta.t));
  }
  const bad = cli('decompose', '--mask', maskDir, '--base', base, '--dictionary', ...dict, '--target', merged, '--min-t', '-1');
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--min-t must not be negative/);
});

test('lora-lens mask with a budget below the module count exits 2 with one line and writes nothing', () => {
  const out = path.join(root, 'mask-bad');
  const r = cli('mask', '--base', base, '--adapters', ...dict, '--budget', '3', '--out', out);
  assert.equal(r.status, 2);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  assert.match(r.stderr, /budget 3 is smaller than the number of modules the adapters target \(4\)/);
  assert.equal(fs.existsSync(out), false);
  const d = cli('decompose', '--mask', path.join(root, 'nowhere'), '--base', base, '--dictionary', dict[0], '--target', dict[1]);
  assert.equal(d.status, 2);
  assert.match(d.stderr, /not a mask folder/);
});
