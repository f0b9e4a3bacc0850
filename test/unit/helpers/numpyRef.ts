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

def tucker_rows(t, b):
    """C[i, c*K + k] = sum_j t[i, j, k] b[j, c], rounded to fp32 as the engine's factor forms round it."""
    r1, r2 = t.shape[:2]
    b2 = b.reshape(r2, -1).astype(np.float64)
    c = np.einsum('ijk,jc->ick', t.reshape(r1, r2, -1).astype(np.float64), b2)
    return c.reshape(r1, -1).astype(np.float32).astype(np.float64)

def lycoris_deltas(path, only=None):
    """module -> (float64 delta [out, in*kh*kw]) of a kohya / LyCORIS / diffusers file, by the formats' own formulas
    (kohya and LyCORIS: alpha / r with r the rows of lora_down / hada_w1_b / lokr_w1_b else lokr_w2_b, no alpha
    meaning scale 1; (IA)3 left out: it scales the base)."""
    st = load_st(path)
    groups = {}
    for k, v in st.items():
        m = re.match(r'^(.+?)\.(?:lora\.(down|up)\.weight|lora_linear_layer\.(down|up)\.weight|lora_(A|B)\.weight)$', k)
        if m and not k.startswith('lora_'):
            role = m.group(2) or m.group(3) or ('down' if m.group(4) == 'A' else 'up')
            groups.setdefault(m.group(1), {})['lora_' + role + '.weight'] = v
            continue
        if k.endswith('.alpha'):
            groups.setdefault(k[:-len('.alpha')], {})['alpha'] = v
            continue
        mod, role = k.split('.', 1)
        groups.setdefault(mod, {})[role] = v
    f = lambda x: x.astype(np.float64)
    flat = lambda x: f(x).reshape(x.shape[0], -1)
    out = {}
    for mod, g in groups.items():
        if only is not None and mod not in only:
            continue
        alpha = float(g['alpha']) if 'alpha' in g else None
        scale = lambda r: 1.0 if not alpha else alpha / r
        if 'lora_down.weight' in g:
            down, up = g['lora_down.weight'], g['lora_up.weight']
            r = down.shape[0]
            a = tucker_rows(g['lora_mid.weight'], down) if 'lora_mid.weight' in g else flat(down)
            d = scale(r) * (flat(up) @ a)
        elif 'hada_w1_a' in g:
            r = g['hada_w1_b'].shape[0]
            def prod(n):
                wa, wb = g['hada_w%d_a' % n], g['hada_w%d_b' % n]
                if 'hada_t%d' % n in g:
                    return f(wa).T @ tucker_rows(g['hada_t%d' % n], wb)
                return f(wa) @ flat(wb)
            d = scale(r) * prod(1) * prod(2)
        elif any(k.startswith('lokr_') for k in g):
            def w(n):
                if 'lokr_w%d' % n in g:
                    return flat(g['lokr_w%d' % n])
                a, b = g['lokr_w%d_a' % n], g['lokr_w%d_b' % n]
                if n == 2 and 'lokr_t2' in g:
                    return f(a).T @ tucker_rows(g['lokr_t2'], b)
                return f(a) @ flat(b)
            r = g['lokr_w1_b'].shape[0] if 'lokr_w1_b' in g else g['lokr_w2_b'].shape[0] if 'lokr_w2_b' in g else None
            d = (1.0 if r is None else scale(r)) * np.kron(w(1), w(2))
        elif 'diff' in g:
            d = flat(g['diff'])
        else:
            continue
        out[mod] = d
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
  // One BLAS thread: on a loaded machine a multithreaded LAPACK spins and runs ~10x slower.
  const env = { ...process.env, OPENBLAS_NUM_THREADS: '1', OMP_NUM_THREADS: '1', MKL_NUM_THREADS: '1' };
  const r = spawnSync(python, ['-c', NUMPY_PREAMBLE + '\n' + script], { input: input === undefined ? '' : JSON.stringify(input), encoding: 'utf8', maxBuffer: 1 << 28, env });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as T;
}
