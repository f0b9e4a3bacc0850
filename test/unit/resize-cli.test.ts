import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { FIXTURES, loraPair, peftConfig, tmpDir, writeAdapter, writeModel } from './helpers/builders';
import { assertOneLineError, runCli } from './helpers/cli';
import { runNumpy } from './helpers/numpyRef';
import { findPython } from './helpers/python';

const root = tmpDir();
const P = 'base_model.model.';

interface ResizeJson {
  modules: { name: string; fromRank: number; rank: number; energyKept: number; relError: number; optimalRelError: number }[];
}

/** rank_pattern / alpha_pattern, rsLoRA, an embedding, and a module narrower than its rank. */
const adapterDir = writeAdapter(path.join(root, 'adapter'), peftConfig({ r: 6, lora_alpha: 12, use_rslora: true, rank_pattern: { v_proj: 5 }, alpha_pattern: { 'layers.0.self_attn.v_proj': 5 }, target_modules: ['q_proj', 'v_proj', 'k_proj', 'embed_tokens'] }), [
  ...loraPair('model.layers.0.self_attn.q_proj', 6, 24, 16, 3),
  ...loraPair('model.layers.0.self_attn.v_proj', 5, 24, 8, 5),
  ...loraPair('model.layers.0.self_attn.k_proj', 6, 24, 4, 9),
  { name: `${P}model.embed_tokens.lora_embedding_A`, shape: [6, 30], data: 11 },
  { name: `${P}model.embed_tokens.lora_embedding_B`, shape: [24, 6], data: 12 },
]);
const baseDir = writeModel(path.join(root, 'base'), { model_type: 'llama' }, [
  { name: 'model.embed_tokens.weight', shape: [30, 24] },
  { name: 'model.layers.0.self_attn.q_proj.weight', shape: [16, 24] },
  { name: 'model.layers.0.self_attn.k_proj.weight', shape: [4, 24] },
  { name: 'model.layers.0.self_attn.v_proj.weight', shape: [8, 24] },
  { name: 'model.norm.weight', shape: [24] },
]);

function resize(args: string[], name: string): { out: string; report: ResizeJson } {
  const out = path.join(root, name);
  const json = path.join(root, `${name}.json`);
  const r = runCli(['resize', '--adapter', adapterDir, '--out', out, '--json', json, ...args]);
  assert.equal(r.status, 0, r.stderr);
  return { out, report: JSON.parse(fs.readFileSync(json, 'utf8')) as ResizeJson };
}

/** numpy: per module the optimum of rank k (k from `ranks`, or the energy rule), and how far the written adapter's delta is from it. */
const CHECK = `
src = peft_deltas(SRC); dst = peft_deltas(DST)
out = {}
for m, (d, r) in src.items():
    s = svals(d)
    k = RANKS[m] if RANKS else int(np.argmax(np.cumsum(s**2) / np.sum(s**2) >= ENERGY) + 1)
    b = best(d, k)
    out[m] = {'k': k, 'opt': float(np.linalg.norm(d - b) / np.linalg.norm(d)), 'kept': float(np.sum(s[:k]**2) / np.sum(s**2)),
              'writtenVsBest': float(np.abs(dst[m][0] - b).max() / np.abs(d).max()), 'writtenRank': dst[m][1]}
emit(out)`;

function check(
  python: string,
  out: string,
  ranks: Record<string, number> | null,
  energy = 0,
): Record<string, { k: number; opt: number; kept: number; writtenVsBest: number; writtenRank: number }> {
  return runNumpy(python, `SRC = ${JSON.stringify(adapterDir)}; DST = ${JSON.stringify(out)}; RANKS = ${JSON.stringify(ranks)}; ENERGY = ${energy}\n${CHECK}`);
}

test('resize --rank: at the Eckart–Young optimum to 1e-6 (numpy/LAPACK), the written delta is numpy’s best rank-k', (t) => {
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  const { out, report } = resize(['--rank', '2'], 'rank2');
  const ref = check(py.python, out, Object.fromEntries(report.modules.map((m) => [m.name, 2])));
  assert.equal(report.modules.length, 4);
  for (const m of report.modules) {
    const r = ref[m.name];
    assert.equal(m.rank, 2);
    assert.equal(r.writtenRank, 2);
    assert.ok(Math.abs(m.relError - r.opt) < 1e-6, `${m.name}: relError ${m.relError} vs optimum ${r.opt}`);
    assert.ok(Math.abs(m.optimalRelError - r.opt) < 1e-12);
    assert.ok(Math.abs(m.energyKept - r.kept) < 1e-12);
    assert.ok(r.writtenVsBest < 1e-6, `${m.name}: written delta off numpy's best by ${r.writtenVsBest}`);
  }
  assert.deepEqual(report.modules.find((m) => m.name.endsWith('v_proj'))!.fromRank, 5);
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
  assert.deepEqual([cfg.r, cfg.lora_alpha, cfg.use_rslora, cfg.rank_pattern], [2, 2, false, {}]);
  assert.deepEqual(cfg.target_modules, ['q_proj', 'v_proj', 'k_proj', 'embed_tokens']);
});

test('resize --energy: per-module ranks as numpy picks them, through rank_pattern; the merged model equals base + best approximation', (t) => {
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  const { out, report } = resize(['--energy', '0.8'], 'energy');
  const ref = check(py.python, out, null, 0.8);
  for (const m of report.modules) {
    assert.equal(m.rank, ref[m.name].k, m.name);
    assert.equal(ref[m.name].writtenRank, m.rank);
    assert.ok(m.energyKept >= 0.8 - 1e-12);
    assert.ok(Math.abs(m.relError - ref[m.name].opt) < 1e-6);
  }
  assert.ok(new Set(report.modules.map((m) => m.rank)).size > 1, 'the energy rule gives different ranks here');
  // Our own merge of the resized adapter against numpy's W + best rank-k delta (embedding delta transposed).
  const merged = path.join(root, 'merged');
  const r = runCli(['merge', '--base', baseDir, '--adapter', out, '--out', merged, '--dtype', 'fp32']);
  assert.equal(r.status, 0, r.stderr);
  const diff = runNumpy<number>(
    py.python,
    `src = peft_deltas(${JSON.stringify(adapterDir)}); base = load_model(${JSON.stringify(baseDir)}); got = load_model(${JSON.stringify(merged)})
ks = ${JSON.stringify(Object.fromEntries(report.modules.map((m) => [m.name, m.rank])))}
worst = 0.0
for name, w in base.items():
    module = name[:-len('.weight')]
    want = w.astype(np.float64)
    if module in src:
        b = best(src[module][0], ks[module])
        want = want + (b.T if 'embed' in module else b)
    worst = max(worst, float(np.abs(got[name] - want).max()))
emit(worst)`,
  );
  assert.ok(diff < 1e-6, `merged model off by ${diff}`);
});

test('resize of a real GPT-2 Conv1D adapter keeps its task head and reaches the optimum', (t) => {
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  const src = path.join(FIXTURES, 'real-adapters/gpt2-seqcls-cattn-r8');
  const out = path.join(root, 'gpt2-r3');
  const json = path.join(root, 'gpt2-r3.json');
  const r = runCli(['resize', '--adapter', src, '--out', out, '--rank', '3', '--json', json]);
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(fs.readFileSync(json, 'utf8')) as ResizeJson;
  const ref = runNumpy<{ opt: Record<string, number>; score: boolean; fanInFanOut: boolean }>(
    py.python,
    `a = load_st(${JSON.stringify(path.join(src, 'adapter_model.safetensors'))}); b = load_st(${JSON.stringify(path.join(out, 'adapter_model.safetensors'))})
opt = {}
for k, la in a.items():
    if '.lora_A.' not in k: continue
    m = k[len('base_model.model.'):-len('.lora_A.weight')]
    lb = a[k.replace('lora_A', 'lora_B')].astype(np.float64)
    qb, rb = np.linalg.qr(lb); qa, ra = np.linalg.qr(la.astype(np.float64).T)
    s = svals(rb @ ra.T)
    opt[m] = float(np.sqrt(np.sum(s[3:]**2) / np.sum(s**2)))
emit({'opt': opt, 'score': bool(np.array_equal(a['base_model.model.score.weight'], b['base_model.model.score.weight'])), 'fanInFanOut': json.load(open(${JSON.stringify(path.join(out, 'adapter_config.json'))}))['fan_in_fan_out']})`,
  );
  assert.equal(report.modules.length, 12);
  for (const m of report.modules) assert.ok(Math.abs(m.relError - ref.opt[m.name]) < 1e-6, m.name);
  assert.equal(ref.score, true);
  assert.equal(ref.fanInFanOut, true);
});

test('resize: bad input exits 2 with one line and writes nothing', () => {
  const out = path.join(root, 'bad-out');
  // k_proj has 4 output rows: rank 5 is more than it allows.
  assertOneLineError(runCli(['resize', '--adapter', adapterDir, '--out', out, '--rank', '5']), adapterDir, 'k_proj', '--rank 5');
  assertOneLineError(runCli(['resize', '--adapter', adapterDir, '--out', out, '--energy', '0']), '--energy');
  assertOneLineError(runCli(['resize', '--adapter', adapterDir, '--out', out, '--energy', '1.5']), '--energy');
  assertOneLineError(runCli(['resize', '--adapter', adapterDir, '--out', out, '--rank', '2', '--energy', '0.5']), '--rank', '--energy');
  assertOneLineError(runCli(['resize', '--adapter', adapterDir, '--out', out]), '--rank', '--energy');
  assertOneLineError(runCli(['resize', '--adapter', adapterDir, '--out', out, '--rank', '1.5']), '--rank');
  const dora = writeAdapter(path.join(root, 'dora'), peftConfig({ use_dora: true, target_modules: ['q_proj'] }), [
    ...loraPair('model.layers.0.self_attn.q_proj', 8, 24, 16),
    { name: `${P}model.layers.0.self_attn.q_proj.lora_magnitude_vector`, shape: [16] },
  ]);
  assertOneLineError(runCli(['resize', '--adapter', dora, '--out', out, '--rank', '2']), dora, 'DoRA');
  assert.equal(fs.existsSync(out), false);
  assert.deepEqual(fs.readdirSync(root).filter((f) => f.includes('partial')), []);
});
