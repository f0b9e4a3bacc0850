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

interface SpectrumJson {
  modules: { name: string; rank: number; singularValues: number[]; energyRank99: number; frobeniusNorm: number }[];
}

function spectrumOf(adapter: string): SpectrumJson {
  const json = path.join(root, `spectrum-${path.basename(adapter)}.json`);
  const r = runCli(['spectrum', '--adapter', adapter, '--json', json]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(fs.readFileSync(json, 'utf8')) as SpectrumJson;
}

/** rank_pattern / alpha_pattern, an embedding, a rank above a narrow output, and an rsLoRA twin. */
function mixedAdapter(dir: string, rslora: boolean): string {
  return writeAdapter(dir, peftConfig({ r: 6, lora_alpha: 12, use_rslora: rslora, rank_pattern: { v_proj: 3 }, alpha_pattern: { 'layers.0.self_attn.v_proj': 5 }, target_modules: ['q_proj', 'v_proj', 'k_proj', 'embed_tokens'] }), [
    ...loraPair('model.layers.0.self_attn.q_proj', 6, 24, 16, 3),
    ...loraPair('model.layers.0.self_attn.v_proj', 3, 24, 8, 5),
    // k_proj: 4 output rows, rank 6: at most 4 singular values.
    ...loraPair('model.layers.0.self_attn.k_proj', 6, 24, 4, 9),
    { name: `${P}model.embed_tokens.lora_embedding_A`, shape: [6, 30], data: 11 },
    { name: `${P}model.embed_tokens.lora_embedding_B`, shape: [24, 6], data: 12 },
  ]);
}

test('spectrum equals numpy/LAPACK on the expanded deltas to 1e-9 (patterns, rsLoRA, embedding, narrow module)', (t) => {
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  for (const rslora of [false, true]) {
    const dir = mixedAdapter(path.join(root, `mixed-${rslora}`), rslora);
    const ours = spectrumOf(dir);
    const ref: Record<string, { s: number[]; e99: number }> = runNumpy(
      py.python,
      `d = peft_deltas(${JSON.stringify(dir)})
out = {}
for m, (delta, r) in d.items():
    s = svals(delta)[:min(r, *delta.shape)]
    c = np.cumsum(s**2) / np.sum(s**2)
    out[m] = {'s': s.tolist(), 'e99': int(np.argmax(c >= 0.99) + 1)}
emit(out)`,
    );
    assert.deepEqual(ours.modules.map((m) => m.name).sort(), Object.keys(ref).sort());
    for (const m of ours.modules) {
      const s = ref[m.name].s;
      assert.equal(m.singularValues.length, s.length, m.name);
      for (let i = 0; i < s.length; i++) assert.ok(Math.abs(m.singularValues[i] - s[i]) <= 1e-9 * s[0], `${m.name} σ${i}: ${m.singularValues[i]} vs ${s[i]}`);
      assert.equal(m.energyRank99, ref[m.name].e99, m.name);
    }
    assert.equal(ours.modules.find((m) => m.name.endsWith('k_proj'))!.singularValues.length, 4);
  }
});

test('spectrum of a real GPT-2 Conv1D adapter (fan_in_fan_out) equals numpy to 1e-9', (t) => {
  const py = findPython(['numpy']);
  if (!py.python) return t.skip(py.skip);
  const dir = path.join(FIXTURES, 'real-adapters/gpt2-seqcls-cattn-r8');
  const ours = spectrumOf(dir);
  // numpy's own QR of each factor and SVD of the core (the 2304 × 768 expansions would be slow to test).
  const ref = runNumpy<Record<string, number[]>>(
    py.python,
    `st = load_st(${JSON.stringify(path.join(dir, 'adapter_model.safetensors'))})
out = {}
for k, a in st.items():
    if '.lora_A.' not in k: continue
    b = st[k.replace('lora_A', 'lora_B')].astype(np.float64)
    qb, rb = np.linalg.qr(b); qa, ra = np.linalg.qr(a.astype(np.float64).T)
    out[k[len('base_model.model.'):-len('.lora_A.weight')]] = svals(1.0 * rb @ ra.T).tolist()
emit(out)`,
  );
  assert.equal(ours.modules.length, 12);
  for (const m of ours.modules) {
    const s = ref[m.name];
    for (let i = 0; i < s.length; i++) assert.ok(Math.abs(m.singularValues[i] - s[i]) <= 1e-9 * s[0], `${m.name} σ${i}`);
  }
});

test('spectrum: bad input exits 2 with one line', () => {
  const model = writeModel(path.join(root, 'model'), { model_type: 'llama' }, [{ name: 'model.layers.0.self_attn.q_proj.weight', shape: [4, 4] }]);
  assertOneLineError(runCli(['spectrum', '--adapter', model]), model);
  const empty = writeAdapter(path.join(root, 'no-factors'), peftConfig({ modules_to_save: ['score'] }), [{ name: `${P}score.weight`, shape: [2, 4] }]);
  assertOneLineError(runCli(['spectrum', '--adapter', empty]), 'adapter_model.safetensors', 'adapts nothing');
  assertOneLineError(runCli(['spectrum']), '--adapter');
});
