/**
 * An independent numpy reference for the low-rank commands: a reader of safetensors files and PEFT
 * adapter folders written from the formats' specifications (not from the engine's code), the deltas
 * expanded in float64, and LAPACK's SVD. `runNumpy` runs a script after this preamble and parses the
 * JSON it prints.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

export const NUMPY_PREAMBLE = String.raw`
import json, math, os, re, struct, sys
import numpy as np
null, true, false = None, True, False  # JSON literals pasted into scripts

def load_st(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == '__metadata__':
            continue
        a, b = t['data_offsets']
        raw = data[a:b]
        if t['dtype'] == 'F32':
            v = np.frombuffer(raw, dtype='<f4')
        elif t['dtype'] == 'F16':
            v = np.frombuffer(raw, dtype='<f2').astype(np.float32)
        elif t['dtype'] == 'BF16':
            v = (np.frombuffer(raw, dtype='<u2').astype(np.uint32) << 16).view(np.float32)
        elif t['dtype'] == 'F64':
            v = np.frombuffer(raw, dtype='<f8')
        else:
            raise ValueError(t['dtype'])
        out[name] = v.reshape(t['shape'])
    return out

def load_model(d):
    idx = os.path.join(d, 'model.safetensors.index.json')
    if os.path.exists(idx):
        out = {}
        for f in sorted(set(json.load(open(idx))['weight_map'].values())):
            out.update(load_st(os.path.join(d, f)))
        return out
    return load_st(os.path.join(d, 'model.safetensors'))

def pattern(patterns, module, default):
    if module in patterns:
        return patterns[module]
    for key, value in patterns.items():
        if re.match(r'(.*\.)?(' + key + r')$', module):
            return value
    return default

def peft_deltas(d):
    """module -> (float64 delta oriented as B @ A, factor rank), by PEFT's scaling rules."""
    cfg = json.load(open(os.path.join(d, 'adapter_config.json')))
    st = load_st(os.path.join(d, 'adapter_model.safetensors'))
    out = {}
    for name, a in st.items():
        m = re.match(r'^base_model\.model\.(.*)\.(lora_A|lora_embedding_A)(\.weight)?$', name)
        if not m:
            continue
        module = m.group(1)
        b = st[name.replace('lora_A', 'lora_B').replace('lora_embedding_A', 'lora_embedding_B')]
        r = pattern(cfg.get('rank_pattern') or {}, module, cfg['r'])
        alpha = pattern(cfg.get('alpha_pattern') or {}, module, cfg['lora_alpha'])
        s = alpha / math.sqrt(r) if cfg.get('use_rslora') else alpha / r
        out[module] = (s * (b.astype(np.float64) @ a.astype(np.float64)), a.shape[0])
    return out

def svals(m):
    return np.linalg.svd(m, compute_uv=False)

def best(m, k):
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    return (u[:, :k] * s[:k]) @ vt[:k]

def emit(x):
    print(json.dumps(x))
`;

export function runNumpy<T>(python: string, script: string, input?: unknown): T {
  const r = spawnSync(python, ['-c', NUMPY_PREAMBLE + '\n' + script], { input: input === undefined ? '' : JSON.stringify(input), encoding: 'utf8', maxBuffer: 1 << 28 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as T;
}
