"""The numpy reference of the mask bench: the same work as `lora-lens mask` done plainly (float64 BLAS
expansion s * B @ A rounded to fp32, max over adapters of |delta|, top k per module by argpartition).
Usage: mask_numpy.py BASE_DIR BUDGET MASK_DIR ADAPTER_DIR...; prints its wall and CPU time (all threads) and how many selected
elements differ from LoRA Lens's mask (MASK_DIR/mask.safetensors)."""
import json
import os
import struct
import sys
import time

import numpy as np


def tensors(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode='r')
    dtypes = {'F32': np.float32, 'BOOL': np.bool_, 'BF16': np.uint16}
    out = {}
    for name, t in header.items():
        if name == '__metadata__':
            continue
        b, e = t['data_offsets']
        out[name] = (t, lambda b=b, e=e, t=t: data[8 + n + b:8 + n + e].view(dtypes[t['dtype']]).reshape(t['shape']))
    return out


def main():
    base, budget, mask_dir, adapters = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    t0 = time.perf_counter()
    c0 = time.process_time()
    modules = sorted(tensors(os.path.join(base, 'model.safetensors')))
    k = budget // len(modules)
    loaded = []
    for a in adapters:
        cfg = json.load(open(os.path.join(a, 'adapter_config.json')))
        loaded.append((cfg['lora_alpha'] / cfg['r'], tensors(os.path.join(a, 'adapter_model.safetensors'))))
    selections = {}
    for name in modules:
        prefix = 'base_model.model.' + name[:-len('.weight')]
        acc = None
        for scale, ts in loaded:
            A = ts[prefix + '.lora_A.weight'][1]().astype(np.float64)
            B = ts[prefix + '.lora_B.weight'][1]().astype(np.float64)
            d = np.abs(((B @ A) * scale).astype(np.float32))
            acc = d if acc is None else np.maximum(acc, d, out=acc)
        flat = acc.ravel()
        selections[name] = np.sort(np.argpartition(flat, flat.size - k)[flat.size - k:])
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    ours = tensors(os.path.join(mask_dir, 'mask.safetensors'))
    differ = sum(np.setxor1d(np.flatnonzero(ours[name][1]().ravel()), sel).size for name, sel in selections.items())
    print(json.dumps({'seconds': seconds, 'cpuSeconds': cpu, 'differingSelections': int(differ), 'modules': len(modules), 'k': k}))


main()
