import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { loraPair, peftConfig, randomF32, TestTensor, tmpDir, writeAdapter, writeModel } from './helpers/builders';
import { assertOneLineError, runCli } from './helpers/cli';
import { runNumpy } from './helpers/numpyRef';
import { findPython } from './helpers/python';
import { Dtype } from '../../src/shared/safetensors/dtypes';

const root = tmpDir();

interface ExtractLoraJson {
  modules: { name: string; rank: number; energyKept: number; relError: number; transposed: boolean; roundingNoise: { fraction: number; energy: number; sigma: number; signalRank: number } | null }[];
  notCaptured: { name: string; l2Norm: number }[];
  unchanged: number;
}

/** W + U·V (rank `r`, scale 1) + `noise`·(full-rank uniform), or a geometric spectrum when `decay` is given. */
function changed(w: Float32Array, rows: number, cols: number, seed: number, r: number, noise: number): Float32Array {
  const u = randomF32(rows * r, seed, 0.3);
  const v = randomF32(r * cols, seed + 1, 0.3);
  const e = randomF32(rows * cols, seed + 2, noise);
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      let d = 0;
      for (let c = 0; c < r; c++) d += u[i * r + c] * v[c * cols + j] * Math.pow(0.8, c);
      out[i * cols + j] = w[i * cols + j] + d + e[i * cols + j];
    }
  }
  return out;
}

const SHAPES: Record<string, number[]> = {
  'model.embed_tokens.weight': [50, 64],
  'model.layers.0.input_layernorm.weight': [64],
  'model.layers.0.self_attn.q_proj.weight': [96, 64],
  'model.layers.0.self_attn.k_proj.weight': [32, 64],
  'model.layers.0.self_attn.v_proj.weight': [32, 64],
  'model.layers.0.mlp.down_proj.weight': [64, 80],
  'model.norm.weight': [64],
};

/** A llama-shaped pair: q, v and down changed (low rank plus noise; v with a slow decay of 12 directions), k unchanged, a norm and the embedding changed. */
function llamaPair(name: string, ftDtype: Dtype = 'F32'): { base: string; ft: string } {
  const base: TestTensor[] = [];
  const ft: TestTensor[] = [];
  for (const [t, shape] of Object.entries(SHAPES)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const w = randomF32(n, n + t.length, 0.05);
    base.push({ name: t, shape, data: w });
    let f = w;
    if (t.includes('q_proj')) f = changed(w, 96, 64, 31, 4, 1e-4);
    if (t.includes('v_proj')) f = changed(w, 32, 64, 41, 12, 1e-3);
    if (t.includes('down_proj')) f = changed(w, 64, 80, 51, 6, 1e-5);
    if (t.includes('layernorm') || t.includes('embed')) f = Float32Array.from(w, (x, i) => x + (i % 3 === 0 ? 1e-3 : 0));
    ft.push({ name: t, shape, data: f, dtype: ftDtype });
  }
  return {
    base: writeModel(path.join(root, `${name}-base`), { model_type: 'llama', _name_or_path: 'test/llama' }, base),
    ft: writeModel(path.join(root, `${name}-ft`), { model_type: 'llama' }, ft),
  };
}

function extract(pair: { base: string; ft: string }, args: string[], name: string): { out: string; report: ExtractLoraJson } {
  const out = path.join(root, name);
  const json = path.join(root, `${name}.json`);
  const r = runCli(['extract-lora', '--base', pair.base, '--finetuned', pair.ft, '--out', out, '--json', json, ...args]);
  assert.equal(r.status, 0, r.stderr);
  return { out, report: JSON.parse(fs.readFileSync(json, 'utf8')) as ExtractLoraJson };
}

/** numpy: per changed 2-D tensor the optimum rank-k error of τ (k from the report), and the norms of the changed others. */
const REFERENCE = `
b = load_model(BASE); f = load_model(FT)
res = {'opt': {}, 'norms': {}, 'e': {}}
for name, w in b.items():
    tau = (f[name].astype(np.float32) - w.astype(np.float32)).astype(np.float64)
    if not np.any(tau): continue
    if tau.ndim == 2 and 'embed' not in name:
        s = svals(tau)
        m = name[:-len('.weight')]
        k = KS.get(m, 1)
        res['opt'][m] = float(np.sqrt(np.sum(s[k:]**2) / np.sum(s**2)))
        res['e'][m] = int(np.argmax(np.cumsum(s**2) / np.sum(s**2) >= ENERGY) + 1)
    else:
        res['norms'][name] = float(np.linalg.norm(tau))
emit(res)`;

function reference(python: string, pair: { base: string; ft: string }, ks: Record<string, number>, energy = 0.9): { opt: Record<string, number>; norms: Record<string, number>; e: Record<string, number> } {
  return runNumpy(python, `BASE = ${JSON.stringify(pair.base)}; FT = ${JSON.stringify(pair.ft)}; KS = ${JSON.stringify(ks)}; ENERGY = ${energy}\n${REFERENCE}`);
}

test('extract-lora --rank: within 1e-3 of the exact optimum (numpy/LAPACK), norms and embeddings listed, and our merge gives W + B′A′', (t) => {
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  const pair = llamaPair('llama');
  const { out, report } = extract(pair, ['--rank', '4'], 'llama-r4');
  const ref = reference(py.python, pair, Object.fromEntries(report.modules.map((m) => [m.name, m.rank])));
  assert.deepEqual(report.modules.map((m) => m.name).sort(), Object.keys(ref.opt).sort());
  assert.equal(report.unchanged, 1);
  for (const m of report.modules) {
    assert.equal(m.rank, 4);
    assert.ok(m.relError >= ref.opt[m.name] - 1e-9, `${m.name} beats the optimum?`);
    assert.ok(m.relError - ref.opt[m.name] < 1e-3, `${m.name}: ${m.relError} vs optimum ${ref.opt[m.name]}`);
    assert.ok(Math.abs(m.energyKept - (1 - m.relError ** 2)) < 1e-5);
    assert.equal(m.roundingNoise, null);
  }
  assert.deepEqual(report.notCaptured.map((x) => x.name).sort(), Object.keys(ref.norms).sort());
  for (const x of report.notCaptured) assert.ok(Math.abs(x.l2Norm - ref.norms[x.name]) < 1e-9 * ref.norms[x.name]);
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
  assert.deepEqual([cfg.r, cfg.lora_alpha, cfg.base_model_name_or_path, cfg.fan_in_fan_out], [4, 4, 'test/llama', false]);
  assert.deepEqual([...cfg.target_modules].sort(), Object.keys(ref.opt).sort());
  const merged = path.join(root, 'llama-merged');
  const r = runCli(['merge', '--base', pair.base, '--adapter', out, '--out', merged, '--dtype', 'fp32']);
  assert.equal(r.status, 0, r.stderr);
  // The merge's residual against the finetuned model is the relError the report gave.
  const residual = runNumpy<Record<string, number>>(
    py.python,
    `b = load_model(${JSON.stringify(pair.base)}); f = load_model(${JSON.stringify(pair.ft)}); g = load_model(${JSON.stringify(merged)})
out = {}
for name in ${JSON.stringify(report.modules.map((m) => m.name + '.weight'))}:
    tau = f[name].astype(np.float64) - b[name]
    out[name[:-len('.weight')]] = float(np.linalg.norm(f[name].astype(np.float64) - g[name]) / np.linalg.norm(tau))
emit(out)`,
  );
  for (const m of report.modules) assert.ok(Math.abs(residual[m.name] - m.relError) < 1e-5, `${m.name}: merged residual ${residual[m.name]} vs ${m.relError}`);
});

test('extract-lora --energy: per-module ranks as numpy picks them, written through rank_pattern', (t) => {
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  const pair = llamaPair('energy');
  const { out, report } = extract(pair, ['--energy', '0.9'], 'llama-e90');
  const ref = reference(py.python, pair, {}, 0.9);
  for (const m of report.modules) {
    assert.equal(m.rank, ref.e[m.name], m.name);
    assert.ok(m.energyKept >= 0.9 - 1e-9);
  }
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
  for (const m of report.modules) assert.equal(m.rank === cfg.r ? undefined : cfg.rank_pattern[m.name], m.rank === cfg.r ? undefined : m.rank);
});

test('extract-lora of a GPT-2 Conv1D model: fan_in_fan_out, and the adapter merges back onto the [in, out] weights', (t) => {
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  const shapes: Record<string, number[]> = { 'h.0.attn.c_attn.weight': [48, 144], 'h.0.attn.c_proj.weight': [48, 48], 'h.0.ln_1.weight': [48] };
  const base: TestTensor[] = [];
  const ft: TestTensor[] = [];
  for (const [name, shape] of Object.entries(shapes)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const w = randomF32(n, n, 0.05);
    base.push({ name, shape, data: w });
    ft.push({ name, shape, data: shape.length === 2 ? changed(w, shape[0], shape[1], n, 3, 1e-5) : w });
  }
  const pair = { base: writeModel(path.join(root, 'gpt2-base'), { model_type: 'gpt2' }, base), ft: writeModel(path.join(root, 'gpt2-ft'), { model_type: 'gpt2' }, ft) };
  const { out, report } = extract(pair, ['--rank', '3'], 'gpt2-r3');
  assert.ok(report.modules.every((m) => m.transposed));
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.fan_in_fan_out, true);
  const attn = runNumpy<number[]>(py.python, `a = load_st(${JSON.stringify(path.join(out, 'adapter_model.safetensors'))}); emit(list(a['base_model.model.h.0.attn.c_attn.lora_B.weight'].shape))`);
  assert.deepEqual(attn, [144, 3]);
  const merged = path.join(root, 'gpt2-merged');
  const r = runCli(['merge', '--base', pair.base, '--adapter', out, '--out', merged, '--dtype', 'fp32']);
  assert.equal(r.status, 0, r.stderr);
  const ref = reference(py.python, pair, { 'h.0.attn.c_attn': 3, 'h.0.attn.c_proj': 3 });
  const residual = runNumpy<Record<string, number>>(
    py.python,
    `b = load_model(${JSON.stringify(pair.base)}); f = load_model(${JSON.stringify(pair.ft)}); g = load_model(${JSON.stringify(merged)})
emit({n[:-len('.weight')]: float(np.linalg.norm(f[n].astype(np.float64) - g[n]) / np.linalg.norm(f[n].astype(np.float64) - b[n])) for n in ['h.0.attn.c_attn.weight', 'h.0.attn.c_proj.weight']})`,
  );
  for (const m of report.modules) {
    assert.ok(Math.abs(residual[m.name] - m.relError) < 1e-5, m.name);
    assert.ok(m.relError - ref.opt[m.name] < 1e-3, m.name);
  }
});

test('extract-lora of a bf16 finetuned model (fp32 base) reports the rounding noise in each module, close to the rounding actually done', (t) => {
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  const pair = llamaPair('bf16', 'BF16');
  const { report } = extract(pair, ['--rank', '4'], 'bf16-r4');
  // The exact rounding energy: the fp32 finetuned weights (the F32 twin of this pair) against their bf16 storage.
  const f32 = llamaPair('bf16-f32');
  const actual = runNumpy<Record<string, number>>(
    py.python,
    `a = load_model(${JSON.stringify(f32.ft)}); h = load_model(${JSON.stringify(pair.ft)})
emit({n[:-len('.weight')]: float(np.sum((h[n].astype(np.float64) - a[n].astype(np.float64))**2)) for n in a if n.endswith('proj.weight')})`,
  );
  for (const m of report.modules) {
    const noise = m.roundingNoise!;
    assert.ok(noise, m.name);
    const ratio = noise.energy / actual[m.name];
    assert.ok(ratio > 0.8 && ratio < 1.25, `${m.name}: estimated ${noise.energy} vs actual ${actual[m.name]}`);
    if (m.name.endsWith('k_proj')) {
      // Unchanged by the finetune: its task vector is the bf16 rounding alone, and the report says so.
      assert.ok(noise.fraction > 0.8, JSON.stringify(noise));
      assert.equal(noise.signalRank, 0);
    } else {
      assert.ok(noise.fraction > 0 && noise.fraction < 0.01, `${m.name}: ${JSON.stringify(noise)}`);
      assert.ok(noise.signalRank >= 1 && noise.signalRank <= 12, `${m.name}: ${JSON.stringify(noise)}`);
    }
  }
});

test('extract-lora: bad input exits 2 with one line and writes nothing', () => {
  const pair = llamaPair('bad');
  const out = path.join(root, 'bad-out');
  // v_proj is [32, 64] (k_proj too, but it did not change).
  assertOneLineError(runCli(['extract-lora', '--base', pair.base, '--finetuned', pair.ft, '--out', out, '--rank', '40']), 'v_proj', '--rank 40');
  assertOneLineError(runCli(['extract-lora', '--base', pair.base, '--finetuned', pair.ft, '--out', out, '--energy', '2']), '--energy');
  assertOneLineError(runCli(['extract-lora', '--base', pair.base, '--finetuned', pair.base, '--out', out, '--rank', '2']), pair.base, 'nothing');
  const other = writeModel(path.join(root, 'other-shape'), { model_type: 'llama' }, [{ name: 'model.layers.0.self_attn.q_proj.weight', shape: [96, 65] }]);
  assertOneLineError(runCli(['extract-lora', '--base', pair.base, '--finetuned', other, '--out', out, '--rank', '2']), other, 'q_proj', 'different shapes');
  const adapter = writeAdapter(path.join(root, 'adapter'), peftConfig(), loraPair('model.layers.0.self_attn.q_proj', 2, 64, 96));
  assertOneLineError(runCli(['extract-lora', '--base', adapter, '--finetuned', pair.ft, '--out', out, '--rank', '2']), adapter, 'adapter');
  assert.equal(fs.existsSync(out), false);
});

test('extract-lora: a weight changed only past its first block gets zeros there, not an earlier weight\'s task vector', () => {
  // 1100 x 1000 = 1.1 M elements: two blocks of the stream. The first weight changes everywhere; the
  // second (same shape, its task vector placed where the first one's was) only in its last rows.
  const [rows, cols] = [1100, 1000];
  const n = rows * cols;
  const names = ['model.layers.0.mlp.gate_proj.weight', 'model.layers.0.mlp.up_proj.weight'];
  const base = names.map((name, i) => ({ name, shape: [rows, cols], data: randomF32(n, 7 + i, 0.05) }));
  const ft = base.map((t, i) => {
    const u = randomF32(rows, 11 + i, 1);
    const v = randomF32(cols, 13 + i, 1);
    const f = Float32Array.from(t.data);
    for (let r = i === 0 ? 0 : rows - 10; r < rows; r++) for (let c = 0; c < cols; c++) f[r * cols + c] += u[r] * v[c];
    return { ...t, data: f };
  });
  const pair = {
    base: writeModel(path.join(root, 'blocks-base'), { model_type: 'llama' }, base),
    ft: writeModel(path.join(root, 'blocks-ft'), { model_type: 'llama' }, ft),
  };
  const { report } = extract(pair, ['--rank', '1'], 'blocks-r1');
  assert.equal(report.modules.length, 2);
  // Each task vector is rank 1 (up to fp32 rounding of W + uvᵀ, its own u and v): a rank-1 factor holds it whole.
  for (const m of report.modules) assert.ok(m.relError < 1e-6, `${m.name}: relError ${m.relError}`);
});
